"""Wall time of every ``atlens analyze`` analysis on a width-16 PreActResNet-18 with 1,000 test
examples (the yardstick), each relative to one plain PGD-20 evaluation of the same 1,000
examples measured in the same process, so the ratios survive a noisy machine.

The run analysed is trained here for two epochs on 32x32 synthetic data (10 classes, 1,000 training
and 1,000 test images): the cost of an analysis depends on the network and the number of examples,
not on what the weights learned. Analyses compare the run's best and last checkpoints.

    python benchmarks/analysis_cost.py [--what lsc,gradcam,...] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from atlens.analysis.runner import ANALYSES, AnalysisSettings, analyze_run
from atlens.attacks import ThreatModel
from atlens.config import config_from_dict, load_config
from atlens.evaluation import PGDAttack, evaluate
from atlens.runs import load_model, run_data
from atlens.training.run import train_to_completion


def train_run(folder: Path, threads: int) -> Path:
    cfg = config_from_dict({
        "seed": 0,
        "data": {"name": "synthetic", "classes": 10, "image_size": 32, "channels": 3, "train_size": 1000,
                 "test_size": 1000, "noise": 0.3, "batch_size": 128},
        "model": {"name": "preact_resnet18", "width": 16},
        "attack": {"epsilon": 8 / 255, "steps": 2},
        "optim": {"epochs": 2, "lr": 0.05},
        "eval": {"steps": 2, "every": 1},
        "runtime": {"progress": False, "threads": threads},
    })
    train_to_completion(cfg, folder / "run", log=lambda message: None)
    return folder / "run"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", default=",".join(ANALYSES))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        run = train_run(Path(tmp), args.threads or torch.get_num_threads())
        cfg = load_config(run / "config.yaml")
        test = run_data(cfg).test
        model = load_model(run, "last")
        started = time.perf_counter()
        evaluate(model, test, PGDAttack(ThreatModel("linf", 8 / 255), steps=20), device="cpu", clean=False)
        baseline = time.perf_counter() - started
        print(f"plain PGD-20 evaluation of {len(test)} examples: {baseline:.1f} s (the unit below)")
        print(f"{'analysis':>10} {'seconds':>9} {'× PGD-20':>9}")
        for name in args.what.split(","):
            started = time.perf_counter()
            written = analyze_run(run, [name], "best,last", settings=AnalysisSettings(examples=1000))
            seconds = time.perf_counter() - started
            assert written[name].is_file()
            print(f"{name:>10} {seconds:9.1f} {seconds / baseline:9.2f}")


if __name__ == "__main__":
    main()
