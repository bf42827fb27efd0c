"""Never replacing a result is the library's rule, for the Python API as for the CLI: refused without overwrite,
kept aside with it, and put back when the command that was to replace it does not finish."""

from __future__ import annotations

import json

import pytest
import torch

import atlens
from atlens.errors import ConfigError
from atlens.runs import is_replaced, replacing
from tests.conftest import linear_classifier


def _tiny():
    model = linear_classifier(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
    data = (torch.tensor([[[[0.9]], [[0.1]]], [[[0.2]], [[0.8]]]]), torch.tensor([0, 1]))
    return model, data


def test_the_api_refuses_to_replace_an_evaluation_and_keeps_the_earlier_one_with_overwrite(tmp_path):
    model, data = _tiny()
    atlens.evaluate(model, data, attacks=["clean"], out=tmp_path, label="m")
    first = (tmp_path / "eval-m.json").read_text()
    with pytest.raises(ConfigError, match="already holds eval-m.json, eval-m-budget.png; pass --overwrite"):
        atlens.evaluate(model, data, attacks=["clean", "pgd5"], out=tmp_path, label="m")
    assert (tmp_path / "eval-m.json").read_text() == first  # nothing computed, nothing moved
    atlens.evaluate(model, data, attacks=["clean", "pgd5"], out=tmp_path, label="m", overwrite=True)
    kept = [p for p in tmp_path.iterdir() if is_replaced(p) and p.suffix == ".json"]
    assert len(kept) == 1 and kept[0].read_text() == first
    assert "pgd5" in json.loads((tmp_path / "eval-m.json").read_text())["attacks"]


def test_the_api_refuses_to_replace_a_cas_matrix(tmp_path):
    model, data = _tiny()
    atlens.cas(model, data, attack="clean", plot=tmp_path / "cas.png")
    with pytest.raises(ConfigError, match="already holds cas.json"):
        atlens.cas(model, data, attack="clean", plot=tmp_path / "cas.png")
    atlens.cas(model, data, attack="clean", plot=tmp_path / "cas.png", overwrite=True)
    assert sorted(p.name.split(".replaced-")[0] for p in tmp_path.iterdir() if is_replaced(p)) == ["cas", "cas"]


def test_an_interrupted_replacement_leaves_the_earlier_result_in_place(tmp_path, monkeypatch):
    model, data = _tiny()
    atlens.evaluate(model, data, attacks=["clean"], out=tmp_path, label="m")
    first = (tmp_path / "eval-m.json").read_text()
    import atlens.evaluation.suite as suite

    def interrupted(*args, **kwargs):  # Ctrl-C at the write site
        raise KeyboardInterrupt

    monkeypatch.setattr(suite, "write_json", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atlens.evaluate(model, data, attacks=["pgd5"], out=tmp_path, label="m", overwrite=True)
    assert (tmp_path / "eval-m.json").read_text() == first
    assert not [p for p in tmp_path.iterdir() if is_replaced(p)]


def test_a_failed_replacement_puts_every_earlier_file_back_with_its_figure(tmp_path):
    (tmp_path / "a.json").write_text("old a")
    (tmp_path / "a.png").write_text("old a figure")
    (tmp_path / "b.json").write_text("old b")
    with pytest.raises(RuntimeError), replacing(tmp_path, ["a.json", "b.json"], overwrite=True):
        assert not (tmp_path / "a.json").exists()  # set aside while the work runs
        (tmp_path / "a.png").write_text("new a figure")
        raise RuntimeError("failed before a.json was written")
    assert [(tmp_path / n).read_text() for n in ("a.json", "a.png", "b.json")] == ["old a", "old a figure", "old b"]
    assert not [p for p in tmp_path.iterdir() if is_replaced(p)]
    with replacing(tmp_path, ["a.json"], overwrite=True):  # a finished replacement keeps the pair aside
        (tmp_path / "a.json").write_text("new a")
    assert sorted(p.read_text() for p in tmp_path.iterdir() if is_replaced(p)) == ["old a", "old a figure"]


def test_a_replaced_result_never_appears_in_the_report_as_a_checkpoint(tmp_path):
    from atlens.cli.main import main
    from atlens.report import write_report
    from tests.conftest import train_run

    run, _ = train_run(tmp_path / "run", **{"optim.epochs": 1})
    for extra in ([], ["--overwrite"]):
        assert main(["eval", str(run.path), "--attacks", "clean", "--examples", "8", "--curve", *extra]) == 0
    assert [p.name for p in run.path.glob("eval-best.replaced-*")]  # the first result, kept aside
    page = write_report([run.path]).read_text()
    assert ".replaced-" not in page and page.count("<td>best</td>") == 1
