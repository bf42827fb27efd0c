"""Cost of CAS relative to the bare PGD-20 attack it rides on, its peak memory against N, and the
cost of the instance-wise matrix on 10,000 examples with 512-d attributions.

Time: CAS (atlens.analysis.compute_cas) and a bare loop of PGD-20 over the same batches alternate in
one process on a PreActResNet-18 (width 16, 32x32 inputs). Memory: each N runs in a fresh
subprocess, which reports its peak resident set size.

    python benchmarks/cas_cost.py [--examples 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from atlens.analysis import compute_cas, instance_matrix
from atlens.attacks import ThreatModel
from atlens.data import BatchLoader, ImageTensors
from atlens.evaluation import PGDAttack
from atlens.models import build_model


def setup(n: int):
    torch.manual_seed(0)
    model = build_model("preact_resnet18", 10, 3, 32, [0.5] * 3, [0.25] * 3, {"width": 16}).eval()
    model = model.to(memory_format=torch.channels_last)  # as atlens.load_model returns it
    data = ImageTensors(torch.rand(n, 3, 32, 32), torch.arange(n) % 10)
    return model, data, PGDAttack(ThreatModel("linf", 8 / 255), steps=20)


def peak_rss_mb() -> float:
    """Peak resident set size since the last reset_peak() (Linux VmHWM)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> None:
    """Start a new peak from the current RSS, so the import-time peak of torch does not hide ours."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def worker(kind: str, n: int) -> None:
    if kind == "cas":
        model, data, attack = setup(n)
        reset_peak()
        before = peak_rss_mb()
        compute_cas(model, data, [str(i) for i in range(10)], attack, batch_size=128)
        print(json.dumps({"n": n, "peak_mb": peak_rss_mb(), "baseline_mb": before}))
    else:
        torch.manual_seed(0)
        vectors, labels = torch.randn(n, 512), torch.arange(n) % 10
        reset_peak()
        before = peak_rss_mb()
        start = time.perf_counter()
        instance_matrix(vectors, labels, 10)
        print(json.dumps({"n": n, "seconds": time.perf_counter() - start, "peak_mb": peak_rss_mb(),
                          "baseline_mb": before}))


def run_worker(kind: str, n: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", kind, str(n)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]))
        return

    model, data, attack = setup(args.examples)
    classes = [str(i) for i in range(10)]

    def bare() -> float:
        start = time.perf_counter()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            for x, y in BatchLoader(data, 128):
                attack(model, x, y)
        return time.perf_counter() - start

    def cas() -> float:
        start = time.perf_counter()
        compute_cas(model, data, classes, attack, batch_size=128)
        return time.perf_counter() - start

    bare(), cas()  # warm-up
    bare_times, cas_times = [], []
    for _ in range(args.repeats):
        bare_times.append(bare())
        cas_times.append(cas())
    b, c = statistics.median(bare_times), statistics.median(cas_times)
    print(f"threads={torch.get_num_threads()} PreActResNet-18 w16, {args.examples} examples, PGD-20, batch 128")
    print(f"bare PGD-20 : {b:6.2f} s   ({args.examples / b:.1f} ex/s)")
    print(f"CAS         : {c:6.2f} s   ({args.examples / c:.1f} ex/s)")
    print(f"ratio CAS/bare: {c / b:.3f}")

    for n in (256, 1024):
        r = run_worker("cas", n)
        print(f"CAS peak RSS with N={n:5d}: {r['peak_mb']:.0f} MB (after setup {r['baseline_mb']:.0f} MB, "
              f"growth {r['peak_mb'] - r['baseline_mb']:.0f} MB)")
    r = run_worker("icas", 10_000)
    print(f"I-CAS, 10,000 x 512-d: {r['seconds']:.2f} s, peak RSS {r['peak_mb']:.0f} MB "
          f"(+{r['peak_mb'] - r['baseline_mb']:.0f} MB over the inputs)")


if __name__ == "__main__":
    main()
