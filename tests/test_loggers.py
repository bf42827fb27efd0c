"""Loggers named in a config record what researchers look for: the config, every epoch's metrics with CAS, the
summary, the figures; an interrupted run closes its logger run, and the resumed one continues it. Checked offline:
W&B's offline mode (its run file read back record by record) and MLflow's local file store."""

from __future__ import annotations

import glob
import json
import struct

import pytest

from tests.conftest import Interrupt, stop_after, train_run

RUN = {"analysis.cas_every": 1, "optim.epochs": 2}


def wandb_records(folder) -> list:
    """The records of every W&B offline run file under ``folder``, in order (the file is a LevelDB-style log of
    protobuf records: a 7-byte header, then 32 KiB blocks of chunks with a 7-byte header each)."""
    from wandb.proto import wandb_internal_pb2 as pb

    records = []
    for path in sorted(glob.glob(str(folder / "wandb" / "offline-run-*" / "run-*.wandb"))):
        raw, pos, chunks = open(path, "rb").read(), 7, []
        while pos + 7 <= len(raw):
            if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
                pos += 32768 - pos % 32768
                continue
            _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
            if length == 0 and kind == 0:
                break
            chunks.append(raw[pos + 7:pos + 7 + length])
            pos += 7 + length
            if kind in (1, 4):  # a full record, or the last chunk of one
                record = pb.Record()
                record.ParseFromString(b"".join(chunks))
                records.append(record)
                chunks = []
    return records


def test_wandb_offline_records_the_config_every_epoch_cas_the_summary_and_the_figures(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run, summary = train_run(tmp_path / "run", loggers=[{"name": "wandb", "mode": "offline", "project": "t"}], **RUN)
    records = wandb_records(run.path)
    kinds = [r.WhichOneof("record_type") for r in records]
    start = records[kinds.index("run")].run
    assert start.display_name == "run"
    config = {item.key: json.loads(item.value_json) for item in start.config.update}
    assert config["optim"]["epochs"] == 2 and config["objective"]["name"] == "pgd_at"
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
               for r in records if r.HasField("history")]
    rows = run.read_metrics()
    assert [h["_step"] for h in history] == [1, 2]
    for logged, row in zip(history, rows):
        assert logged["test_robust_acc"] == pytest.approx(row["test_robust_acc"])
        assert logged["cas"] == pytest.approx(row["cas"])
    updates = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
               for r in records if r.HasField("summary") for i in r.summary.update}
    assert updates["cas_best"] == pytest.approx(summary["cas_best"])
    assert updates["best_robust_acc"] == pytest.approx(summary["best_robust_acc"])
    artefact = next(r.artifact for r in records if r.HasField("artifact"))
    files = {m.path for m in artefact.manifest.contents}
    assert "curves.png" in files and "analysis/cas-best.png" in files
    assert records[-1].HasField("exit") and records[-1].exit.exit_code == 0


def test_mlflow_file_store_records_the_run_and_an_interrupted_run_continues_the_same_mlflow_run(tmp_path,
                                                                                               monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    logger = [{"name": "mlflow", "tracking_uri": uri, "experiment": "atlens-test"}]
    with pytest.raises(Interrupt):
        train_run(tmp_path / "run", callbacks=[stop_after(2)], loggers=logger, **RUN)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("atlens-test")
    (interrupted,) = client.search_runs([experiment.experiment_id])
    assert interrupted.info.status == "FAILED"  # closed by the exception hook, not left RUNNING
    run, summary = train_run(tmp_path / "run", loggers=logger, **RUN)  # resumes from epoch 1
    (finished,) = client.search_runs([experiment.experiment_id])  # the same MLflow run, continued
    assert finished.info.run_id == interrupted.info.run_id and finished.info.status == "FINISHED"
    assert finished.data.params["optim.epochs"] == "2" and finished.data.params["objective.name"] == "pgd_at"
    history = client.get_metric_history(finished.info.run_id, "cas")
    rows = run.read_metrics()
    # epoch 1 logged before the interruption (which came before epoch 2 was logged), epoch 2 by the resumed run
    assert sorted(m.step for m in history) == [1, 2]
    assert {m.step: m.value for m in history}[1] == pytest.approx(rows[0]["cas"])
    assert finished.data.metrics["summary.cas_last"] == pytest.approx(summary["cas_last"])
    artefacts = {a.path for a in client.list_artifacts(finished.info.run_id)}
    assert {"config.json", "summary.json", "curves.png", "analysis"} <= artefacts
    assert "analysis/cas-best.png" in {a.path for a in client.list_artifacts(finished.info.run_id, "analysis")}
