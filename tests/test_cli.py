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
    assert "already complete" in capsys.readouterr().out
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_dry_run_prints_the_resolved_config(config_file, tmp_path, capsys):
    assert main(["train", str(config_file), "--dry-run", "--out", str(tmp_path / "never")]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["model"] == {"name": "cnn", "width": 8, "hidden": 16}
    assert not (tmp_path / "never").exists()


def test_bad_input_is_one_clear_line(config_file, tmp_path, capsys):
    assert main(["train", str(config_file), "--set", "attack.epsilon=-1"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "atlens: error: attack.epsilon must be a finite number > 0 (e.g. 8/255), got -1.0"
    assert main(["train", "--resume", str(tmp_path / "missing")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["train"]) == 2


def test_the_demo_preset_checks_and_trains_in_a_short_form(tmp_path):
    """The demo's config as ``check`` resolves it, then two epochs of it on a narrower network: the label noise,
    the schedule, the evaluation with CAS and the report's inputs all come out."""
    from atlens.training.build import check
    from atlens.training.run import train_to_completion

    cfg = check(load_config(DEMO_CONFIG))
    assert (cfg.data.name, cfg.objective.name, cfg.data.label_noise, cfg.optim.epochs) == ("digits", "pgd_at", 0.4, 100)
    short = load_config(DEMO_CONFIG, ["optim.epochs=2", "model.width=4", "eval.examples=40", "eval.steps=2",
                                      "runtime.progress=false"])
    summary = train_to_completion(short, tmp_path / "demo", log=lambda message: None)
    assert summary["epochs"] == 2 and summary["cas_best"] is not None
    rows = [json.loads(line) for line in (tmp_path / "demo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["cas"] is not None


def test_a_new_run_never_writes_into_a_used_folder_and_overwrite_moves_it_aside(config_file, tmp_path, capsys):
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    assert main(["train", str(config_file), "--out", str(foreign)]) == 2
    assert "not empty and is not an atlens run (it holds thesis.tex)" in capsys.readouterr().err
    assert (foreign / "thesis.tex").read_text() == "years of work" and len(list(foreign.iterdir())) == 1
    assert main(["train", str(config_file), "--out", str(foreign), "--overwrite"]) == 0
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("notes.replaced-")]
    assert len(moved) == 1 and (moved[0] / "thesis.tex").read_text() == "years of work"
    assert (foreign / "summary.json").is_file()
    capsys.readouterr()
    assert main(["train", str(config_file), "--out", str(foreign)]) == 0  # the same command on a finished run
    assert "is already complete; its summary" in capsys.readouterr().out
    assert main(["train", str(config_file), "--out", str(foreign), "--set", "optim.lr=0.2", "--set", "seed=3"]) == 2
    err = capsys.readouterr().err  # another config: refused, what differs named
    assert "holds a run of another config: optim.lr (0.2 here, " in err and "; seed (3 here, 0 in the run)" in err
    assert "--resume" in err


def test_the_same_command_continues_an_interrupted_run_and_says_so(config_file, tmp_path, capsys):
    """What a requeued cluster job runs: the command that started the run (on a machine with other threads, too)."""
    from atlens.training.run import train_to_completion
    from tests.conftest import Interrupt, stop_after

    out = tmp_path / "run"
    with pytest.raises(Interrupt):  # in epoch 2, with epoch 1's checkpoint written
        train_to_completion(load_config(config_file), out, callbacks=[stop_after(2)], log=lambda message: None)
    capsys.readouterr()
    assert main(["train", str(config_file), "--out", str(out)]) == 0
    assert f"resuming {out} after epoch 1/" in capsys.readouterr().out
    uninterrupted = tmp_path / "uninterrupted"
    assert main(["train", str(config_file), "--out", str(uninterrupted)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    again = [json.loads(line) for line in (uninterrupted / "metrics.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in rows] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in again]
    capsys.readouterr()  # how the process runs is not what the run computes: other threads are no other config
    assert main(["train", str(config_file), "--out", str(out), "--set", "runtime.threads=1"]) == 0
    assert "is already complete" in capsys.readouterr().out


def test_a_second_process_cannot_write_into_a_run_in_use(config_file, tmp_path, capsys):
    from atlens.runs import RunDirectory

    out = tmp_path / "run"
    assert main(["train", str(config_file), "--out", str(out)]) == 0
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from atlens.runs import RunDirectory\n"
        f"with RunDirectory({str(out)!r}).lock():\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".owner.json"}
        for command in (["train", "--resume", str(out)], ["cas", str(out), "--examples", "16"]):
            capsys.readouterr()
            assert main(command) == 1  # a failure to proceed, not a usage error
            err = capsys.readouterr().err
            assert f"is in use by process {holder.pid}" in err and len(err.strip().splitlines()) == 1
        after = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".owner.json"}
        assert after == before
    finally:
        holder.kill()
        holder.wait()
    with RunDirectory(out).lock():  # the killed holder's lock is taken over without any clean-up
        pass


def _sample(action):
    """A value the option accepts, other than its default."""
    if action.nargs == 0:
        return []
    if action.choices:
        return [next(c for c in action.choices if c != action.default)]
    kind = getattr(action.type, "__name__", "")
    return [{"_number": "0.1", "int": "3", "float": "0.3", "_floats": "0.5,0.5,0.5"}.get(kind, "somewhere")]


BASES = {("train", "config"): ["train", "c.yaml"], ("train", "resume"): ["train", "--resume", "r"],
         ("sweep", "sequential"): ["sweep", "c.yaml"], ("sweep", "local"): ["sweep", "c.yaml", "--launcher", "local"],
         ("sweep", "slurm"): ["sweep", "c.yaml", "--launcher", "slurm"],
         ("report", "html"): ["report", "r"], ("report", "markdown"): ["report", "r", "--markdown"]}
for command in ("cas", "eval", "analyze"):
    BASES[(command, "run")] = [command, "r"]
    BASES[(command, "model")] = [command, "--model", "timm:resnet18", "--data", "digits"]


def test_every_option_of_every_command_is_refused_where_it_does_not_apply(capsys):
    """Walks the parser: each option declares where it applies, and on every other path the command stops before
    any work, naming the option and the path (the bases name folders that do not exist: nothing else could be
    reported first)."""
    from atlens.cli.main import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    refused = 0
    for command, sub in subparsers.items():
        rules = parser.options.rules[command]
        declared = {a.dest for a in sub._actions if a.dest != "help"}
        assert declared == set(rules), f"atlens {command}: options without a declared path: {declared - set(rules)}"
        paths = parser.options.commands[command].paths
        for action in sub._actions:
            rule = rules.get(action.dest)
            if rule is None:
                continue
            for path in set(paths) - set(rule.paths):
                base = BASES[(command, path)]
                value = _sample(action)
                argv = (base[:1] + value + base[1:]) if not action.option_strings else base + [rule.flag, *value]
                assert main(argv) == 2, argv
                error = capsys.readouterr().err
                assert f"{rule.flag} does not apply to {paths[path]}" in error, (argv, error)
                assert error.count("\n") == 1
                refused += 1
    assert refused >= 40  # the outside-model options of cas, eval and analyze alone are 39


def test_an_option_that_applies_is_not_refused(capsys):
    from atlens.cli.main import build_parser

    parser = build_parser()
    for argv in (["eval", "r", "--epsilon", "4/255", "--attacks", "pgd20"], ["cas", "r", "--clean", "--examples", "5"],
                 ["train", "c.yaml", "--set", "optim.epochs=1", "--dry-run"], ["report", "r", "--markdown", "--vary",
                                                                               "seed"]):
        parser.options.refuse(parser.parse_args(argv))  # nothing raised


def test_the_command_line_starts_without_importing_torch():
    """Every subprocess of a sweep, torchrun or a kill test pays the CLI's start: the parser and its help texts
    import no registry (their lists are read when the help is shown)."""
    code = ("import sys; from atlens.cli.main import build_parser; build_parser().parse_args(['eval', 'r']); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_the_evaluation_estimate_names_what_dominates_what_was_asked():
    from atlens.cli.evaluate import eval_hint

    assert eval_hint(["clean", "pgd20"]) == "PGD-20 dominates; --examples N evaluates a subset"
    assert eval_hint(["clean", "fgsm", "pgd20", "pgd100", "cw", "autoattack"]) == (
        "AA dominates; --attacks chooses fewer, --examples N evaluates a subset")
    assert eval_hint(["pgd100", "cw"]) == "PGD-100 and CW∞ dominate; --attacks chooses fewer, --examples N evaluates " \
                                          "a subset"
