"""Runs, metrics, reports and trained models in MLflow, against a real MLflow
tracking server on loopback (SQLite backend, local artifact root) started by this module."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests

from segray.models.store import resolve_version
from segray.tracking import flatten, metric_key
from tests.conftest import S3Proxy, SharedRun, free_port, job

SERVER_START_S = 120  # the server took about 22 s to answer on this 2-core machine


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> str:
    """`mlflow server` (the dev group's mlflow-skinny with its server's packages) on a free
    loopback port; its URL."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = open(root / "server.log", "wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts")],
        cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_S
    while True:
        try:
            if requests.get(url + "/health", timeout=2).ok:
                break
        except requests.RequestException:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            os.killpg(server.pid, signal.SIGKILL)
            pytest.fail(f"the MLflow server did not start: {(root / 'server.log').read_text()[-3000:]}")
        time.sleep(1)
    yield url
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def client(mlflow_server):
    from segray.models.mlflow_registry import mlflow_client

    return mlflow_client(mlflow_server)


def tracking(url: str, experiment: str) -> list[str]:
    return ["--mlflow-tracking-uri", url, "--mlflow-experiment", experiment]


@pytest.fixture(scope="module")
def tracked_run(shared_run, mlflow_server) -> SharedRun:
    """The session's shared benchmark, logged in MLflow from its folder (jobs/log_mlflow.py,
    what a benchmark run with --mlflow-tracking-uri calls when it ends): four trainings,
    each registered as a version of its model."""
    assert job("log_mlflow")([str(shared_run.run), *tracking(mlflow_server, "benchmarks")]) == 0
    return shared_run


TRAININGS = {"unet": "segray-unet", "unet[frac=0.5]": "segray-unet-frac-0.5", "resnet34_unet": "segray-resnet34_unet",
             "resnet34_unet[frac=0.5]": "segray-resnet34_unet-frac-0.5"}


def runs_of(client, experiment: str, role: str | None = None) -> list:
    found = client.get_experiment_by_name(experiment)
    where = f"tags.`segray.role` = '{role}'" if role else ""
    return client.search_runs([found.experiment_id], where) if found else []


def test_the_benchmark_is_one_parent_run_with_summary_and_report_metrics(tracked_run, client):
    summary = json.loads((tracked_run.run / "summary.json").read_text())
    report = json.loads((tracked_run.run / "report" / "report.json").read_text())
    (parent,) = runs_of(client, "benchmarks", "run")
    assert parent.info.status == "FINISHED"
    tags, params, metrics = parent.data.tags, parent.data.params, parent.data.metrics
    assert tags["segray.run_id"] == "shared" and tags["segray.kind"] == "benchmark"
    assert tags["segray.dataset_fingerprint"] == summary["dataset_fingerprint"]
    assert tags["mlflow.source.git.commit"] == json.loads((tracked_run.run / "run.json").read_text())["git_sha"]
    assert tags["segray.predictions"] == str(tracked_run.run / "predictions")
    assert params["train.lr"] == str(summary["config"]["train"]["lr"])
    assert json.loads(params["train.fractions"]) == [0.5, 1.0]
    assert set(TRAININGS) < set(summary["models"])
    for model, numbers in summary["models"].items():
        key = metric_key(model)
        assert metrics[f"{key}/mean_iou"] == pytest.approx(numbers["mean_iou"], abs=1e-12)
        assert metrics[f"{key}/mean_iou_detected"] == pytest.approx(numbers["mean_iou_detected"], abs=1e-12)
        for name in ("mean_iou_ci_low", "mean_iou_ci_high", "median_iou", "pooled_iou", "mean_dice",
                     "mean_boundary_iou", "latency_p50_ms", "latency_p95_ms", "images_per_s"):
            assert metrics[f"{key}/{name}"] == pytest.approx(report["models"][model][name], abs=1e-12)
    assert metrics["rows_written"] == summary["rows"]["written"] == 20 * len(summary["models"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.json", "training.json", "run.json", "report"} <= artifacts
    assert "report/report.html" in {a.path for a in client.list_artifacts(parent.info.run_id, "report")}


def test_each_trained_model_is_a_child_run_with_its_epoch_curve(tracked_run, client):
    training = json.loads((tracked_run.run / "training.json").read_text())
    (parent,) = runs_of(client, "benchmarks", "run")
    children = {run.info.run_name: run for run in runs_of(client, "benchmarks", "training")}
    assert set(children) == set(training) == set(TRAININGS)
    for name, run in children.items():
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["segray.version"] == training[name]["version"]
        history = training[name]["history"]
        for metric in ("val_iou", "train_loss"):
            curve = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, metric))
            assert curve == [(h["epoch"], pytest.approx(h[metric])) for h in history]
        assert run.data.params["train_images"] == str(training[name]["train_images"])
    assert children["unet[frac=0.5]"].data.params["train_fraction"] == "0.5"


def test_each_trained_model_is_a_registered_version_that_names_its_store_version(tracked_run, client):
    training = json.loads((tracked_run.run / "training.json").read_text())
    summary = json.loads((tracked_run.run / "summary.json").read_text())
    for name, registered in TRAININGS.items():
        (version,) = client.search_model_versions(f"name = '{registered}'")
        tags = version.tags
        assert tags["segray.run_id"] == "shared"
        assert tags["segray.dataset_fingerprint"] == summary["dataset_fingerprint"]
        assert float(tags["segray.best_val_iou"]) == pytest.approx(training[name]["best_val_iou"])
        assert tags["segray.checkpoint_store"] == str(tracked_run.out / "store")
        # either name finds the other: the store's version from MLflow's, MLflow's from the store's
        model, _, stored = tags["segray.version"].rpartition("@")
        assert resolve_version(tags["segray.checkpoint_store"], model, stored)["version"] == "shared"
        (found,) = client.search_model_versions(f"tags.`segray.version` = '{training[name]['version']}'")
        assert (found.name, found.version) == (registered, version.version)


def test_a_registered_version_evaluates_to_the_runs_own_rows(tracked_run, mlflow_server, client, capsys):
    """`--version unet=models:/segray-unet@champion` in evaluate loads the registered checkpoint,
    as a version number does for the subset's training, and their rows equal the benchmark's,
    under the same version names."""
    client.set_registered_model_alias("segray-unet", "champion", "1")
    out = tracked_run.out
    argv = ["--preset", "demo", *tracked_run.dataset_options(), "--output", str(out),
            "--run-id", "champion", "--models", "unet,unet[frac=0.5]",
            "--version", "unet=models:/segray-unet@champion", "--version", "unet[frac=0.5]=models:/segray-unet-frac-0.5/1",
            *tracking(mlflow_server, "evaluations")]
    assert job("evaluate")(argv) == 0
    columns = ["image_id", "model", "model_version", "iou", "dice"]
    before = pq.read_table(tracked_run.run / "predictions", columns=columns).to_pandas()
    before = before[before["model"].isin(["unet", "unet[frac=0.5]"])]
    after = pq.read_table(out / "champion" / "predictions", columns=columns).to_pandas()
    assert len(after) == len(before) == 40
    joined = before.merge(after, on=["image_id", "model", "model_version"], suffixes=("", "_again"))
    assert len(joined) == 40  # the same version names: unet@shared, unet[frac=0.5]@shared
    assert (joined["iou"] - joined["iou_again"]).abs().max() < 1e-6
    assert (joined["dice"] - joined["dice_again"]).abs().max() < 1e-6
    (evaluation,) = runs_of(client, "evaluations", "run")
    assert evaluation.data.tags["segray.kind"] == "evaluate"
    assert "mlflow: logged as run" in capsys.readouterr().out


def test_a_version_selector_that_names_nothing_is_an_error(tracked_run, mlflow_server, capsys):
    out = tracked_run.out
    base = ["--preset", "demo", *tracked_run.dataset_options(), "--output", str(out), "--models", "unet"]
    assert job("evaluate")([*base, "--run-id", "none", "--version", "unet=models:/segray-unet/99",
                            *tracking(mlflow_server, "evaluations")]) == 2
    assert "models:/segray-unet/99" in capsys.readouterr().err
    assert job("evaluate")([*base, "--run-id", "other", "--version", "unet=models:/segray-unet-frac-0.5/1",
                            *tracking(mlflow_server, "evaluations")]) == 2
    assert "is a checkpoint of unet[frac=0.5], not of unet" in capsys.readouterr().err
    assert job("evaluate")([*base, "--run-id", "nouri", "--version", "unet=models:/segray-unet/1"]) == 2
    assert "needs tracking.uri" in capsys.readouterr().err


def test_serve_and_reevaluate_take_a_registered_version(tracked_run, mlflow_server, client):
    from segray.serve.options import serve_settings
    from segray.settings import load

    config = load("serve", ["--models", "unet", "--version", "unet=models:/segray-unet@champion",
                            "--mlflow-tracking-uri", mlflow_server])
    (spec,) = serve_settings(config).specs
    assert spec.version == "unet@shared"

    out = tracked_run.out
    assert job("reevaluate")(["--preset", "demo", *tracked_run.dataset_options(), "--results",
                              str(out / "registered-table"), "--run-id", "nightly", "--models", "unet",
                              "--version", "unet=models:/segray-unet/1",
                              *tracking(mlflow_server, "nightly")]) == 0
    rows = pq.read_table(out / "registered-table" / "run=nightly", columns=["model_version"]).to_pandas()
    assert set(rows["model_version"]) == {"unet@shared"}
    (nightly,) = runs_of(client, "nightly", "run")
    assert nightly.data.tags["segray.kind"] == "reevaluate"
    assert nightly.data.metrics["unet_at_shared/images"] == 20


def test_a_run_logged_again_is_not_duplicated(tracked_run, mlflow_server, client, capsys):
    """Logged again into its experiment, a run is found there; logged into another
    experiment, it is that one's too, and the first keeps its registered versions."""
    before = {run.info.run_id for run in runs_of(client, "benchmarks")}
    assert job("log_mlflow")([str(tracked_run.run), *tracking(mlflow_server, "benchmarks")]) == 0
    assert "was logged already" in capsys.readouterr().out
    assert {run.info.run_id for run in runs_of(client, "benchmarks")} == before
    recorded = json.loads((tracked_run.run / "run.json").read_text())["mlflow"]
    assert sorted(recorded["registered"]) == sorted(f"models:/{name}/1" for name in TRAININGS.values())  # kept
    assert job("log_mlflow")([str(tracked_run.run), *tracking(mlflow_server, "copy")]) == 0
    assert len(runs_of(client, "copy", "run")) == 1
    versions = client.search_model_versions("name = 'segray-unet'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert client.get_model_version_by_alias("segray-unet", "champion").version == "1"


def test_a_tracking_server_that_is_down_loses_nothing(ray_session, mlflow_server, client, synthetic_root, tmp_path,
                                                     capsys):
    """The server is unreachable when the run ends: the benchmark completes, exit 0, with a
    warning that says how to log it. The server then goes away in the middle of logging it:
    that attempt fails and leaves an unfinished run. Once the server is back,
    jobs/log_mlflow.py replaces that attempt: one finished run, one version per training."""
    proxy = S3Proxy(int(mlflow_server.rsplit(":", 1)[1]), free_port())  # a loopback relay the test can cut
    proxy.cut()
    argv = ["--preset", "demo", "--dataset", str(synthetic_root), "--models", "unet", "--image-size", "32",
            "--unet-epochs", "1", "--output", str(tmp_path), "--run-id", "offline", *tracking(proxy.url, "down")]
    assert job("benchmark")(argv) == 0
    said = capsys.readouterr().out
    assert "warning: the run was not logged in MLflow" in said
    assert f"python jobs/log_mlflow.py {tmp_path / 'offline'}" in said
    assert json.loads((tmp_path / "offline" / "summary.json").read_text())["status"] == "complete"
    assert runs_of(client, "down") == []

    proxy.restore()
    proxy.cut_on(b"/model-versions/create")  # the server goes away while the run is being logged
    assert job("log_mlflow")([str(tmp_path / "offline"), *tracking(proxy.url, "down")]) == 1
    assert [run.info.status for run in runs_of(client, "down", "run")] == ["RUNNING"]

    proxy.restore()
    assert job("log_mlflow")([str(tmp_path / "offline"), *tracking(proxy.url, "down")]) == 0
    assert job("log_mlflow")([str(tmp_path / "offline"), *tracking(proxy.url, "down")]) == 0
    (parent,) = runs_of(client, "down", "run")
    assert parent.info.status == "FINISHED"
    assert [run.info.run_name for run in runs_of(client, "down", "training")] == ["unet"]
    versions = client.search_model_versions("tags.`segray.run_id` = 'offline'")
    assert len(versions) == 1 and versions[0].run_id == runs_of(client, "down", "training")[0].info.run_id
    proxy.cut()


def test_without_a_tracking_uri_mlflow_is_not_imported(tmp_path):
    code = ("import sys; import segray.pipeline, segray.tracking, segray.serve.options; "
            "from segray.cli import job_config, mlflow_tracking, trained_models; "
            "a = job_config('evaluate', ['--version', 'unet=latest', '--checkpoint-store', '" + str(tmp_path) + "']); "
            "print(mlflow_tracking(a)[0], trained_models(a, 'latest').tracking_uri, "
            "sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    answer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert answer.stdout.split() == ["None", "None", "[]"], answer.stderr


def test_names_become_mlflow_keys():
    assert metric_key("unet[frac=0.25]") == "unet.frac_0.25"
    assert metric_key("langsam/union[people.@0.4]") == "langsam/union.people._at_0.4"
    assert metric_key("langsam/sam_score[a, b@0.3]") == "langsam/sam_score.a_ b_at_0.3"
    assert flatten({"train": {"lr": 0.001, "epochs": {"unet": 3}}, "models": ["unet", "langsam"]}) == {
        "train.lr": "0.001", "train.epochs.unet": "3", "models": '["unet", "langsam"]'}
    assert len(flatten({"prompt": "x" * 7000})["prompt"]) == 6000


def test_log_mlflow_refuses_a_folder_without_a_finished_run(tmp_path, mlflow_server, capsys, monkeypatch):
    (tmp_path / "run.json").write_text('{"status": "interrupted"}')
    assert job("log_mlflow")([str(tmp_path), *tracking(mlflow_server, "nothing")]) == 2
    assert "holds no finished run" in capsys.readouterr().err
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert job("log_mlflow")([str(tmp_path)]) == 2
    assert "no tracking server" in capsys.readouterr().err


def test_a_version_registered_by_hand_is_named_by_its_number_not_its_alias(tracked_run, mlflow_server, client):
    """A version without segray's tags (registered from the UI) names the rows by its number:
    an alias moves, and a re-evaluation would take the next champion's rows for done."""
    from segray.models.mlflow_registry import resolve_registered

    first = client.get_model_version("segray-unet", "1")
    by_hand = client.create_model_version("segray-unet", source=first.source, run_id=first.run_id)
    client.set_registered_model_alias("segray-unet", "by-hand", by_hand.version)
    found = resolve_registered("models:/segray-unet@by-hand", "unet", mlflow_server, str(tracked_run.out / "cache"))
    assert found["version"] == f"models:/segray-unet/{by_hand.version}"


def test_a_tracking_uri_mlflow_cannot_use_is_a_warning_not_a_failure(tracked_run, capsys):
    assert job("log_mlflow")([str(tracked_run.run), "--mlflow-tracking-uri", "htp://127.0.0.1:1"]) == 1
    assert "warning: the run was not logged in MLflow (htp://127.0.0.1:1)" in capsys.readouterr().out
