"""A check for the first GPU, one command: speed against the reference loop, every method without host
synchronisation, peak memory and one real epoch.

    python benchmarks/gpu_check.py --data PATH [--out gpu_check.json]

On one CUDA device it measures (sized to finish in under 8 minutes on a current data-centre GPU; no GPU has
run it yet):

1. **Throughput**: images per second of atlens's PGD-10 training step against the reference scripts' loop
   (attack in train mode with ``loss.backward()``, an extra clean forward, fp32, contiguous) for
   PreActResNet-18 and WRN-34-10, batch 128, in fp32, fp32 with channels_last, and bf16 autocast with
   channels_last; the peak GPU memory of each atlens configuration.
2. **No host synchronisation**: 20 steps of every objective, criterion, weight perturbation, averaging,
   extra-data sampler and early-stop signal, all but the first under ``torch.cuda.set_sync_debug_mode("error")``
   (an operation that makes the host wait for the GPU raises); each method's steps per second.
3. **One epoch of PGD-AT on CIFAR-10** from an ImageFolder tree (``--data``: train/<class>/<image>,
   test/<class>/<image>): PreActResNet-18, the full training split, its wall time and images per second.

It prints a table per part and writes everything to ``--out`` (JSON). Without a GPU it runs a tiny version —
small networks, a few steps, a generated image folder when ``--data`` is not given, the synchronisation check
left to the test suite's guard (tests/sync_guard.py) — which the tests run to keep this script working.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from atlens.api import train
from atlens.config import config_from_dict
from atlens.runs import RunDirectory
from atlens.training.build import build, check
from atlens.training.loop import Loop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import plain_step  # noqa: E402  (the reference scripts' PGD-10 step)

GPU = {"models": {"PreActResNet-18": {"name": "preact_resnet18"},
                  "WRN-34-10": {"name": "wrn", "depth": 34, "widen_factor": 10}},
       "image_size": 32, "batch": 128, "steps": 5, "method_steps": 20, "epoch": None}
CPU = {"models": {"PreActResNet-18 (width 4)": {"name": "preact_resnet18", "width": 4},
                  "WRN-10-1": {"name": "wrn", "depth": 10, "widen_factor": 1}},
       "image_size": 8, "batch": 16, "steps": 1, "method_steps": 2, "epoch": 40}
PRECISIONS = {"fp32": (False, False), "fp32 channels_last": (True, False), "bf16 channels_last": (True, "bf16")}

# every objective, criterion, weight perturbation, averaging, extra-data sampler and early-stop signal
METHODS = {
    "pgd_at": {},
    "pgd_at+awp+swa": {"perturbation": {"name": "awp", "gamma": 0.01}, "averaging": {"name": "swa", "start": 1}},
    "pgd_at+rwp": {"perturbation": {"name": "rwp", "gamma": 0.01, "c_min": 1.0, "steps": 3}},
    "trades+label_smoothing+ema": {"objective": {"name": "trades"}, "criterion": {"name": "label_smoothing"},
                                   "averaging": {"name": "ema"}},
    "trades+cross_class": {"objective": {"name": "trades"}, "criterion": {"name": "cross_class"}},
    "mart+awp+iswa": {"objective": {"name": "mart"}, "perturbation": {"name": "awp", "gamma": 0.01},
                      "averaging": {"name": "iswa", "start": 1}},
    "fast_at+tfkd+small_loss": {"objective": {"name": "fast_at"}, "criterion": {"name": "tfkd"},
                                "early_stop": {"rule": "small_loss"}},
    "standard+cas_trend": {"objective": {"name": "standard"}, "early_stop": {"rule": "cas_trend"}},
    "pgd_at+extra+cross_class_sampler": {"extra": {"source": "rest", "labels": "provided", "fraction": 0.5,
                                                   "sampler": {"name": "cross_class", "every": 1}}},
}


def run_config(size: dict, model: dict, device: str, **overrides: Any) -> dict:
    batch = size["batch"]
    return {"seed": 0,
            "data": {"name": "synthetic", "image_size": size["image_size"], "channels": 3, "classes": 10,
                     "train_size": batch * 4, "test_size": batch, "batch_size": batch, "per_class": batch // 5},
            "model": model, "attack": {"epsilon": 8 / 255, "steps": 10},
            "runtime": {"progress": False, "device": device}, **overrides}


def loop_of(config: dict, device: torch.device, run: Path | None = None) -> Loop:
    """A training loop over ``config``'s parts: its step alone, or with every callback of a run in ``run``."""
    if run is None:
        return Loop(build(check(config_from_dict(config)), device), [])
    run.mkdir(parents=True)
    return Loop(build(check(config_from_dict(config)), device, run=RunDirectory(run)))


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(step, batches: list, device: torch.device) -> float:
    for _ in range(2):  # warm-up (allocator, kernels, cuDNN's choices)
        step(*batches[0])
    synchronise(device)
    started = time.perf_counter()
    for x, y in batches:
        step(x, y)
    synchronise(device)
    return sum(len(y) for _, y in batches) / (time.perf_counter() - started)


def peak_memory(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def throughput(size: dict, device: torch.device) -> list[dict]:
    rows = []
    for model_name, model in size["models"].items():
        reference: float | None = None
        for precision, (channels_last, amp) in PRECISIONS.items():
            runtime = {"progress": False, "device": device.type, "channels_last": channels_last, "amp": amp}
            loop = loop_of({**run_config(size, model, device.type), "runtime": runtime}, device)
            batches = [next(iter(loop.parts.loader))] * size["steps"]
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            ours = images_per_second(partial(loop.step, progress=0.0), batches, device)
            memory = peak_memory(device)
            if reference is None:  # the reference loop: fp32, contiguous, as the scripts run
                plain = loop_of(run_config(size, model, device.type, runtime={
                    "progress": False, "device": device.type, "channels_last": False}), device).model
                sgd = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
                reference = images_per_second(partial(plain_step, plain, sgd), batches, device)
            rows.append({"model": model_name, "precision": precision, "atlens_img_s": ours,
                         "reference_img_s": reference, "ratio": ours / reference, "peak_memory_mb": memory,
                         "precision_note": loop.parts.precision.note})
    return rows


@contextmanager
def sync_errors(device: torch.device):
    """CUDA raises on any operation that makes the host wait for the device (a no-op elsewhere)."""
    if device.type != "cuda":
        yield
        return
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def methods(size: dict, device: torch.device, scratch: Path) -> list[dict]:
    rows = []
    model = next(iter(size["models"].values()))
    for name, overrides in METHODS.items():
        loop = loop_of(run_config(size, model, device.type, **overrides), device, scratch / name)
        for cb in loop.callbacks:
            cb.on_fit_start(loop)
        batches = list(loop.parts.loader)
        row: dict[str, Any] = {"method": name, "steps": size["method_steps"],
                               "sync_checked": device.type == "cuda", "error": None}
        try:
            x, y = batches[0]
            loop.step(x, y, 0.0, 0)  # the first step may set things up (EMA copies the weights once)
            synchronise(device)
            started = time.perf_counter()
            with sync_errors(device):
                for i in range(1, size["method_steps"] + 1):
                    x, y = batches[i % len(batches)]
                    out = loop.step(x, y, 0.0, i)
                    for cb in loop.callbacks:
                        cb.on_step_end(loop, out)
            synchronise(device)
            row["steps_per_second"] = size["method_steps"] / (time.perf_counter() - started)
        except RuntimeError as error:  # what CUDA's sync check raises
            row["error"] = str(error).splitlines()[0]
        rows.append(row)
    return rows


def tiny_image_folder(root: Path, size: int, per_class: int) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(10):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def one_epoch(size: dict, device: torch.device, data: Path, out: Path) -> dict:
    """One epoch of PGD-AT (PreActResNet-18, PGD-10 training, PGD-10 evaluation on 1,000 test images)."""
    model = {"name": "preact_resnet18", **({} if size["epoch"] is None else {"width": 4})}
    config = {"seed": 0, "data": {"name": "imagefolder", "root": str(data), "batch_size": size["batch"]},
              "model": model, "attack": {"epsilon": 8 / 255, "step_size": 2 / 255, "steps": 10},
              "optim": {"epochs": 1, "schedule": "constant"},
              "eval": {"steps": 10, "examples": 1000 if size["epoch"] is None else 20},
              "analysis": {"cas_every": 0}, "runtime": {"device": device.type, "progress": True}}
    started = time.perf_counter()
    run = train(config, out)
    seconds = time.perf_counter() - started
    row = run.read_metrics()[-1]
    examples = len(list((data / "train").glob("*/*")))
    return {"seconds": seconds, "training_images": examples, "img_s": examples / seconds,
            "test_robust_acc": row.get("test_robust_acc"), "peak_memory_mb": peak_memory(device)}


def table(rows: list[dict], keys: list[str]) -> str:
    def cell(value: Any) -> str:
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = [" | ".join(keys), " | ".join("---" for _ in keys)]
    lines += [" | ".join(cell(row.get(k)) for k in keys) for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="CIFAR-10 as an ImageFolder tree (GPU: required)")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    args = parser.parse_args(argv)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device, size = (torch.device("cuda"), GPU) if cuda else (torch.device("cpu"), CPU)
    if cuda and args.data is None:
        parser.error("--data: the one-epoch check trains on CIFAR-10 from an ImageFolder tree; give its path")
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(device) if cuda else "cpu (tiny version)",
                              "torch": torch.__version__}
    started = time.perf_counter()
    report["throughput"] = throughput(size, device)
    print(table(report["throughput"], ["model", "precision", "atlens_img_s", "reference_img_s", "ratio",
                                       "peak_memory_mb"]))
    with tempfile.TemporaryDirectory() as scratch:
        report["methods"] = methods(size, device, Path(scratch) / "methods")
        print(table(report["methods"], ["method", "steps", "steps_per_second", "sync_checked", "error"]))
        data = args.data or tiny_image_folder(Path(scratch) / "images", CPU["image_size"], size["epoch"] // 10)
        report["epoch"] = one_epoch(size, device, data, Path(scratch) / "run")
    print(table([report["epoch"]], ["training_images", "seconds", "img_s", "test_robust_acc", "peak_memory_mb"]))
    report["seconds"] = time.perf_counter() - started
    args.out.write_text(json.dumps(report, indent=1))
    failed = [row["method"] for row in report["methods"] if row["error"]]
    print(f"{report['device']}: {report['seconds']:.0f} s; written to {args.out}"
          + (f"; host synchronisation in {', '.join(failed)}" if failed else ""))
    return report


if __name__ == "__main__":
    main()
