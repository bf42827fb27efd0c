"""Peak memory of training batches with a memory-mapped extra-data file of 1M images, against the labelled
set alone.

Writes a .npy of N uint8 32x32x3 images (3 GB for N = 1M; kept in --folder for reuse) with labels beside
it, then, each in a fresh process, forms --batches training batches of 128 (crop and flip on) from 1,000
labelled images alone, and from the same images with half of every batch drawn from the memory-mapped
file. Prints each process's peak resident memory (VmHWM), at the end its anonymous part (RssAnon: what the
process itself allocated) and its file-backed part (RssFile: pages of the mapped file, which the kernel
reclaims as it needs), and the ratio of the peaks.

    python benchmarks/extra_memory.py [--images 1000000] [--batches 200] [--folder /tmp/atlens-extra]
                                      [--drop-caches]

``--drop-caches`` (as root) empties the page cache before each process, so the mapped file starts cold as it
would on a training machine: right after writing it, its pages sit in the cache as large folios, and touching
one row maps a whole folio into the process (file-backed RSS the kernel can reclaim, not memory atlens holds).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import sys, time, torch
from atlens.data import BatchLoader, ImageTensors
from atlens.data.extra import load_extra
from atlens.data.loader import ExtraStream
from atlens.training.samplers import Uniform

torch.set_num_threads(1)
path, batches = sys.argv[1], int(sys.argv[2])
labelled = ImageTensors(torch.randint(0, 256, (1000, 3, 32, 32), dtype=torch.uint8), torch.arange(1000) % 10)
extra = None
if path != "none":
    data = load_extra(path, [str(i) for i in range(10)], 32, 3)
    extra = ExtraStream(data, 0.5, Uniform(data))
loader = BatchLoader(labelled, 128, shuffle=True, crop_padding=4, flip=True,
                     generator=torch.Generator().manual_seed(0), extra=extra)
formed, started = 0, time.perf_counter()
while formed < batches:
    for x, y in loader:
        formed += 1
        if formed == batches:
            break
seconds = time.perf_counter() - started
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(int(status["VmHWM"].split()[0]) // 1024, int(status["RssAnon"].split()[0]) // 1024,
      int(status["RssFile"].split()[0]) // 1024, f"{seconds:.2f}")
"""


def write_images(folder: Path, n: int) -> Path:
    path = folder / f"extra-{n}.npy"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    images = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+", dtype=np.uint8, shape=(n, 32, 32, 3))
    rng = np.random.default_rng(0)
    for start in range(0, n, 50_000):  # written in chunks: the writer never holds the file in memory either
        stop = min(start + 50_000, n)
        images[start:stop] = rng.integers(0, 256, (stop - start, 32, 32, 3), dtype=np.uint8)
    images.flush()
    del images
    np.save(folder / f"extra-{n}.labels.npy", (np.arange(n) % 10).astype(np.int64))
    path.with_suffix(".tmp.npy").rename(path)
    return path


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as err:
        raise SystemExit(f"--drop-caches needs root ({err})") from None


def measure(path: str, batches: int, cold: bool) -> tuple[int, int, int, float]:
    if cold:
        drop_caches()
    done = subprocess.run([sys.executable, "-c", CHILD, path, str(batches)], capture_output=True, text=True,
                          check=True)
    peak, anonymous, mapped, seconds = done.stdout.split()
    return int(peak), int(anonymous), int(mapped), float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/atlens-extra"))
    parser.add_argument("--drop-caches", action="store_true", help="start each process with a cold page cache")
    args = parser.parse_args()
    started = time.perf_counter()
    path = write_images(args.folder, args.images)
    print(f"{path}: {path.stat().st_size / 1e9:.2f} GB ({time.perf_counter() - started:.0f} s to have it)")
    alone = measure("none", args.batches, args.drop_caches)
    extra = measure(str(path), args.batches, args.drop_caches)
    for name, (peak, anonymous, mapped, seconds) in (("labelled alone", alone),
                                                     (f"+ {args.images:,} memory-mapped", extra)):
        print(f"{name:>28}: peak RSS {peak} MB (anonymous {anonymous} MB, file-backed {mapped} MB at the end), "
              f"{args.batches} batches in {seconds} s")
    print(f"ratio of peak RSS (extra / alone): {extra[0] / alone[0]:.2f}")


if __name__ == "__main__":
    main()
