import json
import pickle

import pytest
import torch

import atlens
from atlens.config import config_from_dict
from atlens.errors import CheckpointError, ConfigError, NonFiniteLossError
from atlens.runs import load_checkpoint, save_checkpoint
from atlens.training.schedules import learning_rate
from atlens.training.summary import summarize
from atlens.training.trainer import Trainer
from tests.conftest import synthetic_config


class Interrupt(Exception):
    pass


def train(tmp_path, name, hooks=None, **overrides):
    trainer = Trainer(config_from_dict(synthetic_config(**overrides)), tmp_path / name, hooks=hooks)
    trainer.start()
    return trainer, trainer.fit()


@pytest.fixture(scope="module")
def pgd_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    trainer, summary = train(tmp, "pgd", **{"optim.epochs": 6, "checkpoint": {"every": 3}})
    return trainer, summary


def test_short_pgd_at_run_beats_chance_and_writes_the_run_directory(pgd_run):
    trainer, summary = pgd_run
    run = trainer.run
    rows = run.read_metrics()
    assert [r["epoch"] for r in rows] == list(range(1, 7))
    required = {"epoch", "lr", "train_loss", "train_robust_acc", "test_clean_acc", "test_robust_acc", "seconds"}
    assert required <= set(rows[0])
    assert summary["best_robust_acc"] > 0.25 + 0.2  # 4 classes: chance is 0.25
    assert rows[-1]["train_robust_acc"] > rows[0]["train_robust_acc"]
    for name in ("best", "last", "epoch-3", "epoch-6"):
        assert (run.checkpoints / f"{name}.pt").is_file()
    assert run.curves.is_file() and run.config.is_file()
    saved = json.loads(run.summary.read_text())
    assert saved["robust_gap"] == pytest.approx(saved["best_robust_acc"] - saved["last_robust_acc"])
    assert saved["selection"] == "test_robust_acc"
    assert not list(run.checkpoints.glob("*.tmp"))


def test_piecewise_schedule_scales_with_run_length():
    lrs = [learning_rate("piecewise", 0.1, 20, e, [0.5, 0.75]) for e in range(20)]
    assert lrs[9] == 0.1 and lrs[10] == pytest.approx(0.01) and lrs[15] == pytest.approx(0.001)
    assert learning_rate("piecewise", 0.1, 200, 99.9, [0.5, 0.75]) == 0.1
    assert learning_rate("piecewise", 0.1, 200, 100, [0.5, 0.75]) == pytest.approx(0.01)
    assert learning_rate("cosine", 0.1, 10, 10) == pytest.approx(0.0)
    assert learning_rate("cosine", 0.1, 10, 5) == pytest.approx(0.05)


def test_load_model_round_trips_checkpoints(pgd_run):
    trainer, summary = pgd_run
    model = atlens.load_model(trainer.run.path, "last")
    assert not model.training
    for a, b in zip(model.state_dict().values(), trainer.model.state_dict().values()):
        assert torch.equal(a, b)
    best = atlens.load_model(trainer.run.path, "best")
    state = load_checkpoint(trainer.run.checkpoints / "best.pt")
    assert state["epoch"] == summary["best_epoch"]
    by_path = atlens.load_model(trainer.run.checkpoints / "epoch-3.pt")
    x = torch.rand(4, 1, 8, 8)
    assert best(x).shape == by_path(x).shape == (4, 4)
    with pytest.raises(CheckpointError, match="available: best, epoch-3, epoch-6, last"):
        atlens.load_model(trainer.run.path, "epoch-99")


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path):
    _, full = train(tmp_path, "full", **{"data.val_split": 0.25})

    def interrupt_in_epoch_three(trainer, epoch, row):
        if epoch == 3:
            trainer.run.append_metrics(row)  # what a crash between metrics and checkpoint leaves
            raise Interrupt

    with pytest.raises(Interrupt):
        train(tmp_path, "cut", hooks=[interrupt_in_epoch_three], **{"data.val_split": 0.25})
    cfg = config_from_dict(synthetic_config(**{"data.val_split": 0.25}))
    resumed = Trainer(cfg, tmp_path / "cut")
    resumed.resume()
    assert resumed.epoch == 2
    summary = resumed.fit()
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.run.read_metrics()]
    expected = [{k: v for k, v in r.items() if k != "seconds"}
                for r in Trainer(cfg, tmp_path / "full").run.read_metrics()]
    assert strip == expected
    assert {k: v for k, v in summary.items() if k != "total_seconds"} == \
        {k: v for k, v in full.items() if k != "total_seconds"}
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert summary["selection"] == "val_robust_acc"


def test_same_seed_same_run(tmp_path):
    _, a = train(tmp_path, "a", **{"optim.epochs": 2})
    _, b = train(tmp_path, "b", **{"optim.epochs": 2})
    assert {k: v for k, v in a.items() if k != "total_seconds"} == {k: v for k, v in b.items() if k != "total_seconds"}


def test_every_objective_trains(tmp_path):
    for name in ("standard", "trades", "fast_at"):
        trainer, summary = train(tmp_path, name, **{"objective": {"name": name}, "optim.epochs": 2})
        assert summary["best_clean_acc"] > 0.3
        rows = trainer.run.read_metrics()
        # fast AT is watched for catastrophic overfitting through test FGSM accuracy
        assert ("test_fgsm_acc" in rows[-1]) == (name == "fast_at")
        assert ("catastrophic_overfitting_epoch" in summary) == (name == "fast_at")
        # a standard-trained model (a KD teacher) is selected by clean accuracy
        assert summary["selection"] == ("test_clean_acc" if name == "standard" else "test_robust_acc")


def test_catastrophic_overfitting_is_flagged_in_the_metrics_and_the_console(tmp_path, capsys):
    trainer = Trainer(config_from_dict(synthetic_config(**{"objective": {"name": "fast_at"}, "optim.epochs": 3})),
                      tmp_path / "co")
    trainer.start()
    original = trainer.train_epoch

    def train_epoch(epoch):  # the measured accuracies replaced by a trace that collapses at epoch 3
        row = original(epoch)
        row["test_robust_acc"], row["test_fgsm_acc"] = {0: (0.4, 0.5), 1: (0.45, 0.55), 2: (0.02, 0.9)}[epoch]
        return row

    trainer.train_epoch = train_epoch
    summary = trainer.fit()
    rows = trainer.run.read_metrics()
    assert [r.get("catastrophic_overfitting", False) for r in rows] == [False, False, True]
    assert summary["catastrophic_overfitting_epoch"] == 3
    assert "catastrophic overfitting at epoch 3" in capsys.readouterr().out


def test_start_refuses_to_overwrite_a_run(pgd_run):
    trainer, _ = pgd_run
    with pytest.raises(ConfigError, match="already holds a run"):
        Trainer(trainer.cfg, trainer.run.path).start()


def test_non_finite_loss_stops_with_a_clear_error(tmp_path):
    with pytest.raises(NonFiniteLossError, match="lower optim.lr"):
        train(tmp_path, "nan", **{"optim.lr": 1e30, "optim.epochs": 2})


def test_checkpoints_never_unpickle_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (exec, ("raise SystemExit('code ran')",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "atlens-checkpoint-1", "x": Payload()}))
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(evil)


def test_checkpoint_save_is_atomic_and_mismatch_is_explained(tmp_path, pgd_run):
    path = tmp_path / "c.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}}, path)
    assert load_checkpoint(path)["model"]["w"].tolist() == [1.0, 1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    trainer, _ = pgd_run
    state = load_checkpoint(trainer.run.checkpoints / "last.pt")
    state["model"].pop("head.bias")
    state["model"]["head.weight"] = torch.zeros(3, 3)
    save_checkpoint(state, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="missing head.bias; shape mismatch head.weight"):
        atlens.load_model(tmp_path / "broken.pt")


def test_summary_gap_and_selection():
    rows = [{"epoch": i, "train_robust_acc": 0.1 * i, "test_robust_acc": r, "test_clean_acc": 0.5,
             "val_robust_acc": v, "seconds": 1} for i, (r, v) in enumerate([(0.2, 0.3), (0.4, 0.5), (0.3, 0.4)], 1)]
    s = summarize(rows, "val_robust_acc")
    assert s["best_epoch"] == 2 and s["robust_gap"] == pytest.approx(0.1) and s["last_robust_acc"] == 0.3
