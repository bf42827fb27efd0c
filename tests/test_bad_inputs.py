"""A catalogue of what users get wrong: every case stops with a short message on stderr that names the
key, file or path, a non-zero exit code and no traceback, and leaves every file of existing runs as it was."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from atlens.cli.main import main
from tests.conftest import synthetic_config


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".owner.json"}


def png(path: Path, size: int = 8, value: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(str(path))) % 2**32)
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8) if value is None else \
        np.full((size, size, 3), value, np.uint8)
    Image.fromarray(pixels).save(path)


def image_tree(root: Path, classes=("a", "b"), per_class: int = 3) -> Path:
    for split in ("train", "test"):
        for c in classes:
            for i in range(per_class):
                png(root / split / c / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A finished run, a run of another architecture, a config file and image trees."""
    root = tmp_path_factory.mktemp("world")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(synthetic_config(**{"optim.epochs": 1})))
    assert main(["train", str(config), "--out", str(root / "run")]) == 0
    other = root / "other.yaml"
    other.write_text(yaml.safe_dump(synthetic_config(model={"name": "mlp", "hidden": [8]}, **{"optim.epochs": 1})))
    assert main(["train", str(other), "--out", str(root / "mlp_run")]) == 0
    damaged = root / "damaged"  # a run whose last.pt was cut short by a full disk
    assert main(["train", str(config), "--out", str(damaged), "--set", "optim.epochs=2",
                 "--set", "checkpoint.every=1"]) == 0
    (damaged / "summary.json").unlink()
    last = damaged / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:200])
    return root


def write(root: Path, name: str, text: str) -> str:
    path = root / "inputs" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return str(path)


def cases(w: Path) -> list[tuple[str, list[str], str]]:
    """(what, argv, text the message must contain)."""
    cfg, run = str(w / "tiny.yaml"), str(w / "run")
    imgs = w / "images"
    truncated = image_tree(imgs / "truncated")
    (truncated / "train" / "a" / "0.png").write_bytes((truncated / "train" / "a" / "0.png").read_bytes()[:40])
    mixed = image_tree(imgs / "mixed")
    png(mixed / "train" / "b" / "9.png", size=12)
    empty = image_tree(imgs / "empty")
    (empty / "train" / "c").mkdir()
    extra = image_tree(imgs / "test_only")
    png(extra / "test" / "z" / "0.png")
    notpng = image_tree(imgs / "notpng")
    (notpng / "test" / "b" / "0.png").write_text("not an image")
    def folder(root: Path) -> list[str]:
        raw = synthetic_config(**{"optim.epochs": 1})
        raw["data"] = {"name": "imagefolder", "root": str(root), "batch_size": 4}
        return ["train", write(w, f"folder-{root.name}.yaml", yaml.safe_dump(raw)), "--out", str(w / "never")]

    mismatched = w / "inputs" / "mismatched.pt"  # the cnn's spec with the mlp's weights
    mismatched.parent.mkdir(exist_ok=True)
    state = torch.load(w / "run/checkpoints/last.pt", weights_only=True)
    state["model"] = torch.load(w / "mlp_run/checkpoints/last.pt", weights_only=True)["model"]
    torch.save(state, mismatched)
    foreign = w / "thesis"
    foreign.mkdir(exist_ok=True)
    (foreign / "chapter1.tex").write_text("...")
    return [
        ("unknown key with a suggestion", ["train", cfg, "--set", "optimizer.lr=0.1", "--dry-run"],
         "did you mean optim"),
        ("unknown option", ["train", cfg, "--set", "model.depth=3", "--dry-run"], "model: unknown option(s) depth"),
        ("wrong type", ["train", cfg, "--set", "attack.steps=ten", "--dry-run"], "attack.steps: expected an integer"),
        ("negative budget", ["train", cfg, "--set", "attack.epsilon=-1", "--dry-run"], "attack.epsilon must be"),
        ("L∞ budget above 1", ["train", cfg, "--set", "attack.epsilon=2", "--dry-run"], "at most 1"),
        ("infinite budget", ["train", cfg, "--set", "attack.epsilon=.inf", "--dry-run"], "finite number"),
        ("zero learning rate", ["train", cfg, "--set", "optim.lr=0", "--dry-run"], "optim.lr must be"),
        ("zero epochs", ["train", cfg, "--set", "optim.epochs=0", "--dry-run"], "optim.epochs must be >= 1"),
        ("zero batch", ["train", cfg, "--set", "data.batch_size=0", "--dry-run"], "data.batch_size must be >= 1"),
        ("milestones in epochs", ["train", cfg, "--set", "optim.milestones=[100,150]", "--dry-run"],
         "optim.milestones are fractions"),
        ("negative AWP γ", ["train", cfg, "--set", "perturbation={name: awp, gamma: -1}", "--dry-run"],
         "gamma must be >= 0"),
        ("negative c_min", ["train", cfg, "--set", "perturbation={name: rwp, c_min: -1}", "--dry-run"],
         "c_min must be >= 0"),
        ("label smoothing β ≥ 1", ["train", cfg, "--set", "criterion={name: label_smoothing, beta: 1.5}",
                                   "--dry-run"], "criterion.beta must be in [0, 1)"),
        ("WRN depth", ["train", cfg, "--set", "model={name: wrn, depth: 30}", "--dry-run"], "model (model 'wrn')"),
        ("unknown model", ["train", cfg, "--set", "model.name=resnet50", "--dry-run"], "unknown model 'resnet50'"),
        ("unknown device", ["train", cfg, "--set", "runtime.device=tpu", "--dry-run"], "runtime.device"),
        ("empty YAML", ["train", write(w, "empty.yaml", ""), "--dry-run"], "empty.yaml is empty"),
        ("duplicate keys", ["train", write(w, "twice.yaml", "seed: 1\nseed: 2\n"), "--dry-run"],
         "key 'seed' appears twice (lines 1 and 2)"),
        ("invalid YAML", ["train", write(w, "bad.yaml", "data: [unclosed\n"), "--dry-run"],
         "bad.yaml is not valid YAML"),
        ("invalid YAML in --set", ["train", cfg, "--set", "optim.milestones=[0.5", "--dry-run"],
         "--set optim.milestones is not valid YAML"),
        ("--set without =", ["train", cfg, "--set", "optim.lr", "--dry-run"], "--set expects key=value"),
        ("missing config", ["train", str(w / "nope.yaml")], "nope.yaml does not exist"),
        ("resume a folder that is no run", ["train", "--resume", str(w / "inputs")], "is not a run directory"),
        ("eval a folder that is no run", ["eval", str(w / "inputs")], "is not a run directory"),
        ("report a folder that is no run", ["report", str(w / "inputs")], "is not a run directory"),
        ("unknown checkpoint", ["cas", run, "--checkpoint", "epoch-99"], "no checkpoint 'epoch-99'"),
        ("unknown attack", ["eval", run, "--attacks", "pgd7x", "--examples", "8"], "unknown attack"),
        ("unknown analysis", ["analyze", run, "--what", "saliency"], "unknown analysis saliency"),
        ("weights of another architecture", ["eval", run, "--checkpoint", str(mismatched), "--attacks", "clean"],
         "does not match the model"),
        ("truncated last.pt", ["train", "--resume", str(w / "damaged")], "damaged or truncated"),
        ("new run onto a folder that is not a run", ["train", cfg, "--out", str(foreign)], "chapter1.tex"),
        ("another config onto a run", ["train", cfg, "--out", run, "--set", "optim.epochs=7"],
         "holds a run of another config: optim.epochs (7 here"),
        ("missing dataset root", folder(Path("/no/such/place")), "/no/such/place"),
        ("truncated PNG", folder(truncated), "0.png is not a readable image"),
        ("not an image", folder(notpng), "0.png is not a readable image"),
        ("mixed image sizes", folder(mixed), "9.png is 12x12"),
        ("empty class folder", folder(empty), "holds no images"),
        ("class only in test", folder(extra), "class folder(s) z"),
        ("CAS on too few examples", ["train", cfg, "--set", "eval.examples=2", "--set", "analysis.cas_every=1",
                                     "--out", str(w / "never2")], "needs every class"),
        ("missing KD teacher", ["train", cfg, "--set", "criterion={name: kd, adv_teacher: /no/teacher}",
                                "--out", str(w / "never3")], "/no/teacher does not exist"),
        ("sweep without a grid", ["sweep", cfg], "needs at least one --grid"),
        ("sweep grid without values", ["sweep", cfg, "--grid", "seed="], "--grid values"),
        ("theory out of range", ["theory", "--sigma", "2", "--out", str(w / "theory")], "sigma"),
        ("CUDA requested without CUDA", ["cas", run, "--device", "cuda"], "CUDA is not available"),
    ]


def test_bad_inputs_stop_with_one_short_message_and_touch_nothing(world, capsys):
    if torch.cuda.is_available():
        pytest.skip("the CUDA case needs a machine without CUDA")
    catalogue = cases(world)
    before = {name: tree_digest(world / name) for name in ("run", "mlp_run", "damaged", "thesis")}
    assert len(catalogue) >= 30
    for what, argv, expected in catalogue:
        capsys.readouterr()
        code = main(argv)
        out, err = capsys.readouterr()
        assert code in (1, 2), (what, code, out[-500:], err)
        assert "Traceback" not in err and err.startswith("atlens: error: "), (what, err)
        assert len(err.strip().splitlines()) <= 3, (what, err)
        assert expected in err, (what, err)
    for name, digest in before.items():
        assert tree_digest(world / name) == digest, name


def test_a_full_disk_or_a_permission_error_is_one_line_with_the_path(monkeypatch, tmp_path, capsys):
    import errno

    import atlens.training.run

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(synthetic_config(**{"optim.epochs": 1})))
    for code, words in ((errno.ENOSPC, "the disk is full"), (errno.EACCES, "permission denied")):
        def fail(*args, code=code, **kwargs):
            raise OSError(code, "raw", str(tmp_path / "run" / "checkpoints" / "last.pt"))

        monkeypatch.setattr(atlens.training.run, "train_to_completion", fail)
        assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"atlens: error: {words} ({tmp_path / 'run' / 'checkpoints' / 'last.pt'})")
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("case", ["unknown key", "missing data.root", "unreadable npz", "damaged checkpoint"])
def test_exit_codes_are_the_ones_the_readme_states_per_class_of_error(tmp_path, capsys, case):
    """2 for bad input (arguments, a config or the data they name), 1 for a failure of what atlens keeps."""
    config = synthetic_config(**{"optim.epochs": 1})
    if case == "unknown key":
        config["optim"]["epoch"] = 3
    elif case == "missing data.root":
        config["data"] = {"name": "imagefolder", "root": str(tmp_path / "nowhere")}
    elif case == "unreadable npz":
        (tmp_path / "extra.npz").write_bytes(b"not a zip file")
        config["extra"] = {"source": str(tmp_path / "extra.npz")}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    if case == "damaged checkpoint":
        assert main(["train", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "run")]) == 0
        (tmp_path / "run" / "checkpoints" / "best.pt").write_bytes(b"torn")
        code = main(["eval", str(tmp_path / "run"), "--attacks", "clean"])
    else:
        code = main(["train", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == (1 if case == "damaged checkpoint" else 2), err
    assert err.startswith("atlens: error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    page = (Path(__file__).resolve().parent.parent / "docs" / "troubleshooting.md").read_text()
    assert "Exit codes: 2 for bad input" in page and "1 for a failure of what atlens keeps" in page


def test_out_of_range_extra_labels_are_named_with_their_values(tmp_path, capsys):
    labels = np.zeros(300, dtype=np.int64)
    labels[[7, 250]] = [4, -1]
    np.savez(tmp_path / "extra.npz", image=np.zeros((300, 8, 8, 1), np.uint8), label=labels)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(synthetic_config(extra={"source": str(tmp_path / "extra.npz")})))
    assert main(["train", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "labels must be class indices in [0, 4); 2 are not: 4 (example 7), -1 (example 250)" in err, err


def test_counts_take_the_number_they_count():
    from atlens.progress import count

    assert [count(1, "batch", "batches"), count(2, "batch", "batches"), count(1, "remaining epoch"),
            count(3, "remaining epoch"), count(5, "evaluation")] == [
        "1 batch", "2 batches", "1 remaining epoch", "3 remaining epochs", "5 evaluations"]


def test_a_checkpoint_that_does_not_fit_the_run_is_one_line_for_every_command(tmp_path, capsys):
    from tests.conftest import train_run

    run, _ = train_run(tmp_path / "run", **{"optim.epochs": 1})
    other, _ = train_run(tmp_path / "other", **{"optim.epochs": 1, "data": {**synthetic_config()["data"],
                                                                              "classes": 3, "image_size": 10}})
    foreign = str(other.checkpoints / "best.pt")
    for command in (["eval", str(run.path), "--attacks", "clean"], ["cas", str(run.path), "--examples", "8"],
                    ["analyze", str(run.path), "--what", "linearity", "--checkpoints", foreign]):
        argv = command if command[0] == "analyze" else command + ["--checkpoint", foreign]
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert f"{foreign} holds a model for 1×10×10 images, 3 classes, but {run.path}'s data are 1×8×8 images, " \
               f"4 classes; give a checkpoint of this run" in err, err
        assert len(err.strip().splitlines()) == 1
    # a best.pt of another run on the same data is not this run's best: its results get a name of their own
    same, _ = train_run(tmp_path / "same", **{"optim.epochs": 1, "seed": 1})
    assert main(["eval", str(run.path), "--attacks", "clean", "--examples", "8"]) == 0
    assert main(["eval", str(run.path), "--attacks", "clean", "--examples", "8", "--checkpoint",
                 str(same.checkpoints / "best.pt")]) == 0
    assert (run.path / "eval-best.json").is_file() and (run.path / "eval-file-best.json").is_file()


def test_long_work_off_a_terminal_says_how_far_it_has_come_every_half_minute(monkeypatch, capsys):
    import atlens.progress as progress

    clock = iter(range(0, 1000, 20))  # each item takes 20 s
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False)
    assert list(progress.progress(range(4), "weight directions", "direction")) == [0, 1, 2, 3]
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "weight directions (4 directions) ..."
    assert lines[1:-1] == ["weight directions: 2/4 after 40 s, about 40 s left"]
    assert lines[-1].startswith("weight directions: done in")
