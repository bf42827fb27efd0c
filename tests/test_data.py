import pytest
import torch
from PIL import Image

from atlens.data import BatchLoader, ImageTensors, load_dataset, prepare_data, random_crop_flip
from atlens.errors import ConfigError, DatasetNotFoundError


def test_digits_is_real_data_in_unit_range():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert len(train) + len(test) == 1797
    x, y = train[0]
    assert x.shape == (1, 8, 8) and 0 <= x.min() and x.max() <= 1 and 0 <= y < 10


def test_validation_split_is_seeded_and_disjoint():
    a = prepare_data("digits", val_split=0.1, seed=3)
    b = prepare_data("digits", val_split=0.1, seed=3)
    c = prepare_data("digits", val_split=0.1, seed=4)
    assert a.val_indices == b.val_indices != c.val_indices
    assert len(a.val) == round(0.1 * 1300) and len(a.train) + len(a.val) == 1300
    counted = prepare_data("digits", val_split=100, seed=0)
    assert len(counted.val) == 100


def test_per_class_subset_takes_the_first_examples_of_each_class():
    full = load_dataset("digits", "train")
    data = prepare_data("digits", per_class=5)
    assert torch.bincount(data.train.labels).tolist() == [5] * 10
    for c in range(10):
        ours = data.train.images[data.train.labels == c]
        assert torch.equal(ours, full.images[full.labels == c][:5])


def test_per_class_start_draws_the_next_disjoint_subset():
    full = load_dataset("digits", "train")
    first = prepare_data("digits", per_class=5)
    second = prepare_data("digits", per_class=5, per_class_start=5)
    assert torch.bincount(second.train.labels).tolist() == [5] * 10
    for c in range(10):
        assert torch.equal(second.train.images[second.train.labels == c], full.images[full.labels == c][5:10])
    # no image of the second subset is in the first
    flat = {tuple(x.flatten().tolist()) for x in first.train.images}
    assert not any(tuple(x.flatten().tolist()) in flat for x in second.train.images)


def test_per_class_range_beyond_a_class_names_the_keys():
    smallest = int(torch.bincount(load_dataset("digits", "train").labels).min())
    with pytest.raises(ConfigError, match=r"data.per_class_start=.*lower data.per_class_start"):
        prepare_data("digits", per_class=5, per_class_start=smallest - 2)


def test_crop_flip_shapes_and_identity_without_padding():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 8, 8)
    assert torch.equal(random_crop_flip(x, 0, False, gen), x)
    out = random_crop_flip(x, 2, True, gen)
    assert out.shape == x.shape
    flipped = random_crop_flip(x, 0, True, gen)
    for a, b in zip(flipped, x):
        assert torch.equal(a, b) or torch.equal(a, b.flip(2))


def test_crop_is_a_shifted_window_of_the_padded_image():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    gen = torch.Generator().manual_seed(1)
    out = random_crop_flip(x, 1, False, gen)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    windows = [padded[..., i:i + 4, j:j + 4] for i in range(3) for j in range(3)]
    assert any(torch.equal(out, w) for w in windows)


def test_loader_covers_every_example_once_per_epoch_and_shards_the_global_batch():
    data = ImageTensors(torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10))
    seen = torch.cat([y for _, y in BatchLoader(data, 4, shuffle=True)])
    assert sorted(seen.tolist()) == list(range(10))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    r0 = [y for _, y in BatchLoader(data, 4, shuffle=True, generator=g1, shard=(0, 2))]
    r1 = [y for _, y in BatchLoader(data, 4, shuffle=True, generator=g2, shard=(1, 2))]
    whole = [y for _, y in BatchLoader(data, 4, shuffle=True, generator=torch.Generator().manual_seed(5))]
    for a, b, w in zip(r0, r1, whole):
        assert sorted(torch.cat([a, b]).tolist()) == sorted(w.tolist())


def test_drop_last_skips_the_short_batch_and_a_different_few_examples_each_epoch():
    data = ImageTensors(torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10))
    assert len(BatchLoader(data, 4)) == 3 and BatchLoader(data, 4).last_batch == 2
    loader = BatchLoader(data, 4, shuffle=True, generator=torch.Generator().manual_seed(0), drop_last=True)
    assert len(loader) == 2 and loader.last_batch == 4
    epochs = [[y for _, y in loader] for _ in range(2)]
    assert all(len(e) == 2 and all(len(y) == 4 for y in e) for e in epochs)
    kept = [set(torch.cat(e).tolist()) for e in epochs]
    assert kept[0] != kept[1]  # the shuffle decides which two examples miss an epoch
    assert len(BatchLoader(ImageTensors(data.images[:8], data.labels[:8]), 4, drop_last=True)) == 2


def test_imagefolder_reads_a_class_tree(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLENS_CACHE", str(tmp_path / "cache"))
    for split in ("train", "test"):
        for c, color in (("cat", 0), ("dog", 255)):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (6, 6), (color, i, 0)).save(tmp_path / split / c / f"{i}.png")
    data = prepare_data("imagefolder", root=str(tmp_path))
    assert data.info.classes == ["cat", "dog"] and data.info.image_size == 6
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape == (6, 3, 6, 6)
    assert data.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.train.images[3, 0, 0, 0] == 255
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1  # the test split is decoded when first read
    assert data.test.images.shape == (6, 3, 6, 6) and len(list((tmp_path / "cache").glob("*.pt"))) == 2
    again = prepare_data("imagefolder", root=str(tmp_path))  # from the cache
    assert torch.equal(again.train.images, data.train.images)


def test_an_imagefolder_subset_decodes_only_its_own_files(tmp_path, monkeypatch):
    import atlens.data.sources as sources
    from atlens.data.sources import channel_stats

    monkeypatch.setenv("ATLENS_CACHE", str(tmp_path / "cache"))
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(5):
                Image.new("RGB", (4, 4), (40 * i, 255 * (c == "dog"), 9)).save(tmp_path / split / c / f"{i}.png")
    decoded = []
    real = sources._decode
    monkeypatch.setattr(sources, "_decode", lambda paths, size: decoded.extend(paths) or real(paths, size))
    data = prepare_data("imagefolder", root=str(tmp_path), per_class=2, per_class_start=1)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in decoded) == [
        "train/cat/1.png", "train/cat/2.png", "train/dog/1.png", "train/dog/2.png"]
    # normalisation is measured on the images the run trains on: red 40 and 80 twice, green 0 and 255, blue 9
    mean, std = data.info.mean, data.info.std
    assert mean == pytest.approx((60 / 255, 127.5 / 255, 9 / 255)) and (mean, std) == channel_stats(data.train.images)
    assert std[2] == 1.0  # a constant channel is left unscaled
    evaluated = data.test.evaluation_subset(2, seed=0)
    assert len(evaluated.images) == 2 and len(decoded) == 6  # two test images, not ten


def test_missing_datasets_say_how_to_get_them(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="data.download=true"):
        prepare_data("cifar10", root=str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="train/<class>/<image>"):
        prepare_data("imagefolder", root=str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="tiny-imagenet"):
        prepare_data("tinyimagenet", root=str(tmp_path))


def test_synthetic_classes_are_learnable_structure():
    data = prepare_data("synthetic", options={"classes": 3, "image_size": 8, "channels": 1})
    means = torch.stack([data.train.images[data.train.labels == c].mean(0) for c in range(3)])
    assert (means[0] - means[1]).abs().mean() > 0.05


def test_fashionmnist_reads_gzipped_idx_files(tmp_path):
    import gzip
    import struct

    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 6), ("t10k", 4)):
        pixels = bytes((i * 7) % 256 for i in range(n * 28 * 28))
        with gzip.open(raw / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + pixels)
        with gzip.open(raw / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 2049, n) + bytes(i % 10 for i in range(n)))
    data = prepare_data("fashionmnist", root=str(tmp_path))
    assert data.train.images.shape == (6, 1, 28, 28) and len(data.test) == 4
    assert data.train.labels.tolist() == [0, 1, 2, 3, 4, 5] and data.info.classes[0] == "T-shirt/top"
