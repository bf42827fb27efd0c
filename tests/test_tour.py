"""What a researcher meets on the tour: a missing data tree said before any work, no litter from a failed
start, plain progress lines off a terminal, results never written into a training run's folder by an outside
model, and a note where long work would otherwise be silent."""

from __future__ import annotations

from pathlib import Path

import pytest

from atlens.cli.main import main
from atlens.errors import ConfigError
from atlens.progress import progress
from tests.conftest import train_run

ROOT = Path(__file__).resolve().parent.parent


def test_a_dry_run_refuses_a_data_tree_that_does_not_exist(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(ROOT / "configs" / "cpu" / "cifar10_pgd_at.yaml"), "--dry-run"]) == 2  # bad input
    err = capsys.readouterr().err
    assert "data.root data/cifar10-png does not exist" in err and "--set data.root=PATH" in err


def test_a_run_that_fails_at_the_door_leaves_no_folder(tmp_path):
    with pytest.raises(ConfigError, match="criterion.adv_teacher: .* does not exist"):
        train_run(tmp_path / "run", criterion={"name": "kd", "adv_teacher": str(tmp_path / "missing")})
    assert not (tmp_path / "run").exists()


def test_progress_off_a_terminal_is_two_plain_lines(capsys):
    assert list(progress(range(3), "attacking")) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "\r" not in err and err.splitlines()[0] == "attacking (3 batches) ..."
    assert err.splitlines()[1].startswith("attacking: done in ")


def test_an_outside_model_never_writes_into_a_training_run(tmp_path, capsys):
    run, _ = train_run(tmp_path / "run", **{"optim.epochs": 1})
    code = main(["cas", "--model", "torchvision:resnet18", "--data", "synthetic", "--examples", "20", "--device",
                 "cpu", "--out", str(run.path)])
    assert code == 2
    assert "is a training run; an outside model's results go to a folder of their own" in capsys.readouterr().err


def test_the_end_of_training_says_what_it_computes_before_the_attribution_matrices(tmp_path, capsys):
    train_run(tmp_path / "run", **{"optim.epochs": 1, "analysis": {"cas_every": 1}})
    assert "attribution matrices of the best (epoch 1) and last (epoch 1) models" in capsys.readouterr().out
