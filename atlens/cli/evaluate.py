"""``atlens eval``, ``cas`` and ``analyze``: a run's checkpoints, or a model from outside atlens (``--model``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from atlens.errors import ConfigError
from atlens.progress import duration
from atlens.progress import progress as show_progress

CAS_HINT = "--examples N attacks a class-balanced subset"
ANALYZE_HINT = "--what chooses fewer analyses; --examples and --train-examples shrink them"


def check_counts(args: argparse.Namespace) -> None:
    """--examples and --train-examples, checked by the rule the config's counts follow."""
    from atlens.config import require_count

    for option in ("examples", "train_examples"):
        require_count(getattr(args, option, None), "--" + option.replace("_", "-"))


def announcer(hint: str | Callable[[], str]) -> Callable[[float], None]:
    """The time estimate, printed before long work starts; ``hint`` (or what it returns, when the estimate is
    made) says how to shorten it beyond a minute."""
    def announce(seconds: float) -> None:
        said = hint() if callable(hint) else hint
        print(f"estimated time: about {duration(seconds)}" + (f" ({said})" if seconds > 60 else ""),
              file=sys.stderr, flush=True)

    return announce


def eval_hint(names: list[str]) -> str:
    """What dominates the chosen attacks' time and how to shorten it (attacks of a run's own package are known
    once its config is read, so this is asked when the estimate is made)."""
    from atlens.evaluation.attacks import ATTACKS

    heaviest = sorted(dict.fromkeys(names), key=ATTACKS.cost, reverse=True)
    heaviest = [ATTACKS.heading(n) for n in heaviest if ATTACKS.cost(n) >= 0.5 * ATTACKS.cost(heaviest[0])]
    attacked = [n for n in dict.fromkeys(names) if ATTACKS.cost(n) >= 1]  # clean costs a third: not worth dropping
    fewer = "--attacks chooses fewer, " if len(attacked) > 1 else ""
    return (f"{', '.join(heaviest[:-1]) + ' and ' + heaviest[-1] if len(heaviest) > 1 else heaviest[0]} "
            f"{'dominate' if len(heaviest) > 1 else 'dominates'}; {fewer}--examples N evaluates a subset")


def note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr, flush=True)


def outside_model(args: argparse.Namespace):
    from atlens.evaluation.outside import OutsideModel

    if not args.data:
        raise ConfigError("--model needs --data NAME (and --root DIR for data on disk), the data to evaluate on")
    return OutsideModel(args.model, args.data, args.root, args.weights, args.num_classes, args.normalize, args.mean,
                        args.std, args.head, args.threat, args.model_dir, args.device, args.out)


def owned_run(args: argparse.Namespace) -> AbstractContextManager[None]:
    """The lock of the run directory the command writes into."""
    from atlens.runs import RunDirectory

    if not args.run:
        raise ConfigError(f"atlens {args.command} needs a RUN directory or --model SPEC --data NAME")
    run = RunDirectory(args.run)
    if not run.exists():
        raise ConfigError(f"{args.run} is not a run directory (no config.yaml); give the folder 'atlens train' wrote")
    return run.lock()


def _threat(args: argparse.Namespace, bounds: Any):
    from atlens.attacks import threat_model

    return threat_model(args.norm, args.epsilon, bounds)


def _subset(outside: Any, args: argparse.Namespace) -> tuple[Any, list[int] | None]:
    test = outside.data.test
    indices = test.evaluation_indices(args.examples, args.seed or 0)
    return (test, None) if indices is None else (test.subset(indices), indices.tolist())


def cas(args: argparse.Namespace) -> int:
    check_counts(args)
    from atlens.analysis import cas_for_run

    progress = lambda it: show_progress(it, "attacking")  # noqa: E731
    if args.model:
        from atlens.analysis.cas import cas_for_models
        from atlens.evaluation import PGDAttack

        outside = outside_model(args)
        data, indices = _subset(outside, args)
        attack = None if args.clean else PGDAttack(_threat(args, outside.data.info.bounds), 20)
        with outside.claim():
            results = cas_for_models({outside.label: outside.model}, data, outside.data.info.classes, attack,
                                     outside.out, args.instance, args.seed or 0, args.device, progress,
                                     outside.record, indices, announce=announcer(CAS_HINT), overwrite=args.overwrite)
        _print_cas(results, outside.out)
        return 0
    names = [args.checkpoint] + ([args.compare] if args.compare else [])
    with owned_run(args):
        results = cas_for_run(args.run, names, clean=args.clean, instance=args.instance, examples=args.examples,
                              device=args.device, progress=progress, note=note, announce=announcer(CAS_HINT),
                              overwrite=args.overwrite, norm=args.norm, epsilon=args.epsilon)
    _print_cas(results, Path(args.run) / "analysis")
    return 0


def _print_cas(results: dict[str, Any], where: Path) -> None:
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


def evaluate(args: argparse.Namespace) -> int:
    from atlens.evaluation.suite import DEFAULT_ATTACKS, estimate_seconds, evaluate_model, evaluate_run, format_table

    check_counts(args)
    names = [n.strip() for n in args.attacks.split(",") if n.strip()] if args.attacks else DEFAULT_ATTACKS.split(",")
    progress = lambda it, label: show_progress(it, label)  # noqa: E731
    precision, autoattack_precision = (False if p == "fp32" else p for p in (args.precision,
                                                                            args.autoattack_precision))
    if args.model:
        outside = outside_model(args)
        data, indices = _subset(outside, args)
        announcer(eval_hint(names))(estimate_seconds(outside.model, data, names, args.curve, args.device))
        with outside.claim():
            report = evaluate_model(outside.model, data, _threat(args, outside.data.info.bounds), outside.out,
                                    outside.label, names, outside.data.info.num_classes, args.seed or 0, args.device,
                                    args.curve, progress, {**outside.record, "example_indices": indices},
                                    precision, autoattack_precision, overwrite=args.overwrite)
        where = outside.out
    else:
        with owned_run(args):
            report = evaluate_run(args.run, args.checkpoint, names, args.examples, args.norm, args.epsilon,
                                  args.device, curve=args.curve, both_directions=args.both_directions,
                                  progress=progress, announce=announcer(lambda: eval_hint(names)), precision=precision,
                                  autoattack_precision=autoattack_precision, overwrite=args.overwrite)
        where = Path(args.run)
    from atlens.plots.figure import format_epsilon

    t = report["threat"]
    print(f"{report['checkpoint']}: {t['norm']} ε = {format_epsilon(t['epsilon'])}, {report['examples']} examples "
          f"(accuracy, %)")
    print(format_table(report["attacks"]))
    for line in {r["precision"]["note"] for r in report["attacks"].values() if "note" in r.get("precision", {})}:
        print(f"note: {line}")
    print(f"written to {where / ('eval-' + report['checkpoint'] + '.json')}")
    return 0


def analyze(args: argparse.Namespace) -> int:
    from atlens.analysis.runner import (
        ANALYSES,
        AnalysisSettings,
        analyze_models,
        analyze_run,
        check_request,
        checkpoint_names,
    )
    from atlens.runs import RunDirectory

    check_counts(args)
    settings = AnalysisSettings(examples=args.examples, train_examples=args.train_examples)
    what = [w.strip() for w in args.what.split(",") if w.strip()] if args.what else ANALYSES.names
    progress = lambda it, label, unit="batch": show_progress(it, label, unit)  # noqa: E731
    report = lambda name, seconds: print(f"{name:>10}: {seconds:.1f} s")  # noqa: E731
    if args.model:
        check_request(what, 1)
        outside = outside_model(args)
        with outside.claim():
            written = analyze_models({outside.label: (outside.model, None)}, outside.data,
                                     _threat(args, outside.data.info.bounds), outside.out, what, args.seed or 0,
                                     args.device, settings, progress, report, announcer(ANALYZE_HINT),
                                     overwrite=args.overwrite)
    else:
        with owned_run(args):
            check_request(what, len(checkpoint_names(RunDirectory(args.run), args.checkpoints)))
            written = analyze_run(args.run, what, args.checkpoints, args.device, settings, progress=progress,
                                  report=report, note=note, announce=announcer(ANALYZE_HINT),
                                  overwrite=args.overwrite)
    for name, path in written.items():
        print(f"{name:>10}: {path} and {path.with_suffix('.png').name}")
    return 0
