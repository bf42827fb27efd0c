"""The ``atlens`` command."""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import yaml

from atlens.errors import AtlensError, ConfigError
from atlens.progress import duration
from atlens.progress import progress as show_progress

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "presets" / "demo.yaml"


def _number(text: str) -> float:
    """A float that may be written as a fraction, e.g. 8/255."""
    from atlens.config import parse_number

    value = parse_number(text)
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 0.03 or 8/255, got {text!r}") from None


def _default_out(config: str | None) -> Path:
    stem = Path(config).stem if config else "run"
    return Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def _owned_run(path: str) -> AbstractContextManager[None]:
    """The lock of an existing run directory, for commands that write into it."""
    from atlens.runs import RunDirectory

    run = RunDirectory(path)
    if not run.exists():
        raise ConfigError(f"{path} is not a run directory (no config.yaml); give the folder 'atlens train' wrote")
    return run.lock()


def _train(config_path: str | None, overrides: list[str], out: Path | None, resume: str | None,
           dry_run: bool, overwrite: bool = False) -> int:
    from atlens.config import config_to_dict, load_config
    from atlens.runs import RunDirectory
    from atlens.training import distributed
    from atlens.training.build import check
    from atlens.training.run import train_to_completion
    from atlens.training.summary import format_summary

    if resume:
        run = RunDirectory(resume)
        if not run.exists():
            raise ConfigError(f"{resume} is not a run directory (no config.yaml)")
        if config_path or overrides:
            raise ConfigError("--resume continues a run with its saved config; do not pass a config or --set")
        cfg = load_config(run.config)
    else:
        cfg = load_config(config_path, overrides)
        if dry_run:
            print(yaml.safe_dump(config_to_dict(check(cfg)), sort_keys=False), end="")
            return 0
        run = RunDirectory(out or _default_out(config_path))
    main_process = distributed.is_main_process()
    finished = False
    try:
        summary = train_to_completion(cfg, run.path, resume=bool(resume), overwrite=overwrite,
                                      log=print if main_process else lambda message: None)
        finished = True
    except KeyboardInterrupt:
        if main_process:
            print(f"\natlens: interrupted; continue with 'atlens train --resume {run.path}'", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown(finished)
    if main_process:  # under torchrun, only rank 0 reports
        print(format_summary(summary))
        print(f"curves: {run.curves}")
    return 0


def _pseudo_label(args: argparse.Namespace) -> int:
    from atlens.config import load_config
    from atlens.training.run import label_extra

    record = label_extra(load_config(args.config, args.overrides), args.out)
    counts = ", ".join(str(c) for c in record["class_counts"])
    agreement = record.get("agreement_with_true_labels")
    print(f"{record['examples']} pseudo-labels in {args.out} (per class: {counts})"
          + (f"; {100 * agreement:.1f} % agree with the true labels" if agreement is not None else ""))
    print(f"runs reuse them with --set extra.teacher={args.out}")
    return 0


class _Outside:
    """A model from outside atlens (``--model``), its data and the folder its results go to."""

    def __init__(self, args: argparse.Namespace, need_train: bool = False) -> None:
        from atlens.data import prepare_data
        from atlens.data.tensors import to_unit_float
        from atlens.models.specs import ModelSource, load_external

        if args.run:
            raise ConfigError("give a RUN directory or --model SPEC, not both")
        if not args.data:
            raise ConfigError("--model needs --data NAME (and --root DIR for data on disk), the data to evaluate on")
        self.data = prepare_data(args.data, args.root)
        info = self.data.info
        source = ModelSource(args.model, args.weights, args.num_classes or (info.num_classes if _builds(args.model)
                                                                             else None),
                             args.normalize, args.mean, args.std, args.head, args.threat,
                             # RobustBench's leaderboard for the data (an image folder of CIFAR-10 images: cifar10)
                             args.data if args.data in ("cifar10", "cifar100", "imagenet") else "cifar10",
                             args.model_dir, info.classes)
        model, self.description = load_external(source)
        self.model = model.to(args.device)
        self.model.verify(to_unit_float(self.data.test.head(2).images).to(args.device))
        self.label = _label(args.model)
        self.out = args.out or Path("analyses") / self.label
        self.overwrite = args.overwrite
        self.record = {"model": self.description, "data": {"name": args.data, "root": args.root}}

    def claim(self, files: list[str]) -> AbstractContextManager[None]:
        """The output folder's lock, after checking that no earlier result would be replaced unasked."""
        from atlens.runs import run_lock

        if (self.out / "config.yaml").is_file():
            raise ConfigError(f"{self.out} is a training run; an outside model's results go to a folder of their "
                              f"own: choose another --out")
        protect(self.out, files, self.overwrite)
        self.out.mkdir(parents=True, exist_ok=True)
        return run_lock(self.out)


def protect(folder: Path, files: list[str], overwrite: bool) -> None:
    """The one rule of every command that writes results: an earlier result is never replaced silently. Without
    --overwrite the command stops before any work; with it the earlier files are kept as
    ``<name>.replaced-<time><suffix>`` (with their figures) and the new ones take their names."""
    existing = [folder / f for f in files if (folder / f).exists()]
    if not existing:
        return
    names = ", ".join(p.name for p in existing)
    if not overwrite:
        raise ConfigError(f"{folder} already holds {names}; pass --overwrite to write new results (the earlier "
                          f"ones are kept as <name>.replaced-<time>), or choose another checkpoint or --out")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in existing:
        for companion in [path, path.with_suffix(".png")] if path.suffix == ".json" else [path]:
            if companion.exists():
                companion.rename(companion.with_name(f"{companion.stem}.replaced-{stamp}{companion.suffix}"))


def check_counts(args: argparse.Namespace) -> None:
    """--examples and --train-examples, checked by the rule the config's counts follow."""
    from atlens.config import require_count

    for option in ("examples", "train_examples"):
        require_count(getattr(args, option, None), "--" + option.replace("_", "-"))


def _builds(spec: str) -> bool:
    """Specs whose architecture atlens builds (and can size to the data's classes)."""
    return spec.startswith(("timm:", "torchvision:"))


def _label(spec: str) -> str:
    """A file-name-safe label for a model spec: timm:resnet18 -> timm-resnet18, path/m.ts -> m."""
    path = Path(spec)
    base = path.stem if path.suffix else spec
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in base).strip("-") or "model"


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr, flush=True)


CAS_HINT = "--examples N attacks a class-balanced subset"


def _cas(args: argparse.Namespace) -> int:
    check_counts(args)
    from atlens.analysis import cas_for_run

    progress = lambda it: show_progress(it, "attacking")  # noqa: E731
    if args.model:
        from atlens.analysis.cas import cas_for_models
        from atlens.evaluation import PGDAttack

        outside = _Outside(args)
        test = outside.data.test
        indices = test.evaluation_indices(args.examples, args.seed)
        data = test if indices is None else test.subset(indices)
        attack = None if args.clean else PGDAttack(_threat(args, outside.data.info.bounds), 20)
        name = outside.label + ("-clean" if args.clean else "")
        with outside.claim([f"cas-{name}.json"]):
            results = cas_for_models({outside.label: outside.model}, data, outside.data.info.classes, attack,
                                     outside.out, args.instance, args.seed, args.device, progress, outside.record,
                                     None if indices is None else indices.tolist(), announce=_announcer(CAS_HINT))
        _print_cas(results, outside.out)
        return 0
    _need_run(args)
    names = [args.checkpoint] + ([args.compare] if args.compare else [])
    suffix = "-clean" if args.clean else ""
    stems = [(Path(n).stem if n.endswith(".pt") else n) + suffix for n in names]
    files = [f"cas-{stem}.json" for stem in stems] + ([f"cas-{stems[0]}-minus-{stems[1]}.json"] if args.compare else [])
    with _owned_run(args.run):
        protect(Path(args.run) / "analysis", files, args.overwrite)
        results = cas_for_run(args.run, names, clean=args.clean, instance=args.instance, examples=args.examples,
                              device=args.device, progress=progress, note=_note, announce=_announcer(CAS_HINT))
    _print_cas(results, Path(args.run) / "analysis")
    return 0


def _threat(args: argparse.Namespace, bounds):
    from atlens.attacks import threat_model

    return threat_model(getattr(args, "norm", None), getattr(args, "epsilon", None), bounds)


def _need_run(args: argparse.Namespace) -> None:
    if not args.run:
        raise ConfigError(f"atlens {args.command} needs a RUN directory or --model SPEC --data NAME")
    outside_only = [flag for flag, value in (("--data", args.data), ("--weights", args.weights),
                                             ("--num-classes", args.num_classes), ("--head", args.head))
                    if value is not None]
    if outside_only:
        raise ConfigError(f"{', '.join(outside_only)} go with --model; a run's data and model are its own")


def _print_cas(results, where: Path) -> None:
    for name, result in results.items():
        line = f"{name:>10}: CAS {result.cas:6.2f}"
        if result.icas is not None:
            line += f"   I-CAS {result.icas:6.2f}"
        if result.robust_acc is not None:
            line += f"   robust acc {100 * result.robust_acc:5.2f}%"
        if result.clean_acc is not None:
            line += f"   clean acc {100 * result.clean_acc:5.2f}%"
        print(line + f"   ({result.examples} examples)")
    if len(results) == 2:
        (na, a), (nb, b) = results.items()
        print(f"ΔCAS ({na} − {nb}) = {a.cas - b.cas:+.2f}")
    print(f"written to {where}")


def _eval(args: argparse.Namespace) -> int:
    from atlens.evaluation.suite import DEFAULT_ATTACKS, estimate_seconds, evaluate_model, evaluate_run, format_table

    check_counts(args)
    names = [n.strip() for n in args.attacks.split(",") if n.strip()] if args.attacks else DEFAULT_ATTACKS.split(",")
    progress = lambda it, label: show_progress(it, label)  # noqa: E731
    if args.model:
        outside = _Outside(args)
        test = outside.data.test
        indices = test.evaluation_indices(args.examples, args.seed)
        data = test if indices is None else test.subset(indices)
        _announcer(EVAL_HINT)(estimate_seconds(outside.model, data, names, args.curve, args.device))
        with outside.claim([f"eval-{outside.label}.json"]):
            report = evaluate_model(outside.model, data, _threat(args, outside.data.info.bounds), outside.out,
                                    outside.label, names, outside.data.info.num_classes, args.seed, args.device,
                                    args.curve, progress,
                                    {**outside.record,
                                     "example_indices": None if indices is None else indices.tolist()},
                                    *_precisions(args))
        where = outside.out
    else:
        _need_run(args)
        from atlens.attacks import threat_model
        from atlens.config import load_config
        from atlens.evaluation.attacks import ATTACKS

        label = Path(args.checkpoint).stem if args.checkpoint.endswith(".pt") else args.checkpoint
        with _owned_run(args.run):
            for name in names:  # every input error before anything is written or replaced
                ATTACKS.match(name)
            threat_model(args.norm, args.epsilon, base=load_config(Path(args.run) / "config.yaml").attack)
            protect(Path(args.run), [f"eval-{label}.json", f"eval-{label}-budget.png"], args.overwrite)
            report = evaluate_run(args.run, args.checkpoint, names, args.examples, args.norm, args.epsilon,
                                  args.device, curve=args.curve, both_directions=args.both_directions,
                                  progress=progress, announce=_announcer(EVAL_HINT), precision=_precisions(args)[0],
                                  autoattack_precision=_precisions(args)[1])
        where = Path(args.run)
    from atlens.plots.figure import format_epsilon

    t = report["threat"]
    print(f"{report['checkpoint']}: {t['norm']} ε = {format_epsilon(t['epsilon'])}, {report['examples']} examples "
          f"(accuracy, %)")
    print(format_table(report["attacks"]))
    for note in {r["precision"]["note"] for r in report["attacks"].values() if "note" in r.get("precision", {})}:
        print(f"note: {note}")
    print(f"written to {where / ('eval-' + report['checkpoint'] + '.json')}")
    return 0


def _precisions(args: argparse.Namespace) -> tuple[bool | str, bool | str]:
    """--precision and --autoattack-precision as amp settings (fp32: none)."""
    return tuple(False if p == "fp32" else p for p in (args.precision, args.autoattack_precision))


EVAL_HINT = "PGD-100, CW and AutoAttack dominate; --attacks chooses fewer, --examples N evaluates a subset"


def _announcer(hint: str) -> Callable[[float], None]:
    """The time estimate, printed before long work starts; ``hint`` says how to shorten it beyond a minute."""
    def announce(seconds: float) -> None:
        print(f"estimated time: about {duration(seconds)}" + (f" ({hint})" if seconds > 60 else ""),
              file=sys.stderr, flush=True)

    return announce


ANALYZE_HINT = "--what chooses fewer analyses; --examples and --train-examples shrink them"


def _analyze(args: argparse.Namespace) -> int:
    from atlens.analysis.runner import AnalysisSettings, analyze_run

    check_counts(args)
    settings = AnalysisSettings(examples=args.examples, train_examples=args.train_examples)
    what = [w.strip() for w in args.what.split(",") if w.strip()]
    progress = lambda it, label="directions": show_progress(it, label)  # noqa: E731
    report = lambda name, seconds: print(f"{name:>10}: {seconds:.1f} s")  # noqa: E731
    if args.model:
        from atlens.analysis.runner import analyze_models

        outside = _Outside(args)
        with outside.claim([f"{name}.json" for name in what]):
            written = analyze_models({outside.label: (outside.model, None)}, outside.data,
                                     _threat(args, outside.data.info.bounds), outside.out, what, args.seed,
                                     args.device, settings, progress, report, _announcer(ANALYZE_HINT))
    else:
        _need_run(args)
        from atlens.analysis.runner import check_request, checkpoint_names
        from atlens.runs import RunDirectory

        with _owned_run(args.run):
            check_request(what, len(checkpoint_names(RunDirectory(args.run), args.checkpoints)))
            protect(Path(args.run) / "analysis", [f"{name}.json" for name in what], args.overwrite)
            written = analyze_run(args.run, what, args.checkpoints, args.device, settings, progress=progress,
                                  report=report, note=_note, announce=_announcer(ANALYZE_HINT))
    for name, path in written.items():
        print(f"{name:>10}: {path} and {path.with_suffix('.png').name}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from atlens.report import write_report
    from atlens.sweeps import grid_points, parse_grid, run_grid, status
    from atlens.sweeps.grid import point_config

    if not args.grid:
        raise ConfigError("atlens sweep needs at least one --grid key=v1,v2,...")
    points = grid_points(parse_grid(args.grid))
    out = args.out or Path("runs") / f"{Path(args.config).stem}-sweep"
    if args.dry_run:
        for point in points:
            point_config(args.config, args.overrides, point)
            print(f"{point.name:40} {status(out / point.name):9} {' '.join(point.overrides)}")
        print(f"{len(points)} runs under {out}; every point validates")
        return 0
    options = dict(_key_value(item) for item in args.slurm)
    record = run_grid(args.config, args.overrides, points, out, args.launcher, options, wait=not args.no_wait)
    rows = [(p["name"], p.get("summary", {})) for p in record["points"]]
    print(f"{'run':40}{'RA best':>9}{'RA last':>9}{'gap':>7}{'CAS best':>10}{'CAS last':>10}{'ΔCAS':>7}")
    for name, s in rows:
        if "best_epoch" not in s:
            print(f"{name:40}  (not finished)")
            continue
        cas = (f"{s['cas_best']:10.2f}{s['cas_last']:10.2f}{s['delta_cas']:+7.2f}" if "cas_best" in s else "")
        print(f"{name:40}{100 * s['best_robust_acc']:9.2f}{100 * s['last_robust_acc']:9.2f}"
              f"{100 * s['robust_gap']:7.2f}{cas}")
    finished = [out / p["name"] for p in record["points"] if p["status"] == "finished"]
    if finished:
        print(f"report: {write_report(finished, out / 'report.html', f'sweep {out.name}')}")
    print(f"sweep record: {out / 'sweep.json'}")
    return 0


def _key_value(item: str) -> tuple[str, object]:
    key, sep, value = item.partition("=")
    if not sep:
        raise ConfigError(f"--slurm expects key=value (e.g. slurm_partition=gpu), got {item!r}")
    return key, yaml.safe_load(value)


def _report(args: argparse.Namespace) -> int:
    from atlens.report import RunView, markdown_table, write_markdown, write_report

    vary = tuple(args.vary)
    if vary and not args.markdown:
        raise ConfigError("--vary groups replicates in the Markdown table: add --markdown")
    if args.markdown:
        views = [RunView(run) for run in args.runs]
        if args.out is None:
            print(markdown_table(views, vary), end="")
        else:
            print(f"table: {write_markdown(views, args.out, vary)}")
        return 0
    print(f"report: {write_report(args.runs, args.out, args.title)}")
    return 0


def _theory(args: argparse.Namespace) -> int:
    from atlens.theory.report import run_theory

    result = run_theory(args.out, args.mu, args.sigma, args.lam, args.beta)
    t, t2, ce = result["thresholds"], result["theorem2"], result["cross_entropy_at"]
    print(f"ε0: closed form {t['epsilon0_closed']:.4f}, numerical {t['epsilon0_numerical']:.4f}")
    print(f"ε1: closed form {t['epsilon1_closed']:.4f}, numerical {t['epsilon1_numerical']:.4f}")
    print(f"largest |Δw| between solvers and closed forms: {100 * result['max_weight_error_relative_to_scale']:.2f}% "
          f"of μ/λ")
    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    print(f"Theorem 2, P(robust) increasing in t = w2/w1 (the claim): {yes(t2['increasing_in_t'])}. The Monte Carlo "
          f"agrees with σ1 = σ/(μ−2ε) (docs/theory.md): {yes(t2['monte_carlo_matches_corrected_variance'])}; with the "
          f"paper's σ1 = √2σ/(μ−2ε): {yes(t2['monte_carlo_matches_paper_variance'])} (expected: no — the proof's "
          f"variance is off by √2, which does not change the claim)")
    ratios = ", ".join(f"{c['ratio']:.2f}" for c in ce["table"])
    drop = ce["w2_dropped_below_1pct_of_w1_at"]
    print(f"cross-entropy PGD-AT (what practitioners run), w2/w1 over ε: {ratios}. "
          + (f"w2 vanishes from ε = {drop[0]:.2f} on, a threshold as the margin-loss theory predicts"
             if ce["threshold_behaviour"] else
             "w2 shrinks with ε but does not vanish at a threshold: with cross-entropy instead of the theory's "
             "margin loss the drop is gradual (an observation, not a failure)"))
    print(f"written to {Path(args.out) / 'theory.json'} and theory.png")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from atlens.report import write_report

    out = args.out or _default_out("demo")
    code = _train(str(DEMO_CONFIG), args.overrides, out, None, False)
    if code == 0:  # an interrupted demo has no report to show; it resumes with atlens train --resume
        print(f"report: {write_report([out])}")
    return code


def _model_options(parser: argparse.ArgumentParser, threat: bool = True) -> None:
    group = parser.add_argument_group("a model from outside atlens (instead of RUN)")
    if threat:
        group.add_argument("--norm", choices=["linf", "l2"], help="threat model (default linf)")
        group.add_argument("--epsilon", type=_number, help="budget (default 8/255 for linf, 0.5 for l2)")
    group.add_argument("--model", metavar="SPEC", help="timm:NAME, torchvision:NAME, robustbench:NAME, a TorchScript "
                       "file, or module.path:factory (a callable in your code returning an nn.Module)")
    group.add_argument("--data", metavar="NAME", help="dataset to evaluate on (cifar10, cifar100, svhn, "
                       "imagefolder, ...)")
    group.add_argument("--root", help="the dataset's folder")
    group.add_argument("--weights", metavar="FILE", help="state dict for timm/torchvision/factory models (.pt/.pth "
                       "read with weights_only=True, or .safetensors)")
    group.add_argument("--num-classes", type=int, help="outputs of a timm/torchvision model (default: the data's)")
    group.add_argument("--threat", default="Linf", help="RobustBench leaderboard: Linf, L2 or corruptions")
    group.add_argument("--model-dir", help="RobustBench's local model folder (default ./models)")
    group.add_argument("--normalize", choices=["imagenet", "cifar10", "none"],
                       help="normalisation in front of the model (default: the source's; RobustBench: inside)")
    group.add_argument("--mean", type=_floats, help="per-channel mean, e.g. 0.49,0.48,0.45")
    group.add_argument("--std", type=_floats, help="per-channel std")
    group.add_argument("--head", help="the final linear layer's name when atlens cannot find it (e.g. fc)")
    group.add_argument("--seed", type=int, default=0, help="seed of the example draw and attack starts (default 0)")
    group.add_argument("--out", type=Path, help="output folder (default: analyses/<model>)")
    group.add_argument("--overwrite", action="store_true", help="write over earlier results (in RUN or --out); the "
                       "earlier files are kept as <name>.replaced-<time>")


def _floats(text: str) -> list[float]:
    try:
        return [_number(part) for part in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atlens", description="Adversarial training, evaluation and analysis.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or ATLENS_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train a model from a YAML config (or resume a run)")
    train.add_argument("config", nargs="?", help="run config (YAML); see configs/")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set optim.epochs=20 (repeatable)")
    train.add_argument("--out", type=Path, help="run directory (default: runs/<config>-<time>)")
    train.add_argument("--resume", metavar="RUN", help="continue an interrupted run from its last checkpoint")
    train.add_argument("--dry-run", action="store_true", help="validate the config, print it resolved, and stop")
    train.add_argument("--overwrite", action="store_true",
                       help="start afresh in --out, moving what is there aside to OUT.replaced-<time> (never deleted)")

    label = sub.add_parser("label", help="pseudo-label a config's extra data once with its extra.teacher, for runs "
                                         "to reuse (extra.teacher: OUT)")
    label.add_argument("config", help="run config (YAML) with extra.source, extra.labels: pseudo, extra.teacher")
    label.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, as for atlens train (repeatable)")
    label.add_argument("--out", type=Path, required=True, help="folder for extra-labels.npy and extra-labels.json")

    cas = sub.add_parser("cas", help="cross-class attribution matrix and CAS of a run's checkpoints or any model")
    cas.add_argument("run", nargs="?", help="run directory (or --model SPEC --data NAME)")
    cas.add_argument("--checkpoint", default="best", help="best, last, epoch-N or a .pt path (default: best)")
    cas.add_argument("--compare", metavar="CHECKPOINT", help="also compute this checkpoint and the difference map")
    cas.add_argument("--clean", action="store_true", help="attribute clean inputs instead of PGD-20 examples")
    cas.add_argument("--instance", action="store_true", help="also the instance-wise matrix and I-CAS")
    cas.add_argument("--examples", type=int, help="a class-balanced draw of N test examples, seeded (default: all)")
    cas.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    _model_options(cas)

    ev = sub.add_parser("eval", help="accuracy of a checkpoint or any model under FGSM, PGD, CW, AutoAttack, "
                        "transfer attacks")
    ev.add_argument("run", nargs="?", help="run directory (or --model SPEC --data NAME)")
    ev.add_argument("--checkpoint", default="best", help="best, last, epoch-N or a .pt path (default: best)")
    ev.add_argument("--attacks", help="comma-separated: clean, fgsm, pgdN, cw, autoattack, transfer:RUN[@CHECKPOINT] "
                    "(default: clean, fgsm, pgd20, pgd100, cw, autoattack)")
    ev.add_argument("--examples", type=int, help="a class-balanced draw of N test examples, seeded (default: all)")
    ev.add_argument("--norm", choices=["linf", "l2"], help="threat model (default: the run's)")
    ev.add_argument("--epsilon", type=_number, help="budget (default: the run's training ε)")
    ev.add_argument("--both-directions", action="store_true", help="transfer attacks also from this run to RUN")
    ev.add_argument("--curve", action="store_true", help="also the accuracy-vs-budget curve (PGD-20 at 7 budgets "
                    "from 0 to 2ε: about 6 PGD-20 evaluations more)")
    ev.add_argument("--precision", choices=["fp32", "bf16", "bf16-emulated"], default="fp32",
                    help="precision the attacks are crafted in (judged in fp32 regardless; default fp32); bf16 on "
                         "CUDA and CPUs with native bf16")
    ev.add_argument("--autoattack-precision", choices=["fp32", "bf16", "bf16-emulated"], default="fp32",
                    help="AutoAttack's crafting precision (default fp32)")
    ev.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    _model_options(ev, threat=False)

    an = sub.add_parser("analyze", help="landscapes, Grad-CAM, local linearity, t-SNE of a run's checkpoints or any "
                        "model")
    an.add_argument("run", nargs="?", help="run directory (or --model SPEC --data NAME)")
    an.add_argument("--what", default="lsc,gradcam,landscape,weights,linearity,tsne",
                    help="comma-separated: lsc, gradcam, landscape, weights, linearity, tsne (default: all)")
    an.add_argument("--checkpoints", default="best,last",
                    help="comma-separated best, last, epoch-N or .pt paths, or 'all' (default: best,last)")
    an.add_argument("--examples", type=int, default=1000, help="a class-balanced draw of N test examples, seeded "
                    "(default 1000)")
    an.add_argument("--train-examples", type=int, default=1000, help="training examples for lsc (default 1000)")
    an.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    _model_options(an)

    sw = sub.add_parser("sweep", help="train a grid of runs (skipping finished ones) and compare them in a report")
    sw.add_argument("config", help="base run config (YAML)")
    sw.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                    help="a config key and its values, e.g. attack.epsilon=2/255,4/255,8/255 (repeatable: product)")
    sw.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value for every run (repeatable)")
    sw.add_argument("--out", type=Path, help="sweep folder (default: runs/<config>-sweep)")
    sw.add_argument("--launcher", default="sequential", choices=["sequential", "local", "slurm"],
                    help="sequential here; one submitit job per point on SLURM or as local processes")
    sw.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                    help="submitit executor parameter, e.g. slurm_partition=gpu, gpus_per_node=1, timeout_min=600")
    sw.add_argument("--no-wait", action="store_true", help="submit the jobs and return")
    sw.add_argument("--dry-run", action="store_true", help="validate every point and list the runs")

    rep = sub.add_parser("report", help="one self-contained HTML page for one run or several side by side")
    rep.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    rep.add_argument("--out", type=Path, help="HTML file (default: RUN/report.html, or report.html for several); "
                     "with --markdown, a .md file written with the runs-compared figure beside it")
    rep.add_argument("--title", help="page title")
    rep.add_argument("--markdown", action="store_true",
                     help="the Best / Final / Diff and CAS table as Markdown (printed, or --out FILE.md)")
    rep.add_argument("--vary", action="append", default=[], metavar="KEY",
                     help="with --markdown: a setting (dotted key or section) that may differ between replicates "
                     "besides seed and data.per_class_start, e.g. criterion.adv_teacher (repeatable)")

    theory = sub.add_parser("theory", help="the synthetic cross-class data model: closed forms vs numerics")
    theory.add_argument("--out", type=Path, default=Path("theory"), help="output folder (default: theory/)")
    theory.add_argument("--mu", type=float, default=1.0)
    theory.add_argument("--sigma", type=float, default=0.5)
    theory.add_argument("--lambda", dest="lam", type=float, default=1.0)
    theory.add_argument("--beta", type=float, default=0.2, help="label-smoothing ratio (< 1/3)")

    demo = sub.add_parser("demo", help="robust overfitting: PGD-AT on scikit-learn's digits with 40%% noisy labels "
                          "(CPU, about 2 minutes)")
    demo.add_argument("--out", type=Path, help="run directory (default: runs/demo-<time>)")
    demo.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return parser


COMMANDS = {"train": lambda a: _train(a.config, a.overrides, a.out, a.resume, a.dry_run, a.overwrite),
            "eval": lambda a: _eval(a), "theory": lambda a: _theory(a), "cas": lambda a: _cas(a),
            "analyze": lambda a: _analyze(a), "report": lambda a: _report(a), "sweep": lambda a: _sweep(a),
            "demo": lambda a: _demo(a), "label": lambda a: _pseudo_label(a)}


def _interrupted(args: argparse.Namespace) -> str:
    """What an interrupted command leaves and how to continue it."""
    if args.command == "train" and (args.resume or args.out):
        return f"continue with 'atlens train --resume {args.resume or args.out}'"
    if args.command == "sweep":
        return "run the same 'atlens sweep' command again: finished points are skipped, interrupted ones resumed"
    if args.command == "demo":
        return "the run directory printed above resumes with 'atlens train --resume RUN_DIRECTORY'"
    return "files already written are complete; nothing half-written is left"


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 1 a failure (checkpoint, data, a run in use, the disk), 2 a usage error
    (config, arguments), 130 interrupted. ``--debug`` or ATLENS_DEBUG=1 shows the traceback."""
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("ATLENS_DEBUG", "") not in ("", "0")
    try:
        if args.command == "train" and not args.config and not args.resume:
            raise ConfigError("atlens train needs a CONFIG.yaml or --resume RUN")
        if getattr(args, "device", None) is not None:
            args.device = str(_device(args.device))
        return COMMANDS[args.command](args)
    except (AtlensError, OSError) as err:
        if debug:
            raise
        message = str(err) if isinstance(err, AtlensError) else _os_error(err)
        print(f"atlens: error: {message}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\natlens: interrupted; {_interrupted(args)}", file=sys.stderr)
        return 130


def _device(name: str) -> object:
    from atlens.training.runtime import select_device

    return select_device(name, option="--device")


def _os_error(err: OSError) -> str:
    """A permission error, a full disk or a missing path, said in one line with the path."""
    what = {errno.ENOSPC: "the disk is full", errno.EACCES: "permission denied", errno.EPERM: "permission denied",
            errno.ENOENT: "no such file or folder", errno.EROFS: "the file system is read-only"}
    reason = what.get(err.errno, err.strerror or str(err))
    where = f" ({err.filename})" if err.filename else ""
    return f"{reason}{where}; free space, fix the permissions or choose another path, then run the command again"


if __name__ == "__main__":
    sys.exit(main())
