"""``atlens train``, ``demo``, ``label`` and ``sweep``: commands that train."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from atlens.errors import ConfigError, TrainingInterrupted

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "presets" / "demo.yaml"


def default_out(config: str | None) -> Path:
    stem = Path(config).stem if config else "run"
    return Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(config_path: str | None, overrides: list[str], out: Path | None, resume: str | None,
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
        cfg = load_config(run.config)
    else:
        if not config_path:
            raise ConfigError("atlens train needs a CONFIG.yaml or --resume RUN")
        cfg = load_config(config_path, overrides)
        if dry_run:
            print(yaml.safe_dump(config_to_dict(check(cfg)), sort_keys=False), end="")
            return 0
        run = RunDirectory(out or default_out(config_path))
    main_process = distributed.is_main_process()
    finished = False
    try:
        # the same command continues an unfinished run of the same config (a requeued job needs no other)
        summary = train_to_completion(cfg, run.path, resume=True, overwrite=overwrite,
                                      log=print if main_process else lambda message: None)
        finished = True
    except TrainingInterrupted:
        finished = True  # every rank stopped after the same step: the barrier before leaving is safe
        raise
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


def report_stop(stopped: TrainingInterrupted) -> None:
    """What a signal did (rank 0): where training stopped, how long after the signal, how to continue; and, under
    SLURM after the time-out signal, the job's requeue."""
    from atlens.runs.slurm import requeue_after_timeout
    from atlens.training import distributed
    from atlens.training.stopping import signal_named

    if not distributed.is_main_process():
        return
    run, runtime = Path(str(stopped.run)), stopped.runtime
    saved = "interrupted.pt" if stopped.position else "last.pt"
    print(f"atlens: {stopped}; {run / 'checkpoints' / saved} written, {stopped.stop.seconds_since():.1f} s after "
          f"the signal. The same command continues the run", file=sys.stderr, flush=True)
    timeout = signal_named(runtime.timeout_signal).name if runtime and runtime.timeout_signal else None
    requeue_after_timeout(run, stopped.signal_name, timeout, runtime.max_timeouts if runtime else 0,
                          log=lambda line: print(line, file=sys.stderr, flush=True))


def demo(args: argparse.Namespace) -> int:
    from atlens.report import write_report

    out = args.out or default_out("demo")
    code = train(str(DEMO_CONFIG), args.overrides, out, None, False)
    if code == 0:  # an interrupted demo has no report to show; it resumes with atlens train --resume
        print(f"report: {write_report([out])}")
    return code


def pseudo_label(args: argparse.Namespace) -> int:
    from atlens.config import load_config
    from atlens.training.run import label_extra

    record = label_extra(load_config(args.config, args.overrides), args.out)
    counts = ", ".join(str(c) for c in record["class_counts"])
    agreement = record.get("agreement_with_true_labels")
    print(f"{record['examples']} pseudo-labels in {args.out} (per class: {counts})"
          + (f"; {100 * agreement:.1f} % agree with the true labels" if agreement is not None else ""))
    print(f"runs reuse them with --set extra.teacher={args.out}")
    return 0


def sweep(args: argparse.Namespace) -> int:
    from atlens.report import write_report
    from atlens.sweeps import grid_points, parse_grid, run_grid, status, sweep_table
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
    print(sweep_table(record))
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
