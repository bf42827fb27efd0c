import pytest
import yaml

from atlens.config import apply_overrides, config_from_dict, config_to_dict, load_config
from atlens.errors import ConfigError
from atlens.training.build import check
from tests.conftest import synthetic_config


def validated(raw):
    """What --dry-run does: the schema, then every component built without data."""
    return check(config_from_dict(raw))


def test_defaults_follow_the_papers():
    cfg = config_from_dict({})
    assert cfg.attack.epsilon == pytest.approx(8 / 255)
    assert cfg.attack.steps == 10 and cfg.eval.steps == 20
    optim = check(cfg).optim
    assert (optim.name, optim.lr, optim.options["momentum"], optim.options["weight_decay"]) == ("sgd", 0.1, 0.9, 5e-4)
    assert cfg.optim.milestones == [0.5, 0.75] and cfg.data.batch_size == 128


def test_fractions_and_component_options_are_parsed():
    cfg = config_from_dict({"attack": {"epsilon": "8/255"}, "model": {"name": "wrn", "depth": 28}})
    assert cfg.attack.epsilon == pytest.approx(8 / 255)
    assert cfg.model.options == {"depth": 28}  # the schema knows no component: options are checked by check()
    assert check(cfg).model.options == {"depth": 28, "widen_factor": 10, "dropout": 0.0, "activation": "relu"}


def test_resolved_config_round_trips():
    cfg = config_from_dict(synthetic_config())
    assert config_from_dict(config_to_dict(cfg)) == cfg


@pytest.mark.parametrize("raw,message", [
    ({"optimizer": {}}, "unknown key(s) optimizer (did you mean optim?); allowed in the top level: analysis, "
                        "attack, averaging, callbacks, checkpoint, criterion, data"),
    ({"optim": {"learning_rate": 0.1}}, "optim: unknown option(s) learning_rate for optimizer 'sgd'; allowed: "
                                        "momentum, nesterov, no_decay, weight_decay"),
    ({"optim": {"epoch": 3}}, "optim: unknown option(s) epoch for optimizer 'sgd' (did you mean epochs?)"),
    ({"optim": {"name": "adam"}}, "unknown optimizer 'adam' (did you mean adamw?); available: adamw, sgd"),
    ({"optim": {"nesterov": True, "momentum": 0}}, "optim (optimizer 'sgd'): nesterov needs momentum > 0"),
    ({"optim": {"no_decay": ["bn"]}}, "optim (optimizer 'sgd'): no_decay: expected norm and/or bias, got bn"),
    ({"optim": {"name": "adamw", "momentum": 0.9}}, "unknown option(s) momentum for optimizer 'adamw'"),
    ({"optim": {"schedule": "cosin"}}, "unknown schedule 'cosin' (did you mean cosine?)"),
    ({"optim": {"schedule": {"name": "cosine", "floor": 0.1}}}, "optim.schedule: unknown option(s) floor for "
                                                                "schedule 'cosine'; allowed: per_epoch"),
    ({"early_stop": {"rule": "small_los"}}, "unknown early-stop rule 'small_los' (did you mean small_loss?)"),
    ({"callbacks": ["nothing"]}, "unknown callback 'nothing'; available: batchnorm_momentum (a callback of your own: "
                                "list the module that registers it under imports)"),
    ({"loggers": [{"name": "wandb", "mode": "sometimes"}]}, "loggers[0] (logger 'wandb'): mode must be online, "
                                                            "offline or disabled"),
    ({"loggers": [{"project": "x"}]}, "loggers[0]: expected a name or a mapping with a name and options"),
    ({"imports": ["no_such_module_here"]}, "imports: no module 'no_such_module_here' on Python's path"),
    ({"imports": ["not a module"]}, "imports: 'not a module' is not a module name"),
    ({"model": {"name": "preact_resnet18", "depth": 3}}, "unknown option(s) depth for model 'preact_resnet18'; "
                                                         "allowed: width"),
    ({"attack": {"epsilon": -0.1}}, "attack.epsilon must be a finite number > 0 (e.g. 8/255), got -0.1"),
    ({"attack": {"epsilon": float("inf")}}, "attack.epsilon must be a finite number > 0"),
    ({"attack": {"epsilon": 2}}, "attack.epsilon: an L∞ budget is at most 1 on images in [0, 1]"),
    ({"attack": {"steps": 0}}, "attack.steps must be >= 1"),
    ({"attack": {"steps": "ten"}}, "attack.steps: expected an integer, got 'ten'"),
    ({"attack": {"epsilon": "big"}}, "attack.epsilon: expected a number"),
    ({"attack": {"norm": "l1"}}, "attack.norm: expected linf or l2"),
    ({"data": {"name": "imagenet"}}, "unknown dataset 'imagenet' (did you mean tinyimagenet?); available: cifar10"),
    ({"model": {"name": "resnet50"}}, "unknown model 'resnet50' (did you mean resnet18?); available: cnn, deit_tiny"),
    ({"objective": {"name": "madry"}}, "unknown objective 'madry' (did you mean mart?); available: fast_at, mart"),
    # range errors of components, found before any data is read
    ({"perturbation": {"name": "awp", "gamma": -1}}, "perturbation (perturbation 'awp'): gamma must be >= 0, got -1"),
    ({"model": {"name": "wrn", "depth": 30}}, "model (model 'wrn'): "),
    ({"criterion": {"name": "label_smoothing", "beta": 1.5}}, "criterion.beta must be in [0, 1), got 1.5"),
    ({"averaging": {"name": "ema", "decay": 2}}, "averaging (averaging 'ema'): decay must be in (0, 1), got 2"),
    ({"objective": {"name": "trades"}, "attack": {"random_start": False}}, "TRADES needs attack.random_start"),
    ({"attack": {"bn_mode": "test"}}, "attack.bn_mode: expected train or eval or frozen, got 'test'"),
    ({"analysis": {"cas_attack": "fgsm"}}, "analysis.cas_attack: expected pgdN"),
    ({"optim": {"milestones": [100, 150]}}, "optim.milestones are fractions of the run"),
    ({"data": {"augment": "yes"}}, "data.augment: expected true or false"),
    ({"data": ["cifar10"]}, "data: expected a mapping"),
])
def test_invalid_configs_name_the_key_and_allowed_values(raw, message):
    with pytest.raises(ConfigError) as err:
        validated(raw)
    assert message in str(err.value)


def test_overrides_parse_yaml_values():
    raw = apply_overrides({}, ["optim.epochs=3", "attack.epsilon=8/255", "model.name=wrn", "data.per_class=10"])
    assert raw == {"optim": {"epochs": 3}, "attack": {"epsilon": "8/255"}, "model": {"name": "wrn"},
                   "data": {"per_class": 10}}
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["optim.epochs"])


def test_load_config_reports_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_every_shipped_preset_dry_runs_and_papers_carry_their_numbers(capsys, tmp_path):
    from pathlib import Path

    from atlens.cli.main import main
    from tests.conftest import tiny_imagefolder

    tree = tiny_imagefolder(tmp_path / "cifar10-png", 1, 1)
    configs = sorted((Path(__file__).resolve().parent.parent / "configs").rglob("*.yaml"))
    assert len(configs) >= 60
    for path in configs:
        local = "imagefolder" in path.read_text()  # reads a local tree: the dry run checks that it exists
        assert main(["train", str(path), "--dry-run", *(["--set", f"data.root={tree}"] if local else [])]) == 0, path
        resolved = yaml.safe_load(capsys.readouterr().out)
        if path.parent.name == "papers" and resolved["objective"]["name"] != "standard":
            reported = resolved["reported"]
            assert reported["source"] and reported["table"], path
            assert any(isinstance(v, (int, float)) for v in reported.values()), path


def test_mixed_precision_modes():
    import torch

    from atlens.precision import amp_dtype

    cuda = torch.device("cuda")
    for value, expected in ((False, None), (True, torch.bfloat16), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        cfg = config_from_dict({"runtime": {"amp": value}})
        assert amp_dtype(cfg.runtime.amp, cuda) == (expected, None)
    with pytest.raises(ConfigError, match="runtime.amp: expected false, true, bf16, fp16 or bf16-emulated"):
        config_from_dict({"runtime": {"amp": "fp8"}})
    with pytest.raises(ConfigError, match="eval.amp: expected false, true"):
        config_from_dict({"eval": {"amp": "fp16"}})


def test_presets_follow_the_reference_code():
    from pathlib import Path

    papers = Path(__file__).resolve().parent.parent / "configs" / "papers"
    for path in papers.glob("chen2021_*.yaml"):  # the KD+SWA reference trains a pre-activation ResNet-18
        assert load_config(path).model.name == "preact_resnet18", path
    # the TRADES-family references count epochs from 1 (`epoch >= 10`): warmup 9 in atlens's 0-based epochs
    warmups = {"yu2022_svhn_linf_rwp": 5, "yu2022_svhn_l2_rwp": 5, "yu2022_cifar10_wrn34_trades_rwp": 9,
               "yu2022_svhn_linf_awp": 5, "yu2022_cifar10_wrn34_trades_awp": 9}
    for name, warmup in warmups.items():
        assert load_config(papers / f"{name}.yaml").perturbation.options["warmup"] == warmup, name


@pytest.mark.parametrize("name", ["trades", "trades_awp", "trades_rwp"])
def test_the_rwp_papers_trades_presets_decay_and_perturb_at_their_references_epochs(name):
    """The TRADES-family references loop over epochs 1…200 with `epoch >= 100` / `>= 150` decays and a weight
    perturbation from `epoch >= 10`: atlens's 0-based epochs must give the same 1-based epochs."""
    from pathlib import Path

    from atlens.config import load_config
    from atlens.training.build import _schedule, build_methods

    papers = Path(__file__).resolve().parent.parent / "configs" / "papers"
    cfg = load_config(papers / f"yu2022_cifar10_wrn34_{name}.yaml")
    o = cfg.optim
    rates = [_schedule(cfg)(e) for e in range(o.epochs)]
    decays = [e + 1 for e in range(1, o.epochs) if rates[e] < rates[e - 1]]  # 1-based epochs that decay first
    assert decays == [100, 150]
    perturbation = build_methods(cfg).perturbation
    if name != "trades":
        first = next(e + 1 for e in range(o.epochs) if perturbation.active(e))
        assert first == 10


@pytest.mark.parametrize("name", ["rst", "rst_awp", "rst_rwp"])
def test_the_rst_presets_replay_the_rwp_repositorys_rst_loop_epoch_by_epoch(name):
    """RST_AWP_RWP/robust_self_training.py, replayed: for epoch in 1…200, lr = 0.1·½(1 + cos((epoch − 1)/200·π))
    for every one of its ⌈50,000 / 256⌉ = 196 batches, SGD with Nesterov, the weight perturbation where
    `epoch >= awp_warmup` (10)."""
    import math
    from pathlib import Path

    from atlens.training.build import _schedule, build_methods

    papers = Path(__file__).resolve().parent.parent / "configs" / "papers"
    cfg = load_config(papers / f"yu2022_cifar10_wrn28_{name}.yaml")
    batches = math.ceil(50000 / cfg.data.batch_size)
    assert cfg.data.epoch == 50000 and batches == 196 and cfg.optim.options["nesterov"] is True
    schedule, perturbation = _schedule(cfg), build_methods(cfg).perturbation
    for epoch in range(1, 201):  # the reference's counter
        reference = 0.1 * 0.5 * (1 + math.cos((epoch - 1) / 200 * math.pi))
        ours = [schedule(epoch - 1 + i / batches) for i in range(batches)]  # atlens's 0-based epoch and its steps
        assert max(abs(rate - reference) for rate in ours) < 1e-15, epoch
        assert perturbation.active(epoch - 1) == (name != "rst" and epoch >= 10), epoch


def test_the_generated_data_preset_replays_wang_et_als_train_wa_loop():
    """train-wa.py with its defaults, replayed: OneCycleLR(max_lr=0.2, pct_start=0.025, total_steps=400) stepped after
    each of epochs 1…400, every epoch ceil(50,000 / 512) = 98 batches; ema_update at global_step = (epoch − 1)·98 +
    update_iter with warmup_steps = 0.025·400·98 and decay min(0.995, (1 + δ)/(10 + δ)), zero before the warm-up."""
    import math
    from pathlib import Path

    import torch

    from atlens.training.build import _schedule, build_methods

    papers = Path(__file__).resolve().parent.parent / "configs" / "papers"
    cfg = load_config(papers / "wang2023_cifar10_wrn28_swish_generated.yaml")
    batches = math.ceil(cfg.data.epoch / cfg.data.batch_size)
    update_steps = int(math.floor(50000 / 512) + 1)  # watrain.py's count of steps per epoch
    assert batches == update_steps == 98
    schedule, averaging = _schedule(cfg), build_methods(cfg).averaging
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.2, pct_start=0.025, total_steps=400)
    warmup_steps = 0.025 * 400 * update_steps
    for epoch in range(1, 401):
        reference_lr = optimizer.param_groups[0]["lr"]
        for update_iter in range(1, batches + 1):
            assert schedule(epoch - 1 + (update_iter - 1) / batches) == pytest.approx(reference_lr, rel=1e-12)
            global_step = (epoch - 1) * update_steps + update_iter
            delta = global_step - warmup_steps
            ramp = min(0.995, (1 + delta) / (10 + delta)) if 10 + delta != 0 else 0.995  # (ema_update's guard)
            reference_decay = int(global_step >= warmup_steps) * ramp
            assert averaging.decay_at(global_step, batches) == pytest.approx(reference_decay, abs=1e-15), global_step
        optimizer.step()
        if epoch < 400:
            scheduler.step()
    assert averaging.first_epoch == 1 and averaging.copy_buffers
    assert cfg.callbacks == [{"name": "batchnorm_momentum", "momentum": 0.01, "first": 1.0}]


@pytest.mark.parametrize("name", ["pgd_at", "standard", "kd", "kd_swa"])
def test_chens_tiny_imagenet_presets_replay_100_epochs_decayed_at_50_and_80(name):
    """Chen et al. §4 for Tiny-ImageNet: 100 epochs, lr 0.1 decayed ×0.1 at epochs 50 and 80 — as their code's
    MultiStepLR(milestones, 0.1) stepped after each 0-based epoch gives it; SWA from epoch 55 (swa_start's offset)."""
    from pathlib import Path

    import torch

    from atlens.training.build import _schedule, build_methods

    papers = Path(__file__).resolve().parent.parent / "configs" / "papers"
    cfg = load_config(papers / f"chen2021_tinyimagenet_{name}.yaml")
    assert cfg.optim.epochs == 100
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[50, 80], gamma=0.1)
    schedule = _schedule(cfg)
    for epoch in range(100):
        assert schedule(epoch + 0.5) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-12), epoch
        optimizer.step()
        scheduler.step()
    if name == "kd_swa":
        assert build_methods(cfg).averaging.first_epoch == 56  # 0-based epoch 55 >= swa_start
