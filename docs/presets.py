"""Writes docs/presets.md: every preset of configs/papers, each setting in which it differs from atlens's defaults
(a component's options: from that component's own defaults) and the source of that setting. Run from the repository
root: ``python docs/presets.py`` (``--check``: exit 1 when the page is not what the presets give; the tests run it).

A setting without a source stops the script: every value a preset sets must be traced here."""

from __future__ import annotations

import fnmatch
import sys
from pathlib import Path
from typing import Any

from atlens.config import COMPONENT_SECTIONS, RunConfig, config_from_dict, config_to_dict, load_config
from atlens.plots.figure import format_epsilon
from atlens.training.build import check

ROOT = Path(__file__).resolve().parent.parent
PRESETS = ROOT / "configs" / "papers"
PAGE = ROOT / "docs" / "presets.md"

RICE = "Rice et al.'s protocol as the RWP paper states it (§5.1)"
RWP_AT = "RWP repository, AT_AWP_RWP/train_cifar10.py (argument defaults)"
RWP_TRADES = "RWP repository, trades_AWP_RWP/train_trades_cifar.py (argument defaults)"
RWP_RST = "RWP repository, RST_AWP_RWP/robust_self_training.py (argument defaults)"
CHEN = "Chen et al. §4 (training and evaluation details)"
WEI = "CAS paper, Appendix Table 2"
WANG = "Wang et al.'s train-wa.py with their public command"
ATLENS_CHECKPOINTS = "atlens: epoch-N checkpoints kept for the analyses over training (no effect on training)"

FAMILIES = {
    "chen2021": ("Chen et al., *Robust Overfitting may be Mitigated by Properly Learned Smoothening*, ICLR 2021",
                 "The paper (§3 eq. 1, §4, Appendix A2) and its public code "
                 "(VITA-Group/Alleviate-Robust-Overfitting). Where they disagree the presets follow the paper — the KD "
                 "weights λ1 = 0.5, λ2 = 0.25 (the code's 0.6/0.1 is `weights: reference`) — except for the network: "
                 "the paper writes ResNet-18, the code trains a pre-activation ResNet-18, which the presets use."),
    "wei2025": ("Wei, Guo, Wang, *Identifying and Understanding Cross-Class Features in Adversarial Training*, "
                "ICML 2025",
                "The CAS paper's Appendix Table 2 (PreActResNet-18, 200 epochs, SGD 0.9, batch 128, weight decay 5e-4, "
                "lr 0.1 decayed at epochs 100 and 150, PGD-10 training, PGD-20 evaluation: atlens's defaults) and the "
                "settings its §5 names for each study; there is no public code."),
    "yu2022": ("Yu et al., *Robust Weight Perturbation for Adversarial Training*, IJCAI 2022",
               "The paper (§5.1, Tables 1–2) and the RWP repository's three scripts (AT_AWP_RWP, trades_AWP_RWP, "
               "RST_AWP_RWP). The scripts count epochs from 1 (`epoch >= awp_warmup`, `epoch >= 100`), so their "
               "boundaries are written here in atlens's 0-based epochs; the paper states no warm-up for the RST rows, "
               "the RST script warms up 10 epochs, which the RST presets follow (the code ran the numbers)."),
    "wang2023": ("Wang et al., *Better Diffusion Models Further Improve Adversarial Training*, ICML 2023",
                 "Their public training command and the defaults of train-wa.py, core/utils/parser.py and "
                 "gowal21uncovering/utils (watrain.py, trades.py); the paper's numbers are of a 20M-image run, "
                 "the preset trains on the released 1M. Where atlens differs: the 1,024 held-out images are a "
                 "seeded draw (the code holds out images 0–1023) and the test split is evaluated with PGD-20 every "
                 "epoch (the code: CW-40 every 25 epochs)."),
}

# (preset pattern, setting, source): the first match names a setting's source
SOURCES: list[tuple[str, str, str]] = [
    ("*", "checkpoint.every", ATLENS_CHECKPOINTS),
    ("*", "analysis.cas_every", "atlens: CAS tracked every 10 epochs (the CAS paper's curves over training)"),
    ("*", "data.name", "the paper's dataset for this row"),
    # Chen et al.
    ("chen2021_*", "data.val_split", f"{CHEN}: the training set split 9:1 into training and validation, the best "
                                     "checkpoint by validation robust accuracy"),
    ("chen2021_*", "attack.step_size", "Chen et al. A2.2: α = 2/255 for PGD and TRADES"),
    ("chen2021_tinyimagenet_*", "optim.epochs", f"{CHEN}: Tiny-ImageNet trains 100 epochs"),
    ("chen2021_tinyimagenet_*", "optim.milestones", f"{CHEN}: decays at epochs 50 and 80"),
    ("chen2021_tinyimagenet_*", "averaging.start", "Chen et al. §4: SWA after the first decay; epoch 55, as many "
                                                   "epochs after it as the code's swa_start 55 on CIFAR"),
    ("chen2021_*", "optim.milestones", f"{CHEN}: decays at epochs 50 and 150"),
    ("chen2021_stl10_*", "data.image_size", "STL-10's 96×96 images, kept at their size"),
    ("chen2021_*", "objective.name", "the standard teacher: clean training (Chen et al. §3)"),
    ("chen2021_*", "criterion.name", "the row's method (Chen et al. Tables 1, 5, 6)"),
    ("chen2021_*", "criterion.adv_teacher", "Chen et al. §3: the robust self-teacher, PGD-AT on the same data"),
    ("chen2021_*", "criterion.std_teacher", "Chen et al. §3: the standard self-teacher, clean training on the same "
                                            "data"),
    ("chen2021_*", "criterion.beta", "label smoothing 0.1 (the baseline's usual setting; Chen et al. do not state "
                                     "theirs)"),
    ("chen2021_*", "criterion.temperature", "Yuan et al.'s CIFAR setting, T = 20 (Chen et al. do not state theirs)"),
    ("chen2021_*", "averaging.name", "the row's method: SWA (Chen et al. §3, eq. 2)"),
    ("chen2021_*", "averaging.start", "Chen et al.'s code: swa_start 55 of 200 epochs (after the first decay)"),
    # the CAS paper
    ("wei2025_*_eps12", "attack.epsilon", "CAS paper Table 1: AT with larger ε (12/255, 16/255)"),
    ("wei2025_*_eps16", "attack.epsilon", "CAS paper Table 1: AT with larger ε (12/255, 16/255)"),
    ("wei2025_*_l2", "attack.epsilon", "CAS paper Figure 6: ℓ2-norm AT, ε = 128/255"),
    ("wei2025_*", "attack.epsilon", "CAS paper Figure 4: ΔCAS for training ε 2/255 to 8/255"),
    ("wei2025_*", "attack.norm", "CAS paper Figure 6: ℓ2-norm AT, ε = 128/255"),
    ("wei2025_tinyimagenet_*", "optim.epochs", "Tiny-ImageNet: 100 epochs, as Chen et al.'s §4 train it (the CAS paper "
                                               "gives no Tiny-ImageNet schedule)"),
    ("wei2025_tinyimagenet_*", "optim.milestones", "decays at epochs 50 and 80, as Chen et al.'s §4"),
    ("wei2025_*", "model.name", "CAS paper §5: DeiT-Ti (Touvron et al.), through timm"),
    ("wei2025_*", "model.patch_size", "atlens: patch 4 for 32×32 images (the paper does not state it)"),
    ("wei2025_*", "optim.lr", "atlens: lr 0.01 — the paper gives no optimiser for DeiT and lr 0.1 diverges without "
                              "warm-up"),
    ("wei2025_*", "objective.name", "CAS paper §6: fast AT (FGSM-RS, Wong et al.) with the other settings of AT"),
    ("wei2025_*", "objective.step_multiplier", "Wong et al.: FGSM step 1.25·ε"),
    ("wei2025_*", "eval.fgsm", "atlens: test FGSM accuracy to detect catastrophic overfitting"),
    ("wei2025_*", "criterion.name", "CAS paper §3.3: AT with knowledge distillation (Chen et al.)"),
    ("wei2025_*", "criterion.adv_teacher", "the robust self-teacher: this paper's PGD-AT preset"),
    ("wei2025_*", "criterion.std_teacher", "the standard self-teacher: clean training with the paper's schedule"),
    # the RWP paper
    ("yu2022_*_wrn28_*", "data.batch_size", f"{RWP_RST}: --batch_size 256"),
    ("yu2022_*_wrn28_*", "data.epoch", f"{RWP_RST}: num_batches = ceil(50000 / batch_size) = 196 per epoch"),
    ("yu2022_*_wrn28_*", "model.name", "RWP paper Table 2: WRN-28-10 for RST"),
    ("yu2022_*_wrn28_*", "model.depth", "RWP paper Table 2: WRN-28-10 for RST"),
    ("yu2022_*_wrn28_*", "model.widen_factor", "RWP paper Table 2: WRN-28-10 for RST"),
    ("yu2022_*_wrn28_*", "attack.epsilon", f"{RWP_RST}: --epsilon 0.031"),
    ("yu2022_*_wrn28_*", "attack.step_size", f"{RWP_RST}: --pgd_step_size 0.007"),
    ("yu2022_*_wrn28_*", "objective.name", "RST is TRADES over the mixed batches (Carmon et al.; RWP paper §5.3)"),
    ("yu2022_*_wrn28_*", "objective.beta", f"{RWP_RST}: --beta 6.0"),
    ("yu2022_*_wrn28_*", "extra.source", "Carmon et al.'s 500K pseudo-labelled Tiny Images, converted to arrays"),
    ("yu2022_*_wrn28_*", "optim.nesterov", f"{RWP_RST}: --nesterov (default true)"),
    ("yu2022_*_wrn28_*", "optim.schedule", f"{RWP_RST}: lr_schedule cosine, lr·½(1 + cos((epoch − 1)/epochs·π)) set "
                                           "before each epoch"),
    ("yu2022_*_wrn28_*", "perturbation.name", "the row's method (RWP paper Table 2)"),
    ("yu2022_*_wrn28_*", "perturbation.gamma", "RWP paper §5.3: γ = 0.005 for RST-AWP and RST-RWP (--awp_gamma)"),
    ("yu2022_*_wrn28_*", "perturbation.warmup", f"{RWP_RST}: --awp_warmup 10 with 1-based epochs: 9 unperturbed "
                                                "epochs"),
    ("yu2022_*_wrn28_*", "perturbation.scope", "RWP paper Algorithm 1 / utils_rwp.py: one global rescaling"),
    ("yu2022_*_wrn34_*", "model.name", "RWP paper Table 2: WRN-34-10"),
    ("yu2022_*_wrn34_*", "model.depth", "RWP paper Table 2: WRN-34-10"),
    ("yu2022_*_wrn34_*", "model.widen_factor", "RWP paper Table 2: WRN-34-10"),
    ("yu2022_*_trades*", "objective.name", "the row's method: TRADES (RWP paper Table 2)"),
    ("yu2022_*_trades*", "objective.beta", f"{RWP_TRADES}: --beta 6.0"),
    ("yu2022_*_trades*", "optim.milestones", f"{RWP_TRADES}: `epoch >= 100`, `>= 150` with 1-based epochs — "
                                             "0-based boundaries 99 and 149"),
    ("yu2022_*_trades_*", "perturbation.gamma", "RWP paper §5.1: γ = 0.005 for TRADES (--awp-gamma)"),
    ("yu2022_*_trades_*", "perturbation.warmup", f"{RWP_TRADES}: --awp-warmup 10 with 1-based epochs: 9 unperturbed "
                                                 "epochs"),
    ("yu2022_svhn_*", "optim.lr", f"{RICE}: lr 0.01 on SVHN"),
    ("yu2022_svhn_linf_*", "attack.step_size", f"{RICE}: α = 1/255 on SVHN"),
    ("yu2022_svhn_*", "perturbation.warmup", "RWP paper §5.1: 5 warm-up epochs on SVHN"),
    ("yu2022_*_l2_*", "attack.norm", "RWP paper Table 1: L2 rows"),
    ("yu2022_*_l2_*", "attack.epsilon", "RWP paper §5.1 (Rice et al.'s setting): L2 ε = 128/255"),
    ("yu2022_*_l2_*", "attack.step_size", "RWP paper §5.1 (Rice et al.'s setting): L2 step 15/255"),
    ("yu2022_*", "attack.step_size", f"{RICE}: α = 2/255"),
    ("yu2022_*", "perturbation.name", "the row's method (RWP paper Tables 1–2)"),
    ("yu2022_*", "perturbation.gamma", "RWP paper §5.1: γ = 0.01 for AT"),
    ("yu2022_cifar100_*", "perturbation.c_min", "RWP paper §5.1: c_min 4.0 on CIFAR-100"),
    ("yu2022_svhn_*", "perturbation.c_min", "RWP paper §5.1: c_min 2.2 on SVHN (the code uses 1.7)"),
    ("yu2022_*", "perturbation.scope", "RWP paper Algorithm 1 / utils_rwp.py: one global rescaling"),
    # Wang et al.
    ("wang2023_*", "data.batch_size", f"{WANG}: --batch-size 512"),
    ("wang2023_*", "data.epoch", "core/data/semisup.py: num_batches = ceil(50000 / batch_size) = 98 per epoch"),
    ("wang2023_*", "data.val_split", "cifar10s.py: 1,024 training images held out for selection"),
    ("wang2023_*", "model.name", f"{WANG}: --model wrn-28-10-swish"),
    ("wang2023_*", "model.depth", f"{WANG}: --model wrn-28-10-swish"),
    ("wang2023_*", "model.widen_factor", f"{WANG}: --model wrn-28-10-swish"),
    ("wang2023_*", "model.activation", f"{WANG}: --model wrn-28-10-swish (Swish = SiLU)"),
    ("wang2023_*", "attack.step_size", "parser.py: --attack-step 2/255"),
    ("wang2023_*", "attack.bn_mode", "gowal21uncovering/utils/trades.py: model.train() with track_bn_stats(False) "
                                     "while crafting"),
    ("wang2023_*", "objective.name", f"{WANG}: --beta given, so TRADES"),
    ("wang2023_*", "objective.beta", f"{WANG}: --beta 5.0"),
    ("wang2023_*", "objective.start", "gowal21uncovering/utils/trades.py: x + U(−ε, ε), clamped to [0, 1]"),
    ("wang2023_*", "criterion.name", f"{WANG}: --ls 0.1 (SmoothCrossEntropyLoss on the clean term)"),
    ("wang2023_*", "criterion.beta", f"{WANG}: --ls 0.1"),
    ("wang2023_*", "averaging.name", "train-wa.py: WATrainer (--tau 0.995)"),
    ("wang2023_*", "averaging.decay", "train-wa.py: --tau 0.995"),
    ("wang2023_*", "averaging.warmup", "watrain.py: warmup_steps = 0.025 · epochs · update_steps"),
    ("wang2023_*", "averaging.ramp", "watrain.py: ema_update(..., dynamic_decay=True)"),
    ("wang2023_*", "averaging.copy_buffers", "watrain.py: ema_update averages parameters; update_bn copies the "
                                             "BatchNorm buffers after every epoch"),
    ("wang2023_*", "callbacks", "watrain.py: set_bn_momentum(1.0) at global step 0, 0.01 from step 1"),
    ("wang2023_*", "extra.source", f"{WANG}: 1M generated images (--aux-data-filename), converted to arrays"),
    ("wang2023_*", "extra.fraction", f"{WANG}: --unsup-fraction 0.7"),
    ("wang2023_*", "eval.val_attack", "watrain.py: eval_attack = PGD with CWLoss, 4 · attack_iter = 40 steps"),
    ("wang2023_*", "optim.epochs", f"{WANG}: --num-adv-epochs 400"),
    ("wang2023_*", "optim.lr", f"{WANG}: --lr 0.2"),
    ("wang2023_*", "optim.nesterov", "parser.py: --nesterov true"),
    ("wang2023_*", "optim.no_decay", "watrain.py: group_weight exempts the BatchNorm parameters"),
    ("wang2023_*", "optim.schedule", "parser.py: --scheduler cosinew = OneCycleLR(pct_start=0.025, "
                                     "total_steps=epochs), stepped per epoch"),
]


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = prefix + key
        if isinstance(value, dict) and value and not name.endswith("_teacher") and name != "optim.schedule":
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out


def _resolved(raw: dict[str, Any]) -> dict[str, Any]:
    return _flat(config_to_dict(check(config_from_dict(raw))))


def differences(path: Path) -> dict[str, Any]:
    """The settings of a preset that differ from atlens's defaults, a component's options from that component's."""
    raw = load_config(path)
    preset = _flat(config_to_dict(check(raw)))
    same_components: dict[str, Any] = {}
    for section in COMPONENT_SECTIONS:
        name = preset.get(f"{section}.name")
        if name is not None:
            same_components[section] = {"name": name}
            same_components[section].update({k[len(section) + 1:]: v for k, v in preset.items()
                                             if k.startswith(section + ".") and k.endswith("_teacher")})
    defaults = _resolved(same_components)
    plain = _flat(config_to_dict(RunConfig()))
    # the step size atlens takes when none is given: ε/4 (L∞), ε/8 (L2)
    implied_step = preset["attack.epsilon"] / (4 if preset["attack.norm"] == "linf" else 8)
    found = {}
    for key, value in preset.items():
        if key.startswith("reported") or key in ("data.root", "seed") or key.endswith("_teacher") and value is None:
            continue
        if key == "attack.step_size" and value is not None and abs(value - implied_step) < 1e-12:
            continue
        if key.endswith(".name") and value != plain.get(key):  # the component itself
            found[key] = value
        elif key.endswith("_teacher") or value != defaults.get(key, plain.get(key, object())):
            found[key] = value
    return found


def source(preset: str, key: str) -> str:
    for pattern, setting, text in SOURCES:
        if fnmatch.fnmatch(preset, pattern) and (key == setting or key.startswith(setting + ".")):
            return text
    raise SystemExit(f"{preset}: no source for {key}; add it to SOURCES in docs/presets.py")


def _value(value: Any, key: str = "") -> str:
    if key in ("attack.epsilon", "attack.step_size") and isinstance(value, float):
        return format_epsilon(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_value(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return str(value)


def render() -> str:
    lines = ["# Presets and where each setting comes from", "",
             "Every preset in `configs/papers/`, each setting in which it differs from atlens's defaults (a "
             "component's options: from that component's own defaults, so a preset that uses RWP lists `c_min` only "
             "where it is not 1.7), and the source of that setting: a paper section or table, or a reference script "
             "and its argument default. atlens's defaults are the CAS paper's protocol (PreActResNet-18 of width 64, "
             "200 epochs, SGD lr 0.1 with momentum 0.9 and weight decay 5e-4, decays ×0.1 at 50 % and 75 % of the "
             "run, batch 128, PGD-10 at L∞ 8/255 with step ε/4, PGD-20 evaluation). The page is written by "
             "`python docs/presets.py` from the preset files; a test fails when the two differ.", ""]
    presets = sorted(PRESETS.glob("*.yaml"))
    for family, (title, text) in FAMILIES.items():
        members = [p for p in presets if p.stem.startswith(family + "_")]
        lines += [f"## {title}", "", text, ""]
        for path in members:
            found = differences(path)
            lines += [f"### `{path.stem}`", ""]
            if not found:
                lines += ["atlens's defaults throughout.", ""]
                continue
            lines += ["| setting | value | source |", "|---|---|---|"]
            lines += [f"| `{key}` | {_value(value, key)} | {source(path.stem, key)} |" for key, value in found.items()]
            lines.append("")
    missing = [p.stem for p in presets if not any(p.stem.startswith(f + "_") for f in FAMILIES)]
    if missing:
        raise SystemExit(f"presets of no family: {', '.join(missing)}; add their source to FAMILIES")
    return "\n".join(lines)


if __name__ == "__main__":
    page = render()
    if "--check" in sys.argv:
        sys.exit(0 if PAGE.is_file() and PAGE.read_text() == page else 1)
    PAGE.write_text(page)
