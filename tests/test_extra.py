"""Extra training data: batch composition, sources, pseudo-labels, the cross-class sampler and RST's loss."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from atlens.attacks import ThreatModel
from atlens.cli.main import main
from atlens.config import config_from_dict
from atlens.data import BatchLoader, ImageTensors
from atlens.data.extra import ExtraData, load_extra
from atlens.data.loader import ExtraStream
from atlens.data.tensors import to_unit_float
from atlens.errors import ConfigError, DataError
from atlens.runs import load_model
from atlens.training.build import check
from atlens.training.objectives import TRADES, TrainAttack, TrainingBatch
from atlens.training.samplers import CrossClass, Uniform, class_need
from tests.conftest import Interrupt, linear_classifier, stop_after, synthetic_config, train_run

CLASSES = ["a", "b", "c", "d"]


def marked(n: int, value: int, label_offset: int = 0) -> ImageTensors:
    return ImageTensors(torch.full((n, 1, 2, 2), value, dtype=torch.uint8), (torch.arange(n) + label_offset) % 4)


@pytest.mark.parametrize("fraction", [0.5, 0.7])
def test_every_batch_holds_the_configured_share_of_extra_examples_and_the_labelled_set_defines_the_epoch(fraction):
    labelled = marked(100, 0)
    extra = ExtraData(torch.full((30, 1, 2, 2), 255, dtype=torch.uint8), torch.arange(30) % 4, "test", nhwc=False)
    loader = BatchLoader(labelled, 20, shuffle=True, generator=torch.Generator().manual_seed(0),
                         extra=ExtraStream(extra, fraction, Uniform(extra)))
    per_batch = 20 - round(fraction * 20)
    batches = list(loader)
    assert len(batches) == len(loader) == -(-100 // per_batch)
    seen_labelled = 0
    for i, (x, _) in enumerate(batches):
        assert len(x) == 20 == loader.global_size(i)  # filled up from the extra data, the last batch too
        from_extra = int((x.flatten(1)[:, 0] == 1).sum())
        seen_labelled += 20 - from_extra
        if i < len(batches) - 1:
            assert from_extra == round(fraction * 20)
    assert seen_labelled == 100  # every labelled example once per epoch


@pytest.mark.parametrize("world", [2, 3])
def test_each_rank_gathers_and_augments_only_its_rows_of_the_global_batch_as_one_process_has_them(world):
    """Every image distinct (labelled and extra), crops and flips on, global batches of 25 that no world size
    splits evenly: the ranks' batches, interleaved, are the single process's batches (images, augmentation,
    labels), and each rank reads only its rows of the extra data."""
    labelled = ImageTensors(torch.randint(0, 256, (37, 3, 6, 6), dtype=torch.uint8), torch.arange(37) % 4)
    extra = ExtraData(torch.randint(0, 256, (50, 6, 6, 3), dtype=torch.uint8).numpy(), torch.arange(50) % 4, "t")

    def batches(rank, world, read=None):
        data = extra if read is None else CountingExtra(extra, read)
        loader = BatchLoader(labelled, 25, shuffle=True, crop_padding=2, flip=True, shard=(rank, world),
                             generator=torch.Generator().manual_seed(3), extra=ExtraStream(data, 0.4, Uniform(extra)))
        return list(loader)

    whole = batches(0, 1)
    read = []
    shards = [batches(rank, world, read) for rank in range(world)]
    for i, (x, y) in enumerate(whole):
        for rank in range(world):
            assert torch.equal(shards[rank][i][0], x[rank::world]) and torch.equal(shards[rank][i][1], y[rank::world])
    assert sum(read) == 25 * len(whole) - len(labelled)  # every extra row drawn is read once, by one rank


class CountingExtra(ExtraData):
    def __init__(self, data: ExtraData, read: list) -> None:
        super().__init__(data.images, data.labels, data.source)
        self.read = read

    def gather(self, indices):
        self.read.append(len(indices))
        return super().gather(indices)


def test_a_prefetching_loader_with_augmentation_on_a_generator_of_its_own_gives_the_same_batches():
    """What CUDA runs (the next batch staged during the step, crops drawn on a device generator), on the CPU."""
    labelled = ImageTensors(torch.randint(0, 256, (40, 3, 6, 6), dtype=torch.uint8), torch.arange(40) % 4)
    extra = ExtraData(torch.randint(0, 256, (30, 6, 6, 3), dtype=torch.uint8).numpy(), torch.arange(30) % 4, "t")

    def epoch(prefetch):
        loader = BatchLoader(labelled, 16, shuffle=True, crop_padding=2, flip=True, prefetch=prefetch,
                             generator=torch.Generator(), augment_generator=torch.Generator(),
                             extra=ExtraStream(extra, 0.5, Uniform(extra)), shard=(1, 2))
        loader.seed(7)
        return list(loader)

    plain, prefetched = epoch(False), epoch(True)
    assert len(plain) == len(prefetched) == 5
    for (x, y), (px, py) in zip(plain, prefetched):
        assert x.dtype == torch.float32 and torch.equal(x, px) and torch.equal(y, py)


def test_an_epoch_of_a_number_of_examples_is_cut_from_fresh_permutations_as_the_references_sampler():
    """Carmon et al.'s SemiSupervisedSampler (and Wang et al.'s copy): ceil(50,000 / batch) mixed batches, the labelled
    part of each a slice of a permutation of the labelled set, a new permutation whenever one runs out."""
    labelled = ImageTensors(torch.zeros(100, 1, 2, 2, dtype=torch.uint8), torch.arange(100) % 4)
    extra = ExtraData(torch.full((30, 1, 2, 2), 255, dtype=torch.uint8), torch.arange(30) % 4, "test", nhwc=False)

    def loader(examples, fraction=0.5, seed=0):
        return BatchLoader(labelled, 20, shuffle=True, generator=torch.Generator().manual_seed(seed),
                           extra=ExtraStream(extra, fraction, Uniform(extra)) if fraction else None,
                           epoch_examples=examples)

    short = loader(130)  # 7 batches of 20, 10 labelled each: 70 of the 100 labelled examples, none twice
    chunks = list(short.labelled_indices())
    assert len(short) == len(chunks) == 7 and all(len(c) == 10 for c in chunks)
    seen = torch.cat(chunks)
    assert len(seen.unique()) == len(seen) == 70
    assert [len(x) for x, _ in loader(130)] == [20] * 7 and all(short.global_size(i) == 20 for i in range(7))
    # the same batches as the first 7 of an epoch that is one pass over the labelled set (same draws, in order)
    whole = loader(None)
    assert len(whole) == 10
    for (a, ya), (b, yb) in zip(loader(130), whole, strict=False):
        assert torch.equal(a, b) and torch.equal(ya, yb)
    # longer than the labelled set: every example once in each permutation, the second one fresh
    long = list(loader(500).labelled_indices())
    assert len(long) == 25
    first, second = torch.cat(long[:10]), torch.cat(long[10:20])
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(100)) and not torch.equal(first, second)
    # without extra data: batches of labelled examples alone, the last of each permutation smaller
    plain = loader(250, fraction=0)
    assert len(plain) == 13 and [len(c) for c in plain.labelled_indices()] == [20] * 5 + [20] * 5 + [20] * 3
    odd = BatchLoader(ImageTensors(torch.zeros(50, 1, 2, 2), torch.arange(50) % 4), 20, shuffle=True,
                      epoch_examples=100)
    sizes = [len(c) for c in odd.labelled_indices()]
    assert sizes == [20, 20, 10, 20, 20] == [odd.global_size(i) for i in range(5)]


def test_fraction_zero_is_the_run_without_extra_data_bit_for_bit(tmp_path):
    base = {"optim.epochs": 2, "data": {**synthetic_config()["data"], "per_class": 48}}
    _, plain = train_run(tmp_path / "plain", **base)
    _, zero = train_run(tmp_path / "zero", extra={"source": "rest", "fraction": 0.0}, **base)

    def rows(name):
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    assert rows("plain") == rows("zero")
    assert zero["extra"]["fraction"] == 0.0


def test_pseudo_labels_are_the_teachers_predictions_stored_with_its_identity_and_resume_is_exact(tmp_path):
    data = {**synthetic_config()["data"], "per_class": 48}
    train_run(tmp_path / "teacher", **{"optim.epochs": 2, "data": data, "objective": {"name": "standard"}})
    extra = {"source": "rest", "labels": "pseudo", "teacher": str(tmp_path / "teacher"), "fraction": 0.5,
             "sampler": {"name": "cross_class", "every": 1}}
    # an epoch of 300 examples (the references' definition): 5 mixed batches of 64, 160 of the 192 labelled examples
    overrides = {"optim.epochs": 3, "data": {**data, "epoch": 300}, "extra": extra}
    run, summary = train_run(tmp_path / "full", **overrides)
    stored = torch.from_numpy(np.load(run.path / "extra-labels.npy"))
    record = json.loads((run.path / "extra-labels.json").read_text())
    teacher = load_model(tmp_path / "teacher", "best")
    rest = torch.cat([load_rest(data)])
    with torch.no_grad():
        assert torch.equal(stored, teacher(rest).argmax(1))
    assert record["path"] == str(tmp_path / "teacher") and len(record["sha256"]) == 64 and record["examples"] == 64
    assert 0 <= record["agreement_with_true_labels"] <= 1
    methods = json.loads((run.path / "methods.json").read_text())
    assert methods["extra"] == summary["extra"]
    assert summary["extra"] == {"source": "rest", "examples": 64, "fraction": 0.5, "labels": "pseudo",
                                "sampler": {"name": "cross_class", "every": 1, "strength": 1.0}, "teacher": record}
    rows = run.read_metrics()
    assert all(len(r["extra_class_probabilities"]) == 4 for r in rows)
    from atlens.report import write_report

    page = write_report([run.path], tmp_path / "report.html").read_text()
    assert "Extra data: 64 examples from rest, pseudo-labelled by " in page
    assert "cross_class (every 1, strength 1.0) sampler" in page
    assert f"({torch.backends.cpu.get_cpu_capability()}), 2 threads." in page  # the machine of its wall time
    # interrupted after epoch 2 (before it is written), then resumed: the same run, bit for bit
    with pytest.raises(Interrupt):
        train_run(tmp_path / "cut", callbacks=[stop_after(2)], **overrides)
    resumed, _ = train_run(tmp_path / "cut", **overrides)
    assert without_seconds(resumed.read_metrics()) == without_seconds(rows)

    # labelled once by `atlens label`, the labels serve further runs as their extra.teacher: the same run
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(synthetic_config(**overrides)))
    assert main(["label", str(config), "--out", str(tmp_path / "labels")]) == 0
    assert torch.equal(torch.from_numpy(np.load(tmp_path / "labels" / "extra-labels.npy")), stored)
    assert json.loads((tmp_path / "labels" / "extra-labels.json").read_text()) == record
    reused, reused_summary = train_run(tmp_path / "reused", **{**overrides, "extra": {
        **extra, "teacher": str(tmp_path / "labels")}})
    assert without_seconds(reused.read_metrics()) == without_seconds(rows)
    assert reused_summary["extra"]["teacher"] == {**record, "reused_from": str(tmp_path / "labels")}
    # ... but not labels of other extra data (as many examples, other pixels), and never over existing labels
    with pytest.raises(ConfigError, match="holds pseudo-labels of other extra data"):
        train_run(tmp_path / "other", **{**overrides, "data": {**overrides["data"], "noise": 0.2},
                                         "extra": {**extra, "teacher": str(tmp_path / "labels")}})
    assert not (tmp_path / "other").exists()
    assert main(["label", str(config), "--out", str(tmp_path / "labels")]) == 2


def without_seconds(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def load_rest(data: dict) -> torch.Tensor:
    from atlens.data import prepare_data

    options = {k: v for k, v in data.items() if k not in ("name", "batch_size", "per_class")}
    prepared = prepare_data("synthetic", per_class=data["per_class"], options=options, extra="rest")
    return to_unit_float(prepared.extra.batch(torch.arange(len(prepared.extra)))[0])


def test_files_npz_and_memory_mapped_npy_are_read_and_pickles_refused(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (10, 2, 2, 1), dtype=np.uint8)
    labels = np.arange(10) % 4
    np.savez(tmp_path / "gen.npz", image=images, label=labels)
    from_npz = load_extra(str(tmp_path / "gen.npz"), CLASSES, 2, 1)
    assert torch.equal(from_npz.gather(torch.tensor([3])), torch.from_numpy(images[3:4]).permute(0, 3, 1, 2))
    assert from_npz.labels.tolist() == labels.tolist()
    np.save(tmp_path / "big.npy", images)
    np.save(tmp_path / "big.labels.npy", labels)
    mapped = load_extra(str(tmp_path / "big.npy"), CLASSES, 2, 1)
    assert isinstance(mapped.images, np.memmap)  # rows are read from disk when a batch is formed
    taken = mapped.take(4, seed=0)
    x, y = taken.batch(torch.tensor([0, 1, 2, 3]))
    assert x.dtype == torch.uint8 and x.shape == (4, 1, 2, 2)  # as stored: converted on the device
    rows = taken.rows(torch.arange(4)).numpy()  # which rows of the file the subset holds, distinct and sorted
    assert len(set(rows.tolist())) == 4 and list(rows) == sorted(rows)
    assert torch.equal(x, torch.from_numpy(images[rows]).permute(0, 3, 1, 2))  # the source's rows, pixel for pixel
    assert y.tolist() == labels[rows].tolist()  # with their labels
    assert torch.equal(taken.batch(torch.tensor([2]))[0], x[2:3])  # and one row alone reads the same pixels
    with pytest.raises(DataError, match="images must be uint8 \\(N, 32, 32, 1\\)"):
        load_extra(str(tmp_path / "big.npy"), CLASSES, 32, 1)
    (tmp_path / "ti_500K.pickle").write_bytes(pickle.dumps({"data": images, "extrapolated_targets": labels}))
    with pytest.raises(DataError, match="never unpickles a file.*np.save\\('images.npy'"):
        load_extra(str(tmp_path / "ti_500K.pickle"), CLASSES, 2, 1)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="cannot be read as plain arrays.*never unpickles"):
        load_extra(str(tmp_path / "objects.npy"), CLASSES, 2, 1)
    with pytest.raises(ConfigError, match="extra.labels pseudo needs extra.teacher"):
        config_from_dict(synthetic_config(extra={"source": "rest", "labels": "pseudo"}))
    with pytest.raises(ConfigError, match="unknown sampler 'balanced'"):
        check(config_from_dict(synthetic_config(extra={"source": "rest", "sampler": "balanced"})))


def test_the_cross_class_sampler_follows_its_definition_on_a_hand_built_case():
    labels = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)  # class counts 6, 3, 1
    sampler = CrossClass(ExtraData(torch.zeros(10, 1, 1, 1), labels, "hand", nhwc=False), 3, strength=2.0)
    assert torch.allclose(sampler.class_probabilities(), torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64))
    matrix = torch.tensor([[1.0, 0.5, -0.2], [0.5, 1.0, 0.1], [-0.2, 0.1, 1.0]])
    need = class_need(matrix)  # s_c = Σ_{j≠c} max(C[c, j], 0)
    assert torch.allclose(need, torch.tensor([0.5, 0.6, 0.1]))
    sampler.need = need
    mean = need.mean()
    expected = torch.tensor([6, 3, 1]) * (need / mean) ** 2
    assert torch.allclose(sampler.class_probabilities(), (expected / expected.sum()).double(), atol=1e-6)
    drawn = sampler.draw(20000, torch.Generator().manual_seed(0))
    frequencies = torch.bincount(labels[drawn], minlength=3).double() / 20000
    assert torch.allclose(frequencies, sampler.class_probabilities(), atol=0.01)
    within = torch.bincount(drawn[labels[drawn] == 0], minlength=6)[:6].double()
    assert (within / within.sum() - 1 / 6).abs().max() < 0.02  # uniform within a class
    sampler.strength = 0.0
    assert torch.allclose(sampler.class_probabilities(), torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64))


def test_rst_is_trades_on_both_parts_weighted_as_paper_001_eq_6():
    """ℓ_RST = ℓ_TRADES(x, y) + λ·ℓ_TRADES(x̃, ỹ): a batch with a share f of extra examples and the plain batch
    mean (Carmon et al.'s code) is (1 − f)·ℓ_RST with λ = f / (1 − f)."""
    torch.manual_seed(0)
    model = linear_classifier(torch.randn(4, 6))
    objective = TRADES(TrainAttack(ThreatModel("linf", 0.1), 3, None, True, None), beta=6.0)
    x, x_adv = torch.rand(6, 6, 1, 1), torch.rand(6, 6, 1, 1)
    extra, extra_adv = torch.rand(2, 6, 1, 1), torch.rand(2, 6, 1, 1)
    y, y_tilde = torch.tensor([0, 1, 2, 3, 0, 1]), torch.tensor([2, 3])

    def trades(clean, adv, labels):  # ℓ_TRADES averaged over its examples, by hand
        p, q = F.softmax(model(clean), 1), F.softmax(model(adv), 1)
        return F.cross_entropy(model(clean), labels) + 6.0 * (p * (p.log() - q.log())).sum(1).mean()

    mixed = TrainingBatch(torch.cat([x, extra]), torch.cat([x_adv, extra_adv]), torch.cat([y, y_tilde]))
    f = 2 / 8
    lam = f / (1 - f)
    rst = trades(x, x_adv, y) + lam * trades(extra, extra_adv, y_tilde)
    assert objective.loss(model, mixed).loss.item() == pytest.approx(((1 - f) * rst).item(), rel=1e-5)
