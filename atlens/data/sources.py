"""Registered datasets. Each builder returns (info, {"train": ..., "test": ...}) as tensors."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from atlens.data.tensors import DatasetInfo, ImageTensors
from atlens.errors import DataError, DatasetNotFoundError
from atlens.files import atomic_write
from atlens.progress import progress
from atlens.registry import Registry

Splits = dict[str, ImageTensors]
DATASETS: Registry[tuple[DatasetInfo, Splits]] = Registry("dataset", skip=("root", "download"))

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
SVHN_STATS = ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970))
STL10_STATS = ((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713))
TINY_STATS = ((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821))


def check_local_root(name: str, root: str | None) -> None:
    """For a dataset that only reads a local tree (imagefolder), refuse a root that does not exist, before any
    work — a dry run included."""
    builder = DATASETS.get(name)
    if getattr(builder, "reads_local_tree", False) and root is not None and not Path(root).expanduser().is_dir():
        raise DatasetNotFoundError(f"data.root {root} does not exist: the {name} dataset reads a local "
                                   f"<train>/<class>/<image> and <test>/<class>/<image> tree; point data.root at one "
                                   f"(--set data.root=PATH)")


def _root(root: str | None, name: str) -> Path:
    return Path(root or os.environ.get("ATLENS_DATA", "data")).expanduser() / ("" if root else name)


def _torchvision(cls_name: str, root: Path, download: bool, **kwargs):
    import torchvision.datasets as tvd

    try:
        return getattr(tvd, cls_name)(str(root), download=download, **kwargs)
    except RuntimeError as err:
        if download:
            raise DatasetNotFoundError(f"could not download {cls_name} to {root}: {err}") from None
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        tree = (f" {root} holds {', '.join(found[:3])}: for a <split>/<class>/<image> tree use the imagefolder dataset "
                f"(data.name: imagefolder, or --data imagefolder --root {root})." if {"train", "test"} & set(found)
                else " For a local <split>/<class>/<image> tree use the imagefolder dataset.")
        raise DatasetNotFoundError(
            f"{cls_name} (torchvision's files) not found under {root}. Point data.root (--root for eval, cas and "
            f"analyze) at a copy, or let atlens train download it (--set data.download=true).{tree}"
        ) from None


def _hwc(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).contiguous()


@DATASETS.register("cifar10")
def cifar10(root: str | None, download: bool) -> tuple[DatasetInfo, Splits]:
    path = _root(root, "cifar10")
    splits = {}
    for split in ("train", "test"):
        ds = _torchvision("CIFAR10", path, download, train=split == "train")
        splits[split] = ImageTensors(_hwc(ds.data), torch.tensor(ds.targets))
    return DatasetInfo("cifar10", CIFAR10_CLASSES, *CIFAR10_STATS, 32, 3, 4, True), splits


@DATASETS.register("cifar100")
def cifar100(root: str | None, download: bool) -> tuple[DatasetInfo, Splits]:
    path = _root(root, "cifar100")
    splits, classes = {}, []
    for split in ("train", "test"):
        ds = _torchvision("CIFAR100", path, download, train=split == "train")
        splits[split], classes = ImageTensors(_hwc(ds.data), torch.tensor(ds.targets)), ds.classes
    return DatasetInfo("cifar100", classes, *CIFAR100_STATS, 32, 3, 4, True), splits


@DATASETS.register("svhn")
def svhn(root: str | None, download: bool) -> tuple[DatasetInfo, Splits]:
    path = _root(root, "svhn")
    splits = {}
    for split in ("train", "test"):
        ds = _torchvision("SVHN", path, download, split=split)
        splits[split] = ImageTensors(torch.from_numpy(ds.data), torch.from_numpy(ds.labels))
    # digits must not be mirrored
    return DatasetInfo("svhn", [str(i) for i in range(10)], *SVHN_STATS, 32, 3, 4, False), splits


@DATASETS.register("stl10")
def stl10(root: str | None, download: bool, image_size: int = 96) -> tuple[DatasetInfo, Splits]:
    path = _root(root, "stl10")
    splits, classes = {}, []
    for split in ("train", "test"):
        ds = _torchvision("STL10", path, download, split=split)
        images = torch.from_numpy(ds.data)
        if image_size != images.shape[-1]:
            images = _resize_uint8(images, image_size)
        splits[split], classes = ImageTensors(images, torch.from_numpy(ds.labels)), ds.classes
    return DatasetInfo("stl10", classes, *STL10_STATS, image_size, 3, image_size // 8, True), splits


@DATASETS.register("fashionmnist")
def fashionmnist(root: str | None, download: bool) -> tuple[DatasetInfo, Splits]:
    """Reads torchvision's layout ``root/FashionMNIST/raw/``. Debian's ``dataset-fashion-mnist`` ships
    the idx files gzipped (/usr/share/datasets/fashion-mnist/): link or copy them there; atlens
    decompresses them next to the archives, which torchvision needs."""
    path = _root(root, "fashionmnist")
    raw = path / "FashionMNIST" / "raw"
    for archive in raw.glob("*-ubyte.gz") if raw.is_dir() else []:
        target = archive.with_suffix("")
        if not target.exists():
            import gzip
            import shutil

            with gzip.open(archive) as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink)
    splits, classes = {}, []
    for split in ("train", "test"):
        ds = _torchvision("FashionMNIST", path, download, train=split == "train")
        splits[split], classes = ImageTensors(ds.data[:, None].clone(), ds.targets.clone()), ds.classes
    return DatasetInfo("fashionmnist", classes, (0.2860,), (0.3530,), 28, 1, 2, True), splits


def _resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    import torch.nn.functional as F

    resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True)
    return resized.round().clamp(0, 255).to(torch.uint8)


def _decode(paths: list[Path], image_size: int | None) -> torch.Tensor:
    from PIL import Image

    arrays = []
    for p in (progress(paths, "decoding image files", "image") if len(paths) >= 1000 else paths):
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                if image_size and im.size != (image_size, image_size):
                    im = im.resize((image_size, image_size), Image.BILINEAR)
                arrays.append(np.asarray(im))
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise DataError(f"{p} is not a readable image ({err}); remove or replace it") from None
        if arrays[-1].shape != arrays[0].shape:
            raise DataError(
                f"{p} is {arrays[-1].shape[1]}x{arrays[-1].shape[0]} but {paths[0]} is "
                f"{arrays[0].shape[1]}x{arrays[0].shape[0]}; give data.image_size=N to resize every image to NxN")
    return _hwc(np.stack(arrays))


def _cached_decode(paths: list[Path], image_size: int | None) -> torch.Tensor:
    """Decoded images are cached (tensor file, loaded without unpickling code) by file list."""
    key = hashlib.sha1("\n".join(f"{p}:{p.stat().st_mtime_ns}" for p in paths).encode())
    key.update(str(image_size).encode())
    cache_dir = Path(os.environ.get("ATLENS_CACHE", Path.home() / ".cache" / "atlens"))
    cache = cache_dir / f"images-{key.hexdigest()[:16]}.pt"
    if cache.is_file():
        try:
            entry = torch.load(cache, weights_only=True)
            images = entry["images"]
            if entry["count"] == len(paths) == len(images) and entry["sha1"] == _digest(images):
                return images
        except Exception:  # noqa: BLE001 (any damage means: decode again)
            pass
        cache.unlink(missing_ok=True)  # damaged or from another file list: rebuilt below
    images = _decode(paths, image_size)
    try:
        entry = {"images": images, "count": len(paths), "sha1": _digest(images)}
        atomic_write(cache, lambda handle: torch.save(entry, handle))
    except OSError:
        pass  # a read-only home only costs the decode next time
    return images


def _digest(images: torch.Tensor) -> str:
    return hashlib.sha1(images.contiguous().numpy().tobytes()).hexdigest()


_IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}


class ImageFiles(ImageTensors):
    """Images of files, decoded (and cached) only when ``images`` is first read, so a subset of a large tree
    (``data.per_class``, an evaluation subset) decodes only its own files."""

    def __init__(self, paths: list[Path], labels: torch.Tensor, image_size: int | None,
                 classes: list[str] | None = None) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} files but {len(labels)} labels")
        self.paths, self.labels, self.image_size, self.classes = paths, labels.long(), image_size, classes
        self._images: torch.Tensor | None = None

    @property
    def images(self) -> torch.Tensor:  # type: ignore[override]
        if self._images is None:
            self._images = _cached_decode(self.paths, self.image_size)
        return self._images

    def subset(self, indices: torch.Tensor) -> ImageTensors:
        if self._images is not None:
            return ImageTensors(self._images[indices], self.labels[indices], self.classes)
        chosen = torch.as_tensor(indices).reshape(-1).tolist()
        return ImageFiles([self.paths[i] for i in chosen], self.labels[indices], self.image_size, self.classes)

    def decoded(self) -> ImageTensors:
        return ImageTensors(self.images, self.labels, self.classes)

    def shape(self) -> tuple[int, int]:
        """(channels, side) of the decoded images, read from the first file's header alone."""
        from PIL import Image

        try:
            with Image.open(self.paths[0]) as im:
                width, height = im.size
        except (OSError, ValueError) as err:
            raise DataError(f"{self.paths[0]} is not a readable image ({err}); remove or replace it") from None
        if self.image_size:
            return 3, self.image_size
        if width != height:
            raise DataError(f"{self.paths[0]} is {width}x{height}, not square; give data.image_size=N to resize every "
                            f"image to NxN")
        return 3, width


def folder_split(split_dir: Path, classes: list[str], image_size: int | None) -> ImageFiles:
    """The images of ``split_dir/<class>/`` for each of ``classes`` (labels: the class's position), decoded when
    first read."""
    paths, labels = [], []
    found = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{split_dir} has class folder(s) {', '.join(unknown[:5])} that the training "
                                   f"split lacks; every class needs training images")
    for label, name in enumerate(classes):
        files = sorted(p for p in (split_dir / name).rglob("*") if p.suffix.lower() in _IMAGE_EXTENSIONS)
        if not files:
            raise DataError(f"{split_dir / name} holds no images; remove the empty class folder or "
                                       f"add its images (a class without examples cannot be learned or evaluated)")
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise DatasetNotFoundError(f"no images found under {split_dir}/<class>/")
    return ImageFiles(paths, torch.tensor(labels), image_size)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images; a channel that never varies (e.g. grey images stored as RGB)
    has std 0, and normalising by it would divide by zero, so it is left unscaled."""
    pixels = images.float().div(255).transpose(0, 1).reshape(images.shape[1], -1)
    return tuple(pixels.mean(1).tolist()), tuple(s if s > 1e-6 else 1.0 for s in pixels.std(1).tolist())


@DATASETS.register("imagefolder")
def imagefolder(
    root: str | None,
    download: bool,
    train_dir: str = "train",
    test_dir: str = "test",
    image_size: int | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    crop_padding: int = 4,
    flip: bool = True,
) -> tuple[DatasetInfo, Splits]:
    """Any ``root/<split>/<class>/<image>`` tree; class order is the sorted folder names."""
    if root is None:
        raise DatasetNotFoundError("the imagefolder dataset needs data.root=<folder with train/ and test/>")
    base = Path(root).expanduser()
    if not (base / train_dir).is_dir() or not (base / test_dir).is_dir():
        raise DatasetNotFoundError(
            f"{base} must contain {train_dir}/<class>/<image> and {test_dir}/<class>/<image> folders"
        )
    classes = sorted(p.name for p in (base / train_dir).iterdir() if p.is_dir())
    splits = {s: folder_split(base / d, classes, image_size) for s, d in (("train", train_dir), ("test", test_dir))}
    channels, size = splits["train"].shape()
    # mean/std None: prepare_data measures them on the training images the run uses, so that a subset of a large
    # tree (data.per_class) decodes only its own files
    stats = (tuple(mean), tuple(std)) if mean is not None and std is not None else (None, None)
    info = DatasetInfo("imagefolder", classes, *stats, size, channels, crop_padding, flip)
    return info, splits


imagefolder.reads_local_tree = True  # type: ignore[attr-defined]  (checked by --dry-run: nothing to download)


@DATASETS.register("tinyimagenet")
def tinyimagenet(root: str | None, download: bool) -> tuple[DatasetInfo, Splits]:
    """The tiny-imagenet-200 layout: train/<wnid>/images/*, val/images + val_annotations.txt."""
    base = _root(root, "tiny-imagenet-200")
    if not (base / "train").is_dir() or not (base / "val" / "val_annotations.txt").is_file():
        raise DatasetNotFoundError(
            f"Tiny-ImageNet not found under {base}: unpack tiny-imagenet-200.zip there "
            f"(train/, val/val_annotations.txt) and set data.root"
        )
    wnids = sorted(p.name for p in (base / "train").iterdir() if p.is_dir())
    train = folder_split(base / "train", wnids, 64)
    rows = [line.split("\t")[:2] for line in (base / "val" / "val_annotations.txt").read_text().splitlines()]
    index = {w: i for i, w in enumerate(wnids)}
    paths = [base / "val" / "images" / name for name, _ in rows]
    test = ImageFiles(paths, torch.tensor([index[w] for _, w in rows]), 64)
    words = base / "words.txt"
    names = dict(line.split("\t", 1) for line in words.read_text().splitlines()) if words.is_file() else {}
    classes = [names.get(w, w).split(",")[0].strip() for w in wnids]
    return DatasetInfo("tinyimagenet", classes, *TINY_STATS, 64, 3, 8, True), {"train": train, "test": test}


@DATASETS.register("digits")
def digits(root: str | None, download: bool, test_size: int = 497, split_seed: int = 0) -> tuple[DatasetInfo, Splits]:
    """scikit-learn's 1,797 8x8 handwritten digits (real data that ships with the package)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0
    labels = torch.tensor(bunch.target)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(split_seed))
    test_idx, train_idx = order[:test_size].sort().values, order[test_size:].sort().values
    splits = {"train": ImageTensors(images[train_idx], labels[train_idx]),
              "test": ImageTensors(images[test_idx], labels[test_idx])}
    # 8x8 digits: no crop (it would cut strokes off) and no mirroring
    return DatasetInfo("digits", [str(i) for i in range(10)], (0.3,), (0.38,), 8, 1, 0, False), splits


@DATASETS.register("synthetic")
def synthetic(
    root: str | None,
    download: bool,
    classes: int = 10,
    image_size: int = 16,
    channels: int = 3,
    train_size: int = 1000,
    test_size: int = 500,
    noise: float = 0.15,
    seed: int = 0,
) -> tuple[DatasetInfo, Splits]:
    """Generated images: each class is a smooth random template plus per-image noise and shift."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(classes, channels, 4, 4, generator=gen)
    templates = torch.nn.functional.interpolate(coarse, size=(image_size, image_size), mode="bilinear")

    def sample(n: int) -> ImageTensors:
        labels = torch.arange(n) % classes
        labels = labels[torch.randperm(n, generator=gen)]
        brightness = 0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=gen)
        pixel_noise = noise * torch.randn(n, channels, image_size, image_size, generator=gen)
        images = templates[labels] * brightness + pixel_noise
        return ImageTensors(images.clamp(0, 1), labels)

    info = DatasetInfo("synthetic", [f"class{i}" for i in range(classes)], (0.5,) * channels, (0.25,) * channels,
                       image_size, channels, 0, False)
    return info, {"train": sample(train_size), "test": sample(test_size)}


@DATASETS.register("crossclass")
def crossclass(
    root: str | None,
    download: bool,
    classes: int = 3,
    copies: int = 1,
    mu: float = 1.0,
    sigma: float = 0.5,
    train_size: int = 3000,
    test_size: int = 3000,
    seed: int = 0,
) -> tuple[DatasetInfo, Splits]:
    """The theory's synthetic distribution (exclusive and cross-class features; see atlens.theory),
    as [N, d, 1, 1] feature vectors (d channels of one pixel, so ``mlp`` with ``hidden: []`` is the
    linear model of the theory). Unbounded: attacks do not clamp to [0, 1]."""
    from atlens.theory.distribution import CrossClassModel

    model = CrossClassModel(classes, copies, mu, sigma)
    gen = torch.Generator().manual_seed(seed)
    splits = {}
    for split, n in (("train", train_size), ("test", test_size)):
        x, y = model.sample(n, gen)
        splits[split] = ImageTensors(x.view(n, model.dim, 1, 1), y)
    info = DatasetInfo("crossclass", [f"class{i + 1}" for i in range(classes)], (0.0,), (1.0,), 1, model.dim,
                       bounds=None)
    return info, splits
