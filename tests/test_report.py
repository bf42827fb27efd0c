"""``atlens analyze`` and ``atlens report`` on a tiny trained run; the page is checked in Chromium when present."""

from __future__ import annotations

import base64
import functools
import io
import json
import re
import shutil
import subprocess

import pytest
import yaml
from PIL import Image

from atlens.cli.main import main
from tests.conftest import synthetic_config

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def analysed_run(tmp_path_factory):
    """A 3-epoch run with CAS tracking, an evaluation and three analyses."""
    root = tmp_path_factory.mktemp("report")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(synthetic_config(**{
        "optim.epochs": 3, "analysis": {"cas_every": 1}, "checkpoint": {"every": 1},
        "reported": {"source": "a paper", "table": "Table 9", "best_robust_acc": 47.8, "last_robust_acc": 42.5,
                     "cas_best": 25.6, "cas_last": 9.0}})))
    run = root / "run"
    assert main(["train", str(config), "--out", str(run)]) == 0
    assert main(["eval", str(run), "--attacks", "clean,fgsm,pgd10"]) == 0
    assert main(["analyze", str(run), "--what", "linearity,landscape", "--examples", "64"]) == 0
    # the final model against its first epoch: 33 examples right under one, wrong under the other
    assert main(["analyze", str(run), "--what", "gradcam", "--checkpoints", "best,epoch-1", "--examples", "128"]) == 0
    return run


def images_of(page: str) -> list[bytes]:
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert all(s.startswith("data:image/png;base64,") for s in sources), "every figure is embedded"
    return [base64.b64decode(s.split(",", 1)[1]) for s in sources]


def distinct(analysed_run) -> list[str]:
    """best and last, or best alone when the best epoch was the last (the same checkpoint is analysed once)."""
    summary = json.loads((analysed_run / "summary.json").read_text())
    return ["best"] if summary["best_epoch"] == summary["epochs"] else ["best", "last"]


def test_analyze_writes_json_and_figures_for_each_analysis(analysed_run):
    for name, checkpoints in (("linearity", set(distinct(analysed_run))), ("landscape", set(distinct(analysed_run))),
                              ("gradcam", {"best", "epoch-1"})):
        result = json.loads((analysed_run / "analysis" / f"{name}.json").read_text())
        assert result["seconds"] >= 0 and set(result["checkpoints"]) == checkpoints
    gradcam = json.loads((analysed_run / "analysis" / "gradcam.json").read_text())
    assert 0 < len(gradcam["indices"]) <= 8 and gradcam["first_right_second_wrong"] >= len(gradcam["indices"])
    assert (analysed_run / "analysis" / "gradcam.png").is_file()
    assert (analysed_run / "analysis" / "linearity.png").is_file()
    assert (analysed_run / "analysis" / "landscape.png").is_file()


def test_analyze_all_checkpoints_and_clear_errors(analysed_run, capsys):
    assert main(["analyze", str(analysed_run), "--what", "linearity", "--checkpoints", "all", "--examples", "32"]) == 2
    assert "already holds linearity.json; pass --overwrite" in capsys.readouterr().err  # nothing replaced unasked
    assert main(["analyze", str(analysed_run), "--what", "linearity", "--checkpoints", "all", "--examples", "32",
                 "--overwrite"]) == 0
    result = json.loads((analysed_run / "analysis" / "linearity.json").read_text())
    assert list(result["checkpoints"]) == ["epoch-1", "epoch-2", "epoch-3", *distinct(analysed_run)]
    assert [c["epoch"] for c in result["checkpoints"].values()][:3] == [1, 2, 3]
    assert main(["analyze", str(analysed_run), "--what", "saliency"]) == 2
    assert "unknown analysis saliency; choose from lsc, gradcam" in capsys.readouterr().err
    assert main(["analyze", str(analysed_run), "--what", "gradcam", "--checkpoints", "best,last,epoch-1"]) == 2
    assert "shows one model or compares two" in capsys.readouterr().err


def test_report_has_every_section_with_data_and_no_broken_image(analysed_run, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", str(analysed_run), "--out", str(out)]) == 0
    page = out.read_text()
    for section in ("Robust and clean accuracy", "RA Best", "SA Diff", "Cross-class attribution (CAS)",
                    "ΔCAS (best − last)", "Evaluation (accuracy under attack, %)", "PGD-10",
                    "Local linearity", "Input loss landscape", "Grad-CAM", "training curves", "config",
                    "what the run went through", "how it ended", "<td>finished</td>"):
        assert section in page, section
    # the paper's numbers sit beside the measured ones, with Diff computed
    assert "<td>run (paper)</td><td>–</td><td>47.80</td><td>42.50</td><td>5.30</td>" in page
    assert "<td>run (paper)</td><td>–</td><td>25.60</td><td>9.00</td><td>–</td>" in page
    pictures = images_of(page)
    # curves, the CAS matrices (best, last and their difference, unless best is the last epoch), three analyses
    cas_figures = len(list((analysed_run / "analysis").glob("cas-*.png")))
    assert cas_figures in (2, 3) and len(pictures) == 1 + cas_figures + 3
    assert all(p.startswith(PNG) and Image.open(io.BytesIO(p)).size for p in pictures)  # readable images


def test_report_leaves_out_sections_without_data_and_compares_runs(analysed_run, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.yaml", "metrics.jsonl", "summary.json"):
        shutil.copy(analysed_run / name, bare / name)
    summary = json.loads((bare / "summary.json").read_text())
    for key in ("cas_best", "cas_last", "delta_cas"):
        summary.pop(key)
    (bare / "summary.json").write_text(json.dumps(summary))
    (bare / "eval-last.json").write_text(json.dumps({"examples": 10, "attacks": {"cw": {"accuracy": 0.5}}}))
    out = tmp_path / "both.html"
    assert main(["report", str(analysed_run), str(bare), "--out", str(out)]) == 0
    page = out.read_text()
    assert "runs compared" in page and page.count("<h2 id=") == 2
    bare_section = page.split("<h2 id='bare'>")[1]
    assert "Analyses" not in bare_section and "<img" not in bare_section
    # evaluation columns are the union over runs; a run without an attack shows a dash there
    evaluation = page.split("Evaluation (accuracy under attack, %)")[1].split("</table>")[0]
    assert "<th>CW∞</th>" in evaluation and "<th>PGD-10</th>" in evaluation
    assert "<td>bare</td><td>last</td><td>10</td><td>–</td><td>–</td><td>50.00</td><td>–</td>" in evaluation
    cas_table = page.split("Cross-class attribution")[1].split("</table>")[0]
    assert "<td>run</td>" in cas_table and "bare" not in cas_table  # only the run that tracked CAS


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_report_renders_in_headless_chromium(analysed_run, tmp_path):
    page = tmp_path / "report.html"
    assert main(["report", str(analysed_run), "--out", str(page)]) == 0
    # a probe script reports through the title how many images failed to decode
    probe = ("<script>window.addEventListener('load', () => { const imgs = [...document.images]; "
             "document.title = 'images ' + imgs.length + ' broken ' + "
             "imgs.filter(i => !i.complete || i.naturalWidth === 0).length; });</script>")
    page.write_text(page.read_text().replace("</body>", probe + "</body>"))
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    title = re.search(r"<title>(.*?)</title>", dom).group(1)
    # curves, the CAS matrices (2 or 3: no difference map when best is the last epoch), three analyses
    cas_figures = len(list((analysed_run / "analysis").glob("cas-*.png")))
    assert title == f"images {1 + cas_figures + 3} broken 0", title


def test_markdown_table_holds_the_summary_numbers_and_the_papers(tmp_path, capsys):
    run = tmp_path / "hand"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"reported": {"best_robust_acc": 47.8, "last_robust_acc": 42.5,
                                                                  "delta_cas": 16.6}}))
    (run / "summary.json").write_text(json.dumps({
        "best_epoch": 28, "best_robust_acc": 0.237, "last_robust_acc": 0.193, "robust_gap": 0.044,
        "best_clean_acc": 0.343, "last_clean_acc": 0.405, "clean_gap": -0.062,
        "cas_best": 10.19, "cas_last": 8.96, "delta_cas": 1.23, "total_seconds": 1234.4}))
    # a summary written before windows were kept: the windowed gap comes from the metrics. 20 epochs, so the
    # window is the last 2 evaluations: best window (epochs 5-6) 23.5 %, last (19-20) 19.5 %: gap 4.00 points
    robust = {5: 0.237, 6: 0.233, 19: 0.193, 20: 0.197}
    (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "test_robust_acc": robust.get(e, 0.2),
                                                           "test_clean_acc": 0.4}) + "\n" for e in range(1, 21)))
    assert main(["report", str(run), "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| run | best epoch | RA Best |") and lines[1] == "|" + "---|" * 13
    assert lines[0].endswith("| ΔCAS | window gap | s |")
    assert lines[2] == ("| hand | 28 | 23.70 | 19.30 | 4.40 | 34.30 | 40.50 | -6.20 | 10.19 | 8.96 | +1.23 "
                        "| 4.00 | 1234 |")
    assert lines[3] == "| hand (paper) | – | 47.80 | 42.50 | 5.30 | – | – | – | – | – | +16.60 | – | – |"
    assert not (run / "report.html").exists()
    out = tmp_path / "tables" / "study.md"
    assert main(["report", str(run), "--markdown", "--out", str(out)]) == 0
    assert out.read_text().splitlines()[2] == lines[2] and "![runs compared](study.png)" in out.read_text()
    assert (tmp_path / "tables" / "study.png").read_bytes().startswith(PNG)


def test_reports_escape_every_value_and_show_wrong_types_as_text(analysed_run, tmp_path, capsys):
    edited = tmp_path / "edited<b>"
    edited.mkdir()
    for name in ("config.yaml", "metrics.jsonl"):
        shutil.copy(analysed_run / name, edited / name)
    summary = json.loads((analysed_run / "summary.json").read_text())
    summary.update({"catastrophic_overfitting_epoch": "<script>alert(1)</script>", "best_robust_acc": "n/a",
                    "cas_best": "<i>x</i>|y"})
    (edited / "summary.json").write_text(json.dumps(summary))
    out = tmp_path / "page.html"
    assert main(["report", str(edited), "--out", str(out)]) == 0
    page = out.read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<td>n/a</td>" in page and "edited&lt;b&gt;" in page
    capsys.readouterr()
    assert main(["report", str(edited), "--markdown"]) == 0
    table = capsys.readouterr().out
    assert "&lt;i&gt;x&lt;/i&gt;\\|y" in table and "edited&lt;b&gt;" in table
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert all(line.replace("\\|", "").count(" | ") == rows[0].count(" | ") for line in rows)


def test_markdown_aggregates_replicates_over_seeds_and_subsets(tmp_path, capsys):
    """Runs that differ only in seed or training subset are one configuration: mean ± sample sd by hand."""
    def hand_run(name, config, best, last, cas_best):
        run = tmp_path / name
        run.mkdir()
        (run / "config.yaml").write_text(yaml.safe_dump(config))
        (run / "summary.json").write_text(json.dumps({
            "best_epoch": 20, "best_robust_acc": best, "last_robust_acc": last, "robust_gap": best - last,
            "cas_best": cas_best}))
        return str(run)

    second_subset = {"seed": 1, "runtime": {"threads": 1}, "data": {"per_class_start": 100}}
    smoothing = {"seed": 0, "criterion": {"name": "label_smoothing", "smoothing": 0.1}}
    runs = [hand_run("at_s0", {"seed": 0}, 0.24, 0.19, 10.0),  # an old config: defaults fill the rest
            hand_run("at_s1", second_subset, 0.26, 0.17, 12.0), hand_run("cc_s0", smoothing, 0.25, 0.20, 30.0)]
    assert main(["report", *runs, "--markdown"]) == 0
    table = capsys.readouterr().out
    assert "Mean ± sample standard deviation over replicates (seed, data.per_class_start)" in table
    rows = {line.split(" | ")[0]: line for line in table.splitlines() if line.startswith("| criterion.")}
    # sd of (24, 26) = sqrt(2) = 1.41; gaps 5 and 9: mean 7, sd 2.83; CAS 10, 12: 11 ± 1.41
    at = rows["| criterion.name=ce"]
    assert "| 2 | 20.00 ± 0.00 | 25.00 ± 1.41 | 18.00 ± 1.41 | 7.00 ± 2.83 | – | – | – | 11.00 ± 1.41 |" in at
    smoothed = rows["| criterion.name=label_smoothing, criterion.smoothing=0.1"]
    assert smoothed.split(" | ")[1:4] == ["1", "20.00", "25.00"]
    # one run against two: a difference without an interval, and a verdict that says why
    differences = [line for line in table.splitlines() if line.startswith("| criterion.name=label_smoothing")
                   and " − " in line]
    assert "| RA Best | +0.00 | – | 1 vs 2 | none | no uncertainty estimate (one run) |" in differences[0]


def test_markdown_states_each_difference_with_its_interval_and_verdict(tmp_path, capsys):
    """Two configurations of the same three seeds: paired differences. RA Best 10, 12, 14 against 9, 10, 11:
    d = 1, 2, 3, mean 2, sd 1, 95 % interval 2 ± t(0.975, 2) · 1/√3 = 2 ± 4.3027/1.7321 = [-0.48, +4.48], which
    holds 0: within the seed-to-seed spread. RA Final 20, 21, 22 against 10, 10.5, 11.5: d = 10, 10.5, 10.5,
    mean 10.33, sd 0.289, interval 10.33 ± 0.72 = [+9.62, +11.05]: larger than it."""
    runs = []
    for name, best, last, criterion in (("a", (0.09, 0.10, 0.11), (0.10, 0.105, 0.115), "ce"),
                                        ("b", (0.10, 0.12, 0.14), (0.20, 0.21, 0.22), "label_smoothing")):
        for seed in range(3):
            run = tmp_path / f"{name}_s{seed}"
            run.mkdir()
            (run / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "criterion": {"name": criterion}}))
            (run / "summary.json").write_text(json.dumps({"best_epoch": 3, "best_robust_acc": best[seed],
                                                          "last_robust_acc": last[seed]}))
            runs.append(str(run))
    assert main(["report", *runs, "--markdown"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if " − " in line]
    assert lines[0].endswith("| RA Best | +2.00 | [-0.48, +4.48] | 3 vs 3 | paired | within seed-to-seed spread |")
    assert lines[1].endswith("| RA Final | +10.33 | [+9.62, +11.05] | 3 vs 3 | paired | larger than it |")
    page = tmp_path / "compared.html"  # the HTML page states the same comparisons
    assert main(["report", *runs, "--out", str(page)]) == 0
    text = page.read_text()
    assert "<h2>Configurations compared</h2>" in text
    assert "<td>RA Final</td><td>+10.33</td><td>[+9.62, +11.05]</td><td>3 vs 3</td><td>paired</td>" in text


def aggregate_lines(table: str) -> list[str]:
    """The rows of the markdown report's table of replicate means (up to the blank line after it)."""
    lines = table.partition("Mean ± sample standard deviation")[2].splitlines()[4:]
    return lines[: lines.index("")] if "" in lines else lines


def _config_only_run(tmp_path, name: str, config: dict) -> str:
    """A run folder holding only a config and a minimal summary: what grouping by configuration reads."""
    (tmp_path / name).mkdir()
    (tmp_path / name / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / name / "summary.json").write_text(json.dumps({"best_epoch": 2, "best_robust_acc": 0.2}))
    return str(tmp_path / name)


def test_runs_without_extra_data_are_labelled_by_what_they_set(tmp_path, capsys):
    """A run without extra data has no extra settings: its group is not labelled by the section's defaults."""
    hand_run = functools.partial(_config_only_run, tmp_path)

    pseudo = {"source": "rest", "labels": "pseudo", "teacher": "runs/teacher"}
    runs = [hand_run("at_s0", {"seed": 0}), hand_run("at_s1", {"seed": 1}),
            hand_run("rst_s0", {"seed": 0, "extra": pseudo}),
            hand_run("true_s0", {"seed": 0, "extra": {"source": "rest"}})]
    assert main(["report", *runs, "--markdown"]) == 0
    aggregated = aggregate_lines(capsys.readouterr().out)
    labels = [line.split(" | ")[0].removeprefix("| ") for line in aggregated]
    assert labels[0] == "defaults"  # not "extra.labels=provided, ...": the baselines set nothing of extra
    assert labels[1].startswith("extra.fraction=0.5, extra.labels=pseudo, extra.sampler=uniform, extra.source=rest")
    assert labels[2].startswith("extra.fraction=0.5, extra.labels=provided, extra.sampler=uniform, extra.source=rest")


def test_a_setting_written_as_null_is_the_same_configuration_as_one_left_out(tmp_path, capsys):
    hand_run = functools.partial(_config_only_run, tmp_path)

    runs = [hand_run("old_s0", {"seed": 0, "averaging": {"name": "none"}}),
            hand_run("new_s1", {"seed": 1, "averaging": {"name": "none", "start": None}})]
    assert main(["report", *runs, "--markdown"]) == 0
    aggregated = aggregate_lines(capsys.readouterr().out)
    assert [line.split(" | ")[:2] for line in aggregated] == [["| defaults", "2"]]


def test_a_sampler_recorded_by_name_is_the_same_configuration_as_its_resolved_settings(tmp_path, capsys):
    hand_run = functools.partial(_config_only_run, tmp_path)
    extra = {"source": "rest", "labels": "provided"}
    runs = [hand_run("old_s0", {"seed": 0, "extra": {**extra, "sampler": "cross_class"}}),
            hand_run("new_s1", {"seed": 1, "extra": {**extra, "sampler": {"name": "cross_class", "every": 5,
                                                                          "strength": 1.0}}}),
            hand_run("other_s0", {"seed": 0, "extra": {**extra, "sampler": {"name": "cross_class", "every": 1}}})]
    assert main(["report", *runs, "--markdown"]) == 0
    aggregated = aggregate_lines(capsys.readouterr().out)
    assert [line.split(" | ")[1] for line in aggregated] == ["2", "1"]
    assert "extra.sampler.every=5" in aggregated[0] and "extra.sampler.every=1" in aggregated[1]


def test_runs_in_another_precision_are_another_configuration_and_threads_are_not(tmp_path, capsys):
    hand_run = functools.partial(_config_only_run, tmp_path)

    runs = [hand_run("fp32_s0", {"seed": 0, "runtime": {"threads": 1}}), hand_run("fp32_s1", {"seed": 1}),
            hand_run("bf16_s0", {"seed": 0, "runtime": {"amp": "bf16"}})]
    assert main(["report", *runs, "--markdown"]) == 0
    aggregated = aggregate_lines(capsys.readouterr().out)
    rows = [line.split(" | ")[:2] for line in aggregated]
    assert rows == [["| runtime.amp=False", "2"], ["| runtime.amp=bf16", "1"]]


def test_markdown_groups_replicates_over_the_settings_named_by_vary(tmp_path, capsys):
    """KD replicates each name their own teacher run: one configuration only once --vary says so."""
    def kd_run(name, seed, teacher, best):
        run = tmp_path / name
        run.mkdir()
        config = {"seed": seed, "criterion": {"name": "kd", "adv_teacher": str(tmp_path / teacher),
                                              "std_teacher": {"config": "standard.yaml", "set": [f"seed={seed}"]}}}
        (run / "config.yaml").write_text(yaml.safe_dump(config))
        (run / "summary.json").write_text(json.dumps({"best_epoch": 10, "best_robust_acc": best}))
        return str(run)

    runs = [kd_run("kd_s0", 0, "at_s0", 0.24), kd_run("kd_s1", 1, "at_s1", 0.26)]
    assert main(["report", *runs, "--markdown"]) == 0
    assert "Mean ±" not in capsys.readouterr().out  # two configurations of one run each
    assert main(["report", *runs, "--markdown", "--vary", "criterion.adv_teacher",
                 "--vary", "criterion.std_teacher"]) == 0
    table = capsys.readouterr().out
    assert ("over replicates (seed, data.per_class_start, criterion.adv_teacher, criterion.std_teacher)"
            in table)
    aggregated = [line for line in table.splitlines() if line.startswith("| defaults | 2 |")]
    assert len(aggregated) == 1 and "| 25.00 ± 1.41 |" in aggregated[0]
    # a misspelt key or a flag without the table it acts on is a message, not a silent no-op
    assert main(["report", *runs, "--markdown", "--vary", "criterion.adv_techer"]) == 2
    assert main(["report", *runs, "--vary", "criterion.adv_teacher"]) == 2
    err = capsys.readouterr().err
    assert "--vary criterion.adv_techer: no run has this setting" in err and "add --markdown" in err
