"""Recovery and plain behaviour at the edges: the image cache, constant channels, balanced subsets,
threads, non-terminal output, YAML numbers."""

from __future__ import annotations

import json

import torch
from PIL import Image

from atlens.config import apply_overrides, load_config
from atlens.data import ImageTensors, prepare_data
from atlens.training.runtime import configure_threads
from tests.conftest import train_run


def tree(root, color=lambda c, i: (c * 200, i * 10, 7)):
    for split in ("train", "test"):
        for c, name in enumerate(("cat", "dog")):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(3):
                Image.new("RGB", (6, 6), color(c, i)).save(root / split / name / f"{i}.png")


def test_a_damaged_image_cache_entry_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLENS_CACHE", str(tmp_path / "cache"))
    tree(tmp_path / "images")
    first = prepare_data("imagefolder", root=str(tmp_path / "images"))
    first.test.decoded()  # the test split is decoded when first read
    entries = sorted((tmp_path / "cache").glob("*.pt"))
    assert len(entries) == 2
    entries[0].write_bytes(entries[0].read_bytes()[:100])  # truncated
    data = torch.load(entries[1], weights_only=True)
    data["images"][0] += 1  # bytes flipped: the checksum no longer matches
    torch.save(data, entries[1])
    again = prepare_data("imagefolder", root=str(tmp_path / "images"))
    assert torch.equal(again.train.images, first.train.images) and torch.equal(again.test.images, first.test.images)


def test_a_constant_channel_is_not_divided_by_zero(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLENS_CACHE", str(tmp_path / "cache"))
    tree(tmp_path / "images")  # the blue channel is 7 everywhere
    info = prepare_data("imagefolder", root=str(tmp_path / "images")).info
    assert info.std[2] == 1.0 and min(info.std[:2]) > 0


def test_subsets_are_class_balanced_and_seeded():
    labels = torch.arange(10).repeat_interleave(50)  # sorted by class, as image folders are
    data = ImageTensors(torch.zeros(500, 1, 2, 2), labels)
    chosen = data.balanced_indices(200, seed=3)
    assert torch.bincount(labels[chosen], minlength=10).tolist() == [20] * 10
    assert torch.equal(chosen, data.balanced_indices(200, seed=3))
    assert not torch.equal(chosen, data.balanced_indices(200, seed=4))
    assert data.balanced_indices(None) is None and data.balanced_indices(500) is None


def test_the_evaluation_subset_is_recorded(tmp_path):
    run, _ = train_run(tmp_path / "run", **{"optim.epochs": 1, "eval": {"steps": 2, "examples": 40}})
    recorded = json.loads((run.path / "data.json").read_text())
    assert recorded["eval_examples"] == 40 and len(recorded["eval_indices"]) == 40


def test_threads_follow_the_users_setting_unless_configured():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        configure_threads(None)
        assert torch.get_num_threads() == 1
        configure_threads(2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_output_that_is_not_a_terminal_gets_plain_lines(tmp_path, capsys):
    train_run(tmp_path / "run", **{"optim.epochs": 2, "runtime": {"progress": True, "threads": 2}})
    captured = capsys.readouterr()
    assert "epoch 1/2: train robust acc" in captured.out and "epoch 2/2" in captured.out
    assert "\r" not in captured.err and "\x1b" not in captured.err


def test_yaml_numbers_are_read_as_researchers_write_them(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim: {weight_decay: 5e-4, lr: 1e-1}\ndata: {name: digits, batch_size: 1e2}\n")
    cfg = load_config(path)
    assert (cfg.optim.options["weight_decay"], cfg.optim.lr, cfg.data.batch_size) == (5e-4, 0.1, 100)
    assert apply_overrides({}, ["optim.lr=2e-3"]) == {"optim": {"lr": 2e-3}}


def test_files_written_atomically_get_the_usual_permissions(tmp_path):
    import os

    from atlens.files import write_text

    umask = os.umask(0o022)
    try:
        os.umask(umask)
        path = write_text(tmp_path / "summary.json", "{}")
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask
        assert not list(tmp_path.glob(".*.tmp"))
    finally:
        os.umask(umask)


def test_a_command_that_lost_a_new_folder_to_another_leaves_the_winners_lock_alone(tmp_path):
    """Two commands start on one new folder: both created it, one holds the lock. The one that stops at the door
    removes the folder only when the lock files in it are its own (else it would take the winner's lock away)."""
    import json
    import os
    import socket

    from atlens.runs import remove_if_only_our_lock

    def folder(name, pid, extra=()):
        path = tmp_path / name
        path.mkdir()
        (path / ".lock").write_text("")
        (path / ".owner.json").write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
        for file in extra:
            (path / file).write_text("")
        return path

    theirs = folder("theirs", os.getpid() + 1)
    remove_if_only_our_lock(theirs)
    assert (theirs / ".lock").is_file() and (theirs / ".owner.json").is_file()
    ours = folder("ours", os.getpid())
    remove_if_only_our_lock(ours)
    assert not ours.exists()
    written = folder("written", os.getpid(), ["config.yaml"])  # something arrived: not an empty failed start
    remove_if_only_our_lock(written)
    assert (written / "config.yaml").is_file()


def test_a_folder_holding_only_an_atomic_write_in_progress_is_an_atlens_run_starting(tmp_path):
    """Another atlens process that has just taken a new folder may be writing its config (.config.yaml.*.tmp):
    a second command must not call that folder foreign; a temporary left by a killed write is swept."""
    from tests.conftest import train_run

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".config.yaml.x1y2z3.tmp").write_text("seed: 0\n")
    run, summary = train_run(folder, **{"optim.epochs": 1})
    assert summary["last_robust_acc"] is not None and not list(folder.glob(".*.tmp"))
