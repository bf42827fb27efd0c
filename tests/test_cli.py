import json
import subprocess
import sys

import pytest
import yaml

from atlens.cli.main import DEMO_CONFIG, main
from atlens.config import load_config
from tests.conftest import synthetic_config


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(synthetic_config(**{"optim.epochs": 2})))
    return path


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "atlens.cli.main", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("train", "demo"):
        assert command in out.stdout


def test_train_then_resume_a_finished_run(config_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(config_file), "--out", str(out), "--set", "eval.examples=64"]) == 0
    printed = capsys.readouterr().out
    assert "Best" in printed and "robust acc" in printed
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["eval"]["examples"] == 64 and saved["data"]["classes"] == 4  # resolved, overrides applied
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2
    assert main(["train", "--resume", str(out)]) == 0  # nothing left to do, still a clean exit
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_dry_run_prints_the_resolved_config(config_file, tmp_path, capsys):
    assert main(["train", str(config_file), "--dry-run", "--out", str(tmp_path / "never")]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["model"] == {"name": "cnn", "width": 8, "hidden": 16}
    assert not (tmp_path / "never").exists()


def test_bad_input_is_one_clear_line(config_file, tmp_path, capsys):
    assert main(["train", str(config_file), "--set", "attack.epsilon=-1"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "atlens: error: attack.epsilon must be >= 0, got -1.0"
    assert main(["train", "--resume", str(tmp_path / "missing")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["train"]) == 2


def test_demo_preset_is_valid():
    cfg = load_config(DEMO_CONFIG)
    assert cfg.data.name == "digits" and cfg.objective.name == "pgd_at"
