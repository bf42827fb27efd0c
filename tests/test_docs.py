"""The documentation as a user meets it: docs/api.md's examples and the README tour run as written, the study
pages agree with their committed data."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_api_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks((DOCS / "api.md").read_text())
    assert len(blocks) >= 6
    namespace: dict = {}
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"docs/api.md block {number}", "exec"), namespace)  # noqa: S102
    printed = capsys.readouterr().out
    assert "fc torch.Size([1, 512])" in printed and "CAS" in printed and "I-CAS" in printed
    figures = tmp_path / "figures"
    assert (figures / "cas-resnet18.png").is_file() and (figures / "cas-resnet18.json").is_file()
    assert (tmp_path / "runs" / "api-example" / "summary.json").is_file()


def test_the_docs_point_nowhere_outside_the_repository():
    root = DOCS.parent
    for page in [root / "README.md", *DOCS.rglob("*.md")]:
        text = page.read_text()
        assert "../shared" not in text and "shared project folder" not in text, page


def tour_commands() -> list[str]:
    readme = (DOCS.parent / "README.md").read_text()
    block = readme.split("<!-- tour: start -->")[1].split("<!-- tour: end -->")[0]
    lines = [line.split("  #")[0].split(" # ")[0].strip() for line in python_or_bash(block)]
    return [line for line in lines if line]


def python_or_bash(block: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", block, flags=re.S)[0].splitlines()


# what makes the CPU protocol a few seconds on a tiny tree: the commands themselves are the README's
SMALL = {"train": ["--set", "optim.epochs=2", "--set", "data.per_class=3", "--set", "model.width=8",
                   "--set", "data.batch_size=16", "--set", "eval.steps=2", "--set", "runtime.progress=false"],
         "eval": ["--examples", "10"], "cas": ["--examples", "10"],
         "analyze": ["--examples", "10", "--train-examples", "10"], "report": []}


def test_the_readme_tour_runs_top_to_bottom_on_an_imagefolder_tree(tmp_path, monkeypatch, capsys):
    import shlex

    from atlens.cli.main import main
    from tests.conftest import tiny_imagefolder

    tree = tiny_imagefolder(tmp_path / "cifar10-png", train_per_class=5, test_per_class=2)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(DOCS.parent / "configs")
    commands = tour_commands()
    assert commands[0].startswith("DATA=") and len(commands) >= 8
    for line in commands[1:]:
        words = shlex.split(line.replace("$DATA", str(tree)))
        assert words[0] == "atlens", line
        extra = SMALL[words[1]] if not (words[1] == "train" and "--resume" in words) else []
        if words[1] == "train" and "--dry-run" in words:
            extra = []
        code = main(words[1:] + extra)
        err = capsys.readouterr().err
        assert code == 0, (line, err[-2000:])
        if words[1] in ("eval", "cas", "analyze"):  # long work announces its time before it starts
            assert "estimated time: about" in err, (line, err[:500])
    run = tmp_path / "runs" / "pgd_at"
    for produced in ("summary.json", "eval-best.json", "report.html", "analysis/lsc.json", "analysis/linearity.json"):
        assert (run / produced).is_file(), produced
    # the tour's CAS is named by its attack and examples: training's own matrices are left as they were
    assert (run / "analysis" / "cas-best-pgd20-n10.json").is_file() and (run / "analysis" / "cas-best.json").is_file()
    assert not list((run / "analysis").glob("*.replaced-*"))


def test_the_study_pages_agree_with_their_committed_data(capsys, monkeypatch):
    """docs/studies/check_numbers.py recomputes the pages' tables and key sentences from the committed runs."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_numbers", DOCS / "studies" / "check_numbers.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "check_numbers", module)  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    assert module.main() == 0, capsys.readouterr().out
    page = DOCS / "studies" / "cpu_remedies" / "compared.md"
    assert module.numbers("| **+1.23** |") == [(1.23, 2)] and module.agrees((19.3, 1), 19.25001)
    assert not module.agrees((19.3, 1), 19.24) and module.numbers("9.9 → 8.2 ¹") == [(9.9, 1), (8.2, 1)]
    assert module.table(str(page.relative_to(DOCS.parent)), "run")[1][0] == "cpu_pgd_at"


@pytest.mark.parametrize("page, kind, before, after", [
    ("README.md", "a result in prose", "best **67.40 % (epoch 18)**", "best **67.41 % (epoch 18)**"),
    ("README.md", "an epoch in prose", "(epoch 18)**", "(epoch 19)**"),
    ("README.md", "a range", "276–307 s over six runs", "276–308 s over six runs"),
    ("README.md", "a count", "over six runs", "over seven runs"),
    ("README.md", "a ± bound", "within the ±0.5 that CAS", "within the ±0.6 that CAS"),
    ("README.md", "a setting", "30 per class with", "31 per class with"),
    ("README.md", "a rounded-coarser value", "**26.44 points**", "**26.4 points**"),
    ("README.md", "a number in a command's comment", "# 23-39 min on 2 cores", "# 23-38 min on 2 cores"),
    ("README.md", "an input", "Python 3.11:", "Python 3.12:"),
    ("README.md", "a new number", "CPU or many GPUs.", "CPU or 16 GPUs."),
    ("docs/studies/cpu_pgd_at.md", "a table cell", "| 28 | 0.1 | 24.7 |", "| 28 | 0.1 | 24.8 |"),
    ("docs/studies/cpu_pgd_at.md", "a table's row label", "| 28 | 0.1 | 24.7 |", "| 26 | 0.1 | 24.7 |"),
    ("docs/studies/cpu_pgd_at.md", "an arrow pair", "(34.3 → 40.5 %)", "(34.3 → 40.6 %)"),
    ("docs/studies/cpu_pgd_at.md", "a paper's number", "(25.6 vs 9.0 on", "(25.6 vs 9.1 on"),
    ("docs/studies/cpu_pgd_at.md", "a thousands separator", "With 1,000 training", "With 1,500 training"),
    ("docs/studies/cpu_mart.md", "a ratio", "took 1.12× PGD-AT's", "took 1.21× PGD-AT's"),
    ("docs/studies/cpu_mart.md", "a signed difference", "(ΔCAS +1.71 vs +1.23)", "(ΔCAS +1.71 vs +1.32)"),
    ("docs/studies/attack_details.md", "a four-decimal result", "is 0.6827\nagainst", "is 0.6872\nagainst"),
    ("docs/studies/outside_models.md", "a negative difference", "−0.12 and −0.42)", "−0.13 and −0.42)"),
    ("docs/studies/outside_models.md", "a cell of a table built from a summary", "| 26.6 | 19.4 |", "| 26.6 | 19.5 |"),
    ("docs/studies/extra_data.md", "a gain in prose", "gains 2.2", "gains 3.2"),
    ("docs/studies/extra_data.md", "an epoch of a pair", "(epochs 86 and 76,", "(epochs 66 and 76,"),
    ("docs/studies/extra_data.md", "a range of ratios", "(1.16–1.43×", "(1.26–1.43×"),
    ("docs/studies/precision.md", "a prose ± sd", "19.25 ± 0.49 % in fp32", "19.25 ± 0.59 % in fp32"),
    ("docs/studies/early_warning.md", "a prose mean ± sd", "share 0.1 −4.95 ± 0.49", "share 0.1 −4.95 ± 0.48"),
    ("docs/studies/early_warning.md", "a setting in prose", "(every 2 here)", "(every 3 here)"),
    ("docs/studies/cross_class_regularizer.md", "a range of times", "(46–67 minutes each)", "(46–57 minutes each)"),
    ("docs/reproduction.md", "a cell of the ε table", "| 73.8 | 10.24 |", "| 73.9 | 10.24 |"),
    ("docs/reproduction.md", "a paper's number from its preset", "RWP 58.55 / 58.01", "RWP 58.55 / 58.02"),
])
def test_the_number_check_fails_on_a_changed_number_of_every_kind(tmp_path, monkeypatch, page, kind, before, after):
    """A copy of a covered page with one number changed: the check reports it, whatever kind of number it is
    (on a covered page every number is recomputed or named as an input)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_numbers", DOCS / "studies" / "check_numbers.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "check_numbers", module)
    spec.loader.exec_module(module)
    root, source = tmp_path / "copy", DOCS.parent
    original = (source / page).read_text()
    assert original.count(before) == 1, before
    for linked in ("README.md", "atlens", "configs", "docs/measurements", "docs/reproduction.md", "docs/methods.md",
                   "docs/precision.md", "docs/reproduction",
                   *(f"docs/studies/{p.name}" for p in (source / "docs/studies").iterdir())):
        (root / linked).parent.mkdir(parents=True, exist_ok=True)
        if linked != page:
            (root / linked).symlink_to(source / linked)
    monkeypatch.setattr(module, "ROOT", root)
    # a covered page: any changed number fails; the others: the numbers of their checked cells and sentences
    monkeypatch.setattr(module, "COVERED", [page] if page in module.COVERED else [])

    own = {"docs/studies/extra_data.md": (module.extra_data,), "docs/studies/precision.md": (module.precision,),
           "docs/studies/early_warning.md": (module.early_warning,),
           "docs/studies/cross_class_regularizer.md": (module.cross_class, module.cross_class_findings),
           "docs/reproduction.md": (module.demo, module.comparison_pages, module.reproduction_page,
                                    module.paired_claims, module.extra_data, module.early_warning,
                                    module.cross_class_findings)}

    def problems():
        module.problems.clear()
        module.confirmed.clear()
        for check in own.get(page, (module.demo, module.readme, module.cpu_pgd_at, module.cpu_mart,
                                    module.comparison_pages, module.attack_details, module.outside_models)):
            check()
        module.coverage()
        return list(module.problems)

    (root / page).write_text(original.replace(before, after))
    found = problems()
    assert found and all(p.startswith(page) for p in found), (kind, found)
    (root / page).write_text(original)
    assert problems() == []  # the unchanged copy passes


def test_the_extending_example_trains_as_written(tmp_path, monkeypatch):
    """docs/extending.md's module and config, written as a user would, train with the documented commands (on
    the digits, one epoch, the W&B logger offline)."""
    import json

    from atlens.cli.main import main
    from tests.outside_package import registries_restored

    page = (DOCS / "extending.md").read_text()
    (module,) = python_blocks(page)
    (config,) = re.findall(r"```yaml\n(.*?)```", page, flags=re.S)
    (tmp_path / "mylab").mkdir()
    (tmp_path / "mylab" / "__init__.py").write_text("")
    (tmp_path / "mylab" / "methods.py").write_text(module)
    (tmp_path / "mylab.yaml").write_text(config)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_SILENT", "true")
    small = ["--set", "data.name=digits", "--set", "model={name: mlp, hidden: [16]}", "--set", "optim.epochs=1",
             "--set", "attack.epsilon=0.1", "--set", "eval.steps=2", "--set", "runtime.progress=false"]
    with registries_restored():
        assert main(["train", "mylab.yaml", *small, "--dry-run"]) == 0
        assert main(["train", "mylab.yaml", *small, "--out", "run"]) == 0
        methods = json.loads((tmp_path / "run" / "methods.json").read_text())
        assert methods["criterion"] == {"name": "logit_penalty", "weight": 0.02}
        assert methods["optimizer"]["name"] == "adamw" and methods["loggers"][0]["name"] == "wandb"
        assert "lr_last_step" in json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    for name in [m for m in sys.modules if m.startswith("mylab")]:
        del sys.modules[name]


def test_the_preset_page_is_what_the_presets_give_and_no_header_contradicts_them():
    """docs/presets.md lists every preset's settings and their sources (written by docs/presets.py, which stops on a
    setting without a source); a preset's header may not name an epoch count or decay epochs it does not run."""
    import importlib.util

    from atlens.config import load_config

    spec = importlib.util.spec_from_file_location("presets_page", DOCS / "presets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (DOCS / "presets.md").read_text() == module.render(), "run python docs/presets.py"
    presets = sorted(module.PRESETS.glob("*.yaml"))
    assert len(presets) == (DOCS / "presets.md").read_text().count("\n### `") == 61
    for path in presets:
        header = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
        cfg = load_config(path)
        for said in re.findall(r"(?<!every )(?<!\d)(\d+) epochs", header):
            assert int(said) == cfg.optim.epochs, (path.stem, said)
        decays = [round(m * cfg.optim.epochs) for m in cfg.optim.milestones]
        for said in re.findall(r"decays? at (?:epochs )?(\d+) and (\d+)", header):
            assert [int(n) for n in said] == decays, (path.stem, said)
    # the generator refuses a setting it cannot trace
    try:
        module.source("yu2022_cifar10_linf_at", "optim.lr")
    except SystemExit as stop:
        assert "no source for optim.lr" in str(stop)
    else:
        raise AssertionError("a setting without a source was accepted")


def test_the_readme_is_short_and_every_link_of_every_page_resolves():
    import subprocess

    root = DOCS.parent
    readme = (root / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for block in re.findall(r"```bash\n(.*?)```", readme, flags=re.S):  # the commands parse as bash
        assert subprocess.run(["bash", "-n"], input=block, text=True).returncode == 0, block
    broken = []
    for page in [root / "README.md", root / "BENCHMARKS.md", *DOCS.rglob("*.md")]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(root)}: {target}")
            elif anchor and file.suffix == ".md":
                headings = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                            for h in re.findall(r"^#+ (.*)$", file.read_text(), flags=re.M)}
                if anchor not in headings:
                    broken.append(f"{page.relative_to(root)}: {target} (no such heading)")
    assert broken == []
