"""Extra training data: generated images, unlabelled images with pseudo-labels, or the rest of a training split.

The field's strongest robust models train on more data than the labelled set: robust self-training (Carmon et
al. 2019) pseudo-labels 500K unlabelled images with a standard model, generated-data recipes (Gowal et al. 2021,
Wang et al. 2023) add 1M-20M diffusion samples. Either way a fixed share of every training batch is drawn from
the extra data (``BatchLoader(extra=...)``), and the epoch stays defined by the labelled set.

Sources (``extra.source``):

- a ``.npz`` with arrays ``image`` (N, H, W, C) uint8 and optionally ``label`` (N,), the format generated-data
  releases use; it is read into memory (uint8: 3 KB an image at 32x32);
- a ``.npy`` of images (N, H, W, C) uint8, **memory-mapped**: a batch reads its rows from disk, so 20M images
  need no 60 GB of RAM; labels, if any, in ``<name>.labels.npy`` beside it;
- an ``imagefolder`` tree ``<class>/<image>`` whose class folders are the run's classes;
- ``rest``: the training split outside the run's training subset, with its true labels (for studies).

Python pickles (Carmon et al.'s 500K Tiny-Images release) are never unpickled — loading one can run code; the
refusal says how to convert its arrays. Images stay uint8 until a batch is formed.
"""

from __future__ import annotations

import hashlib
import mmap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atlens.data.tensors import ImageTensors, to_unit_float
from atlens.errors import DataError, DatasetNotFoundError
from atlens.seeding import generator

PICKLE_SUFFIXES = (".pkl", ".pickle", ".p")
CONVERT = ("convert it once, where you trust the file, with: python -c \"import pickle, numpy as np; "
           "d = pickle.load(open('FILE', 'rb')); np.save('images.npy', d['data']); "
           "np.save('images.labels.npy', np.asarray(d['extrapolated_targets']))\" and give extra.source: images.npy")


@dataclass
class ExtraData:
    """Extra images (uint8, NHWC array — possibly memory-mapped — or an NCHW tensor) and their labels.

    ``index`` maps example i to its row of ``images`` (a seeded ``take`` keeps a subset without copying)."""

    images: Any
    labels: torch.Tensor | None
    source: str
    nhwc: bool = True
    index: torch.Tensor | None = None
    true_labels: torch.Tensor | None = field(default=None, repr=False)  # known for ``rest``: pseudo-label accuracy

    def __len__(self) -> int:
        return len(self.index) if self.index is not None else len(self.images)

    def rows(self, indices: torch.Tensor) -> torch.Tensor:
        return indices if self.index is None else self.index[indices]

    def gather(self, indices: torch.Tensor) -> torch.Tensor:
        """The images at ``indices`` as a uint8 [n, C, H, W] tensor (reads only those rows of a memory map)."""
        rows = self.rows(indices)
        if not self.nhwc:
            return self.images[rows]
        order = np.asarray(rows)
        return torch.from_numpy(np.ascontiguousarray(self.images[order])).permute(0, 3, 1, 2)

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (as stored: uint8, [n, C, H, W]; ``to_unit_float`` on the device) and labels of ``indices``."""
        if self.labels is None:
            raise DataError(f"the extra data {self.source} has no labels yet (extra.labels: pseudo labels it first)")
        return self.gather(indices), self.labels[indices]

    def take(self, n: int | None, seed: int) -> ExtraData:
        """A seeded subset of ``n`` examples (all when ``n`` is None or not smaller)."""
        if n is None or n >= len(self):
            return self
        chosen = torch.randperm(len(self), generator=generator(seed, "extra_take"))[:n].sort().values
        return ExtraData(self.images, None if self.labels is None else self.labels[chosen], self.source, self.nhwc,
                         self.rows(chosen), None if self.true_labels is None else self.true_labels[chosen])

    def with_labels(self, labels: torch.Tensor) -> ExtraData:
        return ExtraData(self.images, labels.long(), self.source, self.nhwc, self.index, self.true_labels)

    def digest(self, sample: int = 4096) -> str:
        """SHA-256 of the number of examples and the pixels of up to ``sample`` of them, evenly spaced in example
        order: what identifies the extra data a set of pseudo-labels belongs to, without reading 20M images."""
        n = len(self)
        positions = torch.linspace(0, n - 1, min(n, sample)).round().long().unique() if n else torch.zeros(0).long()
        digest = hashlib.sha256(f"{n}".encode())
        for start in range(0, len(positions), 512):
            digest.update(self.gather(positions[start:start + 512]).contiguous().numpy().tobytes())
        return digest.hexdigest()

    def as_tensors(self, start: int, stop: int) -> ImageTensors:
        """Examples ``start`` to ``stop`` as ImageTensors (labels 0 where none are known yet)."""
        indices = torch.arange(start, min(stop, len(self)))
        labels = self.labels[indices] if self.labels is not None else torch.zeros(len(indices), dtype=torch.long)
        return ImageTensors(self.gather(indices), labels)


def load_extra(source: str, classes: list[str], image_size: int, channels: int,
               rest: ImageTensors | None = None, image_folder: Any = None) -> ExtraData:
    """Open ``source`` (see the module's docstring) for a run whose images are ``channels`` x ``image_size``²
    over ``classes``; ``rest`` is the training split outside the training subset (``source: rest``) and
    ``image_folder(path, classes)`` decodes an imagefolder tree."""
    if source == "rest":
        if rest is None or not len(rest):
            raise DataError("extra.source rest: the training split has no examples outside the training subset; "
                            "train on a subset (data.per_class) or give a file")
        return ExtraData(rest.images, rest.labels, "rest", nhwc=False, true_labels=rest.labels)
    path = Path(source).expanduser()
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise DataError(f"extra.source {path} is a Python pickle; atlens never unpickles a file (loading one can "
                        f"run code). {CONVERT.replace('FILE', str(path))}")
    if not path.exists():
        raise DatasetNotFoundError(f"extra.source {path} does not exist; give a .npz, a .npy of images, an "
                                   f"imagefolder tree, or rest")
    if path.is_dir():
        folder = image_folder(path, classes)
        return ExtraData(folder.images, folder.labels, str(path), nhwc=False)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                key = next((k for k in ("image", "images", "data") if k in arrays.files), None)
                if key is None:
                    raise DataError(f"extra.source {path} holds arrays {', '.join(arrays.files)}; expected image "
                                    f"(N, H, W, C) uint8 and optionally label (N,)")
                images = arrays[key]
                label_key = next((k for k in ("label", "labels") if k in arrays.files), None)
                labels = arrays[label_key] if label_key else None
        elif path.suffix == ".npy":
            images = np.load(path, mmap_mode="r", allow_pickle=False)
            _random_access(images)
            label_path = path.with_name(path.name[: -len(".npy")] + ".labels.npy")
            labels = np.load(label_path, allow_pickle=False) if label_path.is_file() else None
        else:
            raise DataError(f"extra.source {path}: expected a .npz, a .npy, a folder or rest")
    except ValueError as err:  # numpy refuses object arrays (pickled data) with allow_pickle=False
        raise DataError(f"extra.source {path} cannot be read as plain arrays ({err}); atlens never unpickles "
                        f"a file. {CONVERT.replace('FILE', str(path))}") from None
    expected = (image_size, image_size, channels)
    if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise DataError(f"extra.source {path}: images must be uint8 (N, {image_size}, {image_size}, {channels}) "
                        f"like the run's data, got {images.dtype} {tuple(images.shape)}")
    if labels is not None:
        labels = torch.from_numpy(np.asarray(labels).astype(np.int64))
        if labels.shape != (len(images),):
            raise DataError(f"extra.source {path}: labels must be (N,) = ({len(images)},) integers, one per image, "
                            f"got shape {tuple(labels.shape)}")
        bad = torch.nonzero((labels < 0) | (labels >= len(classes))).flatten()
        if len(bad):
            shown = ", ".join(f"{labels[i].item()} (example {i.item()})" for i in bad[:5])
            raise DataError(f"extra.source {path}: labels must be class indices in [0, {len(classes)}); "
                            f"{len(bad)} are not: {shown}" + (", ..." if len(bad) > 5 else ""))
    return ExtraData(images, labels, str(path))


def _random_access(images: np.memmap) -> None:
    """Batches read scattered rows: tell the kernel not to read ahead or map the neighbouring pages of each
    row into the process (which would make a random read of 3 KB cost 64 KB of resident memory)."""
    mapping = getattr(images, "_mmap", None)
    if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        mapping.madvise(mmap.MADV_RANDOM)


@torch.no_grad()
def predict_labels(model: torch.nn.Module, extra: ExtraData, device: torch.device, batch_size: int = 512,
                   progress: Any = None, shard: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """The model's predicted class of every extra image (eval mode, clean inputs): pseudo-labels. With ``shard``
    (rank, world size) only batches rank, rank + world, … are predicted and the other rows are 0, so the sum
    over the ranks is every label, each predicted once."""
    rank, world = shard
    was_training = model.training
    model.eval()
    labels = torch.zeros(len(extra), dtype=torch.long)
    starts = range(rank * batch_size, len(extra), world * batch_size)
    with torch.no_grad():
        for start in (progress(starts) if progress else starts):
            stop = min(start + batch_size, len(extra))
            x = to_unit_float(extra.gather(torch.arange(start, stop)).to(device))
            labels[start:stop] = model(x).argmax(1).cpu()
    model.train(was_training)
    return labels
