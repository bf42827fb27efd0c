"""benchmarks/gpu_check.py, the check for the first GPU, in its tiny CPU version: every part runs and reports."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # trains every method a few steps and one small epoch


def test_the_gpu_check_runs_its_cpu_version_and_writes_every_part(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.setenv("ATLENS_CACHE", str(tmp_path / "cache"))
    sys.modules.pop("gpu_check", None)
    import gpu_check

    report = gpu_check.main(["--device", "cpu", "--out", str(tmp_path / "check.json")])
    assert json.loads((tmp_path / "check.json").read_text()) == json.loads(json.dumps(report))
    throughput = report["throughput"]
    assert [(r["model"], r["precision"]) for r in throughput] == [
        (model, precision) for model in gpu_check.CPU["models"] for precision in gpu_check.PRECISIONS]
    assert all(r["atlens_img_s"] > 0 and r["ratio"] == r["atlens_img_s"] / r["reference_img_s"] for r in throughput)
    assert [r["method"] for r in report["methods"]] == list(gpu_check.METHODS)
    assert all(r["error"] is None and r["steps_per_second"] > 0 and not r["sync_checked"] for r in report["methods"])
    assert report["epoch"]["training_images"] == gpu_check.CPU["epoch"] and report["epoch"]["img_s"] > 0
