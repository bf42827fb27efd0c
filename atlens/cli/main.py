"""The ``atlens`` command: its parser, where each option applies (``atlens.cli.options``), and how errors end.

The commands themselves are in ``atlens.cli.train`` (train, demo, label, sweep), ``atlens.cli.evaluate`` (eval,
cas, analyze) and ``atlens.cli.report`` (report, theory); they call the library and print.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Callable
from pathlib import Path

from atlens.cli import evaluate, report, train
from atlens.cli.options import Options
from atlens.cli.train import DEMO_CONFIG
from atlens.errors import EXIT_RESUMABLE, AtlensError, ConfigError, DataError, TrainingInterrupted

__all__ = ["DEMO_CONFIG", "build_parser", "main"]

EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130  # and EXIT_RESUMABLE (75): stopped with a checkpoint
BAD_INPUT = (ConfigError, DataError)  # what the user gave: arguments, a config, the data they name
RUN, MODEL = ("run",), ("model",)
RUN_PATHS = {"run": "a RUN directory", "model": "an outside model (--model)"}
OUTSIDE = "it goes with --model SPEC; a run's model, data, seed and threat model are its own"


def _number(text: str) -> float:
    """A float that may be written as a fraction, e.g. 8/255."""
    from atlens.config import parse_number

    value = parse_number(text)
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 0.03 or 8/255, got {text!r}") from None


def _floats(text: str) -> list[float]:
    try:
        return [_number(part) for part in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


class _Listed:
    """A list in a help text, read from its registry only when the help is shown (the registries import torch;
    a command line that fails or runs needs no help text)."""

    def __init__(self, read: Callable[[], str]) -> None:
        self.read = read

    def __str__(self) -> str:
        return self.read()


def _attack_names() -> str:
    from atlens.evaluation.attacks import ATTACKS, DEFAULT_ATTACKS

    return f"{', '.join(ATTACKS.syntax)} (default: {DEFAULT_ATTACKS.replace(',', ', ')})"


def _analysis_names() -> str:
    from atlens.analysis.runner import ANALYSES

    return ", ".join(ANALYSES.names)


def _model_options(options: Options, parser: argparse.ArgumentParser, command: str, threat: bool = True) -> None:
    """The options of a model from outside atlens (``--model``): they apply to that path only."""
    group = parser.add_argument_group("a model from outside atlens (instead of RUN)")

    def add(*flags: str, **kwargs: object) -> None:
        why = kwargs.pop("why", OUTSIDE)
        options.add(group, command, *flags, paths=MODEL, why=why, **kwargs)

    if threat:  # CAS of a run at another budget is a study of its own (named by it); analyses use training's
        why = ("a run's analyses use its training threat model (RUN/config.yaml attack); 'atlens cas RUN "
               "--epsilon ...' and 'atlens eval RUN --epsilon ...' study other budgets")
        paths, run = (None, "the run's training threat model, or ") if command == "cas" else (MODEL, "")
        options.add(group, command, "--norm", choices=["linf", "l2"], help=f"threat model (default: {run}linf)",
                    paths=paths, why=why)
        options.add(group, command, "--epsilon", type=_number, paths=paths, why=why,
                    help=f"budget (default: {run}8/255 for linf, 0.5 for l2)" + (
                        "; for a run, a budget other than training's is written under a name of its own"
                        if command == "cas" else ""))
    options.add(group, command, "--model", metavar="SPEC", help="timm:NAME, torchvision:NAME, robustbench:NAME, a "
                "TorchScript file, or module.path:factory (a callable in your code returning an nn.Module)")
    add("--data", metavar="NAME", help="dataset to evaluate on (cifar10, cifar100, svhn, imagefolder, ...)")
    add("--root", help="the dataset's folder")
    add("--weights", metavar="FILE", help="state dict for timm/torchvision/factory models (.pt/.pth read with "
        "weights_only=True, or .safetensors)")
    add("--num-classes", type=int, help="outputs of a timm/torchvision model (default: the data's)")
    add("--threat", help="RobustBench leaderboard: Linf (default), L2 or corruptions")
    add("--model-dir", help="RobustBench's local model folder (default ./models)")
    add("--normalize", choices=["imagenet", "cifar10", "none"],
        help="normalisation in front of the model (default: the source's; RobustBench: inside)")
    add("--mean", type=_floats, help="per-channel mean, e.g. 0.49,0.48,0.45")
    add("--std", type=_floats, help="per-channel std")
    add("--head", help="the final linear layer's name when atlens cannot find it (e.g. fc)")
    add("--seed", type=int, help="seed of the example draw and attack starts (default 0)",
        why="a run's example draw and attack starts follow its own seed (RUN/config.yaml)")
    add("--out", type=Path, help="output folder (default: analyses/<model>)",
        why="a run's results go to the run directory (RUN/ and RUN/analysis/)")
    options.add(group, command, "--overwrite", action="store_true", help="write over earlier results (in RUN or "
                "--out); the earlier files are kept as <name>.replaced-<time>")


def _results_command(options: Options, sub: argparse._SubParsersAction, name: str,
                     help_text: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text)
    options.command(name, lambda a: "model" if a.model else "run", **RUN_PATHS)
    options.add(parser, name, "run", nargs="?", help="run directory (or --model SPEC --data NAME)", paths=RUN,
                why="give a RUN directory or --model SPEC, not both")
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The parser; ``parser.options`` says where each option applies."""
    options = Options()
    parser = argparse.ArgumentParser(prog="atlens", description="Adversarial training, evaluation and analysis.")
    parser.options = options
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or ATLENS_DEBUG=1)")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import a module of your own first (its attacks, analyses, models); runs name theirs "
                             "in their config's imports (repeatable)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tr = sub.add_parser("train", help="train a model from a YAML config (or resume a run)")
    options.command("train", lambda a: "resume" if a.resume else "config", config="a new run from a CONFIG",
                    resume="--resume")
    new, saved = ("config",), "a run continues with its saved config"
    options.add(tr, "train", "config", nargs="?", help="run config (YAML); see configs/", paths=new, why=saved)
    options.add(tr, "train", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                help="override a config value, e.g. --set optim.epochs=20 (repeatable)", paths=new, why=saved)
    options.add(tr, "train", "--out", type=Path, help="run directory (default: runs/<config>-<time>); an "
                "unfinished run of the same config there is continued, a finished one shows its summary", paths=new,
                why="the run directory is RUN itself")
    options.add(tr, "train", "--resume", metavar="RUN", help="continue an interrupted run from its last checkpoint")
    options.add(tr, "train", "--dry-run", action="store_true", help="validate the config, print it resolved, and "
                "stop", paths=new, why="it validates a CONFIG before a run starts")
    options.add(tr, "train", "--overwrite", action="store_true", paths=new, why="a resumed run is continued, never "
                "replaced",
                help="start afresh in --out, moving what is there aside to OUT.replaced-<time> (never deleted)")

    label = sub.add_parser("label", help="pseudo-label a config's extra data once with its extra.teacher, for runs "
                                         "to reuse (extra.teacher: OUT)")
    options.command("label", lambda a: "config", config="a CONFIG")
    options.add(label, "label", "config", help="run config (YAML) with extra.source, extra.labels: pseudo, "
                "extra.teacher")
    options.add(label, "label", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                help="override a config value, as for atlens train (repeatable)")
    options.add(label, "label", "--out", type=Path, required=True, help="folder for extra-labels.npy and "
                "extra-labels.json")

    cas = _results_command(options, sub, "cas", "cross-class attribution matrix and CAS of a run's checkpoints or "
                           "any model")
    options.add(cas, "cas", "--checkpoint", default="best", help="best, last, epoch-N or a .pt path (default: best)",
                paths=RUN, why="an outside model is its own checkpoint")
    options.add(cas, "cas", "--compare", metavar="CHECKPOINT", help="also compute this checkpoint and the "
                "difference map", paths=RUN, why="an outside model has no other checkpoint to compare")
    options.add(cas, "cas", "--clean", action="store_true", help="attribute clean inputs instead of PGD-20 examples")
    options.add(cas, "cas", "--instance", action="store_true", help="also the instance-wise matrix and I-CAS")
    options.add(cas, "cas", "--examples", type=int, help="a class-balanced draw of N test examples, seeded "
                "(default: all)")
    options.add(cas, "cas", "--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    _model_options(options, cas, "cas")

    ev = _results_command(options, sub, "eval", "accuracy of a checkpoint or any model under FGSM, PGD, CW, "
                          "AutoAttack, transfer attacks")
    options.add(ev, "eval", "--checkpoint", default="best", help="best, last, epoch-N or a .pt path (default: best)",
                paths=RUN, why="an outside model is its own checkpoint")
    options.add(ev, "eval", "--attacks", help="comma-separated: %(names)s").names = _Listed(_attack_names)
    options.add(ev, "eval", "--examples", type=int, help="a class-balanced draw of N test examples, seeded "
                "(default: all)")
    options.add(ev, "eval", "--norm", choices=["linf", "l2"], help="threat model (default: the run's, or linf)")
    options.add(ev, "eval", "--epsilon", type=_number, help="budget (default: the run's training ε, or 8/255 for "
                "linf and 0.5 for l2)")
    options.add(ev, "eval", "--both-directions", action="store_true", help="transfer attacks also from this run to "
                "RUN", paths=RUN, why="transfer attacks in both directions are between two runs")
    options.add(ev, "eval", "--curve", action="store_true", help="also the accuracy-vs-budget curve (PGD-20 at 7 "
                "budgets from 0 to 2ε: about 6 PGD-20 evaluations more)")
    options.add(ev, "eval", "--precision", choices=["fp32", "bf16", "bf16-emulated"], default="fp32",
                help="precision the attacks are crafted in (judged in fp32 regardless; default fp32); bf16 on CUDA "
                     "and CPUs with native bf16")
    options.add(ev, "eval", "--autoattack-precision", choices=["fp32", "bf16", "bf16-emulated"], default="fp32",
                help="AutoAttack's crafting precision (default fp32)")
    options.add(ev, "eval", "--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    _model_options(options, ev, "eval", threat=False)

    an = _results_command(options, sub, "analyze", "landscapes, Grad-CAM, local linearity, t-SNE of a run's "
                          "checkpoints or any model")
    options.add(an, "analyze", "--what", help="comma-separated: %(names)s (default: all)").names = _Listed(
        _analysis_names)
    options.add(an, "analyze", "--checkpoints", default="best,last", paths=RUN,
                help="comma-separated best, last, epoch-N or .pt paths, or 'all' (default: best,last)",
                why="an outside model is its own checkpoint")
    options.add(an, "analyze", "--examples", type=int, default=1000, help="a class-balanced draw of N test examples, "
                "seeded (default 1000)")
    options.add(an, "analyze", "--train-examples", type=int, default=1000, help="training examples for lsc "
                "(default 1000)")
    options.add(an, "analyze", "--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    _model_options(options, an, "analyze")

    sw = sub.add_parser("sweep", help="train a grid of runs (skipping finished ones) and compare them in a report")
    options.command("sweep", lambda a: a.launcher, sequential="--launcher sequential",
                    local="--launcher local", slurm="--launcher slurm")
    jobs = ("local", "slurm")
    options.add(sw, "sweep", "config", help="base run config (YAML)")
    options.add(sw, "sweep", "--grid", action="append", default=[], metavar="KEY=V1,V2",
                help="a config key and its values, e.g. attack.epsilon=2/255,4/255,8/255 (repeatable: product)")
    options.add(sw, "sweep", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                help="override a config value for every run (repeatable)")
    options.add(sw, "sweep", "--out", type=Path, help="sweep folder (default: runs/<config>-sweep)")
    options.add(sw, "sweep", "--launcher", default="sequential", choices=["sequential", "local", "slurm"],
                help="sequential here; one submitit job per point on SLURM or as local processes")
    options.add(sw, "sweep", "--slurm", action="append", default=[], metavar="KEY=VALUE", paths=jobs,
                help="submitit executor parameter, e.g. slurm_partition=gpu, gpus_per_node=1, timeout_min=600, "
                "max_num_timeout=10 (requeues after time-outs; default: the config's runtime.max_timeouts)",
                why="executor parameters go to submitit's jobs: add --launcher slurm (or local)")
    options.add(sw, "sweep", "--no-wait", action="store_true", help="submit the jobs and return", paths=jobs,
                why="the sequential launcher trains here, so it always waits")
    options.add(sw, "sweep", "--dry-run", action="store_true", help="validate every point and list the runs")

    rep = sub.add_parser("report", help="one self-contained HTML page for one run or several side by side")
    options.command("report", lambda a: "markdown" if a.markdown else "html", html="the HTML report",
                    markdown="--markdown")
    options.add(rep, "report", "runs", nargs="+", metavar="RUN", help="run directories")
    options.add(rep, "report", "--out", type=Path, help="HTML file (default: RUN/report.html, or report.html for "
                "several); with --markdown, a .md file written with the runs-compared figure beside it")
    options.add(rep, "report", "--title", help="page title", paths=("html",), why="a Markdown table has no title")
    options.add(rep, "report", "--markdown", action="store_true",
                help="the Best / Final / Diff and CAS table as Markdown (printed, or --out FILE.md)")
    options.add(rep, "report", "--vary", action="append", default=[], metavar="KEY", paths=("markdown",),
                why="it groups replicates in the Markdown table: add --markdown",
                help="with --markdown: a setting (dotted key or section) that may differ between replicates besides "
                     "seed and data.per_class_start, e.g. criterion.adv_teacher (repeatable)")

    theory = sub.add_parser("theory", help="the synthetic cross-class data model: closed forms vs numerics")
    options.command("theory", lambda a: "theory", theory="atlens theory")
    options.add(theory, "theory", "--out", type=Path, default=Path("theory"), help="output folder (default: theory/)")
    options.add(theory, "theory", "--mu", type=float, default=1.0)
    options.add(theory, "theory", "--sigma", type=float, default=0.5)
    options.add(theory, "theory", "--lambda", dest="lam", type=float, default=1.0)
    options.add(theory, "theory", "--beta", type=float, default=0.2, help="label-smoothing ratio (< 1/3)")

    demo = sub.add_parser("demo", help="robust overfitting: PGD-AT on scikit-learn's digits with 40%% noisy labels "
                          "(CPU, about 2 minutes)")
    options.command("demo", lambda a: "demo", demo="atlens demo")
    options.add(demo, "demo", "--out", type=Path, help="run directory (default: runs/demo-<time>)")
    options.add(demo, "demo", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return parser


COMMANDS = {"train": lambda a: train.train(a.config, a.overrides, a.out, a.resume, a.dry_run, a.overwrite),
            "demo": train.demo, "label": train.pseudo_label, "sweep": train.sweep,
            "eval": evaluate.evaluate, "cas": evaluate.cas, "analyze": evaluate.analyze,
            "report": report.report, "theory": report.theory}


def _interrupted(args: argparse.Namespace) -> str:
    """What an interrupted command leaves and how to continue it."""
    if args.command == "train" and (args.resume or args.out):
        return f"continue with 'atlens train --resume {args.resume or args.out}'"
    if args.command == "sweep":
        return "run the same 'atlens sweep' command again: finished points are skipped, interrupted ones resumed"
    if args.command == "demo":
        return "the run directory printed above resumes with 'atlens train --resume RUN_DIRECTORY'"
    return "files already written are complete, and an earlier result being replaced is still in place"


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done; 2 bad input — arguments, a config, or the data they name (a missing data.root, an
    unreadable .npz); 1 a failure of what atlens keeps (a damaged checkpoint, a run in use, a non-finite loss, the
    disk); 75 stopped by a signal (``runtime.stop_signals``) at a step boundary with a checkpoint, so the same
    command continues the run; 130 interrupted (Ctrl-C). ``--debug`` or ATLENS_DEBUG=1 shows the traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("ATLENS_DEBUG", "") not in ("", "0")
    try:
        parser.options.refuse(args)
        if args.imports:
            from atlens.plugins import import_modules

            import_modules(args.imports, "--import")
        if getattr(args, "device", None) is not None:
            args.device = str(_device(args.device))
        return COMMANDS[args.command](args)
    except (AtlensError, OSError) as err:
        if debug:
            raise
        message = str(err) if isinstance(err, AtlensError) else _os_error(err)
        print(f"atlens: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT if isinstance(err, BAD_INPUT) else EXIT_FAILURE
    except TrainingInterrupted as stopped:
        train.report_stop(stopped)
        return EXIT_RESUMABLE
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\natlens: interrupted; {_interrupted(args)}", file=sys.stderr)
        return EXIT_INTERRUPTED


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
