"""Early-warning signals and the rules that select a checkpoint from them."""

from __future__ import annotations

import json

import pytest
import torch

from atlens.analysis import compute_cas
from atlens.cli.main import main
from atlens.config import EarlyStopConfig, config_from_dict
from atlens.errors import ConfigError
from atlens.runs import load_model
from atlens.training.early_stop import CASTrendRule, SmallLossRule, StabilityRule, ValidationRule, make_rule, replay
from tests.conftest import synthetic_config, train_run


def rows(key, values, every=1):
    return [{"epoch": e, key: v, "test_robust_acc": 0.1 if e % every == 0 else None}
            for e, v in enumerate(values, start=1)]


def test_the_lsc_rule_selects_the_last_epoch_before_the_share_crosses():
    result = replay(SmallLossRule(0.2), rows("small_loss_share", [0.0, 0.05, 0.1, 0.19, 0.25, 0.1, 0.4]))
    assert result["selected_epoch"] == 4 and result["overfitting_declared_at"] == 5
    # only evaluated epochs (2, 4, 6) can be selected; the signal is read at every epoch
    result = replay(SmallLossRule(0.2), rows("small_loss_share", [0.0, 0.05, 0.1, 0.19, 0.25, 0.1, 0.4], every=2))
    assert result["selected_epoch"] == 4 and result["overfitting_declared_at"] == 5
    result = replay(SmallLossRule(0.2), rows("small_loss_share", [0.0, 0.05, 0.1, 0.15, 0.19, 0.25, 0.4], every=2))
    assert result["selected_epoch"] == 4 and result["overfitting_declared_at"] == 6


def test_the_cas_trend_rule_selects_the_smoothed_peak_and_waits_for_a_sustained_drop():
    values = [5.0, 7.0, 9.0, 8.0, 6.0, 5.0, 4.0, 4.0]
    result = replay(CASTrendRule(window=2, drop=0.1, patience=2), rows("train_cas", values))
    # moving averages: 5, 6, 8, 8.5, 7, 5.5, 4.5, 4 -> peak 8.5 at epoch 4; below 7.65 from epoch 5 on
    assert result["selected_epoch"] == 4 and result["overfitting_declared_at"] == 6


def test_the_validation_rule_is_the_best_validation_accuracy_with_patience():
    result = replay(ValidationRule(patience=2), rows("val_robust_acc", [0.1, 0.3, 0.2, 0.35, 0.3, 0.3, 0.2]))
    assert result["selected_epoch"] == 4 and result["overfitting_declared_at"] == 6


def test_the_unlabelled_rule_selects_the_best_stability_and_needs_unlabelled_inputs():
    result = replay(make_rule(EarlyStopConfig(rule="unlabelled", patience=2)),
                    rows("unlabelled_stability", [0.2, 0.5, 0.4, 0.45, 0.3]))
    assert isinstance(make_rule(EarlyStopConfig(rule="unlabelled")), StabilityRule)
    assert result["selected_epoch"] == 2 and result["overfitting_declared_at"] == 4
    with pytest.raises(ConfigError, match="data.unlabelled"):
        config_from_dict(synthetic_config(early_stop={"rule": "unlabelled"}))
    # the CAS trend read from another signal (the unlabelled inputs' CAS)
    trend = replay(CASTrendRule(1, 0.1, 1, signal="unlabelled_cas"), rows("unlabelled_cas", [1.0, 3.0, 2.0]))
    assert trend["selected_epoch"] == 2 and trend["overfitting_declared_at"] == 3


def test_unlabelled_signals_are_robustness_and_cas_with_predictions_for_labels(tmp_path):
    """Recomputed through the public API: stability is the robust accuracy of the unlabelled inputs labelled
    by the model's own clean predictions, unlabelled_cas their CAS grouped by those predictions."""
    from atlens.api import cas, evaluate
    from atlens.config import load_config
    from atlens.data import ImageTensors
    from atlens.runs import run_data

    run, summary = train_run(tmp_path / "run", **{"optim.epochs": 2, "data.per_class": 32, "data.unlabelled": 64,
                                                   "early_stop": {"rule": "unlabelled"}})
    last = run.read_metrics()[-1]
    assert 0 <= last["unlabelled_stability"] <= 1
    assert summary["early_stop"]["rule"]["signal"] == "unlabelled_stability"
    data = run_data(load_config(run.config))
    assert data.unlabelled.shape == (64, 1, 8, 8)
    seen = {tuple(x.flatten().tolist()) for x in data.train.images}
    assert not any(tuple(x.flatten().tolist()) in seen for x in data.unlabelled)  # outside the training subset
    model = load_model(run.path, "last")
    with torch.no_grad():
        predicted = model.eval()(data.unlabelled.float()).argmax(1)
    relabelled = ImageTensors(data.unlabelled, predicted, [str(c) for c in range(4)])
    recomputed = evaluate(model, relabelled, attacks=["pgd5"], epsilon=0.05)
    assert last["unlabelled_stability"] == pytest.approx(recomputed["pgd5"], abs=1e-6)
    if len(predicted.unique()) == 4:
        expected = cas(model, relabelled, attack="pgd5", epsilon=0.05).cas
        assert last["unlabelled_cas"] == pytest.approx(expected, abs=1e-4)
    else:
        assert last["unlabelled_cas"] is None


def test_unlabelled_inputs_must_exist_outside_the_training_subset():
    from atlens.data import prepare_data

    with pytest.raises(ConfigError, match=r"data.unlabelled=2000: only 1290 inputs .* lower data.unlabelled"):
        prepare_data("digits", per_class=1, unlabelled=2000)
    a, b = (prepare_data("digits", per_class=5, unlabelled=20, seed=s).unlabelled for s in (0, 1))
    assert a.shape[0] == 20 and not torch.equal(a, b)  # seeded draws


def test_rules_are_built_from_the_config_and_checked():
    assert make_rule(EarlyStopConfig()) is None
    rule = make_rule(EarlyStopConfig(rule="cas_trend", cas_window=3, cas_drop=0.2, patience=4))
    assert rule.describe() == {"name": "cas_trend", "signal": "train_cas", "window": 3, "drop": 0.2, "patience": 4}
    with pytest.raises(ConfigError, match="data.val_split"):
        config_from_dict(synthetic_config(early_stop={"rule": "val"}))
    with pytest.raises(ConfigError, match="early_stop.small_loss_limit"):
        config_from_dict(synthetic_config(early_stop={"rule": "small_loss", "small_loss_limit": 1.5}))


def test_signals_are_logged_and_small_loss_share_is_the_first_lsc_group(tmp_path):
    run, _ = train_run(tmp_path / "run", **{"optim.epochs": 2})
    for row in run.read_metrics():
        assert row["small_loss_share"] == pytest.approx(row["loss_hist"][0], abs=1e-5)
        assert row["train_cas"] is not None and 0 <= row["train_cas"] <= 4 * 3




def test_train_cas_is_the_cas_of_the_examples_the_step_trained_on(tmp_path):
    """With no attack, no augmentation, no BatchNorm and lr 0, the training examples are the clean training set
    and the model never changes: train_cas must equal CAS of the training set computed independently."""
    overrides = {"objective": {"name": "standard"}, "model": {"name": "mlp", "hidden": [16]},
                 "optim.epochs": 1, "optim.lr": 1e-9, "data.train_size": 128, "optim.weight_decay": 0.0}
    run, _ = train_run(tmp_path / "run", **overrides)
    (row,) = run.read_metrics()
    model = load_model(run.path, "last")
    from atlens.config import load_config
    from atlens.runs import run_data

    train = run_data(load_config(run.config)).train
    expected = compute_cas(model, train, [str(c) for c in range(4)], None).cas
    assert row["train_cas"] == pytest.approx(expected, abs=1e-4)


def test_early_stop_keeps_the_selected_checkpoint_and_can_stop(tmp_path, capsys):
    rule = {"rule": "small_loss", "small_loss_limit": 0.999}
    run, summary = train_run(tmp_path / "run", **{"optim.epochs": 6, "early_stop": rule})
    assert summary["early_stop"]["rule"]["name"] == "small_loss"
    assert summary["early_stop"]["selected_epoch"] == max(r["epoch"] for r in run.read_metrics())
    assert (run.checkpoints / "selected.pt").is_file()
    stopped, summary = train_run(tmp_path / "stopped", **{"optim.epochs": 6,
                                                          "early_stop": {"rule": "small_loss", "small_loss_limit": 1e-6,
                                                                         "stop": True}})
    epochs = [r["epoch"] for r in stopped.read_metrics()]
    assert summary["early_stop"]["stopped_at"] == epochs[-1] < 6
    assert summary["early_stop"]["selected_epoch"] is None  # the share was crossed at once


def test_the_command_line_records_the_selected_epoch(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps(synthetic_config(**{"optim.epochs": 2})))
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--set", "early_stop.rule=cas_trend"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["early_stop"]["selected_epoch"] in (1, 2)
    assert torch.load(tmp_path / "run" / "checkpoints" / "selected.pt", weights_only=True)["selected_by"]["name"] \
        == "cas_trend"
