"""The jobs end to end, in-process on the shared local Ray, at a tiny size."""

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from segray.models.checkpoint import weights_sha256
from segray.models.langsam_rules import VARIANTS
from segray.models.store import resolve_version
from segray.results.read import read_rows
from tests.conftest import job


@pytest.fixture(scope="module")
def demo_run(ray_session, tiny_weights, tmp_path_factory):
    """The demo preset, shrunk: 16 images at 64 px, one epoch each, tiny LangSAM; the
    trained models are recorded in a checkpoint store."""
    out = tmp_path_factory.mktemp("runs")
    argv = ["--preset", "demo", "--dataset", "synthetic:16", "--cache-dir", str(out / "cache"),
            "--output", str(out), "--run-id", "tiny", "--image-size", "64",
            "--unet-epochs", "1", "--resnet-epochs", "1", *langsam_options(tiny_weights),
            "--checkpoint-store", str(out / "store")]
    return job("benchmark")(argv), out, argv


def langsam_options(tiny_weights) -> list[str]:
    detector, sam = tiny_weights
    return ["--langsam-detector", str(detector), "--langsam-sam", str(sam), "--langsam-box-threshold", "0"]


def test_demo_benchmark_writes_every_row_and_the_summary(demo_run):
    status, out, _ = demo_run
    assert status == 0
    summary = json.loads((out / "tiny" / "summary.json").read_text())
    variants = ["resnet34_unet", "unet", *VARIANTS]
    assert summary["status"] == "complete"
    n = 16 * len(variants)
    assert summary["rows"] == {"expected": n, "written": n, "errors": 0, "errors_by_model": {}}
    assert sorted(summary["models"]) == sorted(variants)
    for model in variants:
        assert summary["models"][model]["images"] == summary["manifest"]["val"]
        assert 0 <= summary["models"][model]["mean_iou"] <= 1
    for model in ("unet", "resnet34_unet"):
        assert [row["epoch"] for row in summary["training"][model]["history"]] == [1]

    rows = pq.read_table(out / "tiny" / "predictions").to_pandas()
    assert len(rows) == 16 * len(variants)
    assert rows.groupby("model")["image_id"].nunique().eq(16).all()
    langsam = rows[rows["model"].str.startswith("langsam/")]
    assert langsam["num_detections"].ge(1).all() and langsam["box_score"].notna().all()


def test_the_timeline_shows_one_decode_for_three_models_and_langsam_beside_the_training(demo_run):
    """From the run's own summary.json: one decode stage that read each image once, three
    model pools fed from it, every row scored and written once, and LangSAM's pool at
    work before the last training ended (it needs no training, so it does not wait)."""
    status, out, _ = demo_run
    summary = json.loads((out / "tiny" / "summary.json").read_text())
    stages = summary["timeline"]["stages"]
    assert [name for name in stages if "decode" in name] == ["decode"]
    assert stages["decode"]["rows_in"] == stages["decode"]["rows_out"] == 16
    for model in ("langsam", "unet", "resnet34_unet"):
        assert stages[f"model:{model}"]["rows_in"] == 16
    rows = summary["rows"]["written"]
    assert stages["score"]["rows_in"] == 16 and stages["score"]["rows_out"] == rows
    assert stages["write"]["rows_in"] == rows
    trainings = [stages[f"train:{model}"] for model in ("unet", "resnet34_unet")]
    assert all(training["batches"] == 1 for training in trainings)  # one epoch each
    assert stages["model:langsam"]["start"] < max(training["end"] for training in trainings)
    # The trained models' pools waited for their training, and started after it.
    for model in ("unet", "resnet34_unet"):
        assert stages[f"model:{model}"]["start"] >= stages[f"train:{model}"]["end"]


def test_a_run_id_is_not_written_twice(demo_run):
    status, out, argv = demo_run
    assert job("benchmark")(argv) == 2
    assert json.loads((out / "tiny" / "summary.json").read_text())["status"] == "complete"


def test_evaluate_job_reports_langsam_unavailable_and_finishes_the_rest(demo_run, monkeypatch, capsys):
    _, out, _ = demo_run
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    status = job("evaluate")(
        ["--preset", "demo", "--dataset", "synthetic:16", "--cache-dir", str(out / "cache"),
         "--output", str(out), "--run-id", "eval", "--models", "unet,langsam",
         "--checkpoints-from", str(out / "tiny")]
    )
    assert status == 0
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert list(summary["models"]) == ["unet"]
    assert "HF_HUB_OFFLINE" in summary["unavailable"]["langsam"]
    assert "UNAVAILABLE" in capsys.readouterr().out
    assert summary["rows"] == {"expected": 16, "written": 16, "errors": 0, "errors_by_model": {}}


def test_an_unusable_dataset_exits_2_with_the_reason(ray_session, tmp_path, capsys):
    status = job("benchmark")(["--preset", "demo", "--dataset", str(tmp_path / "nowhere"), "--output", str(tmp_path)])
    assert status == 2
    assert "no dataset found" in capsys.readouterr().err


def test_benchmark_rows_name_the_stored_weights_and_join_a_reevaluation(demo_run, tiny_weights):
    """Every benchmark row's model_version resolves in the checkpoint store to the checkpoint
    that produced it, and a re-evaluation over the same store names the same weights with
    the same version strings: the two tables join on model_version."""
    status, out, _ = demo_run
    assert status == 0
    training = json.loads((out / "tiny" / "training.json").read_text())
    rows = pq.read_table(out / "tiny" / "predictions", columns=["image_id", "model", "model_version", "iou"]).to_pandas()
    assert rows["model_version"].notna().all()
    for model in ("unet", "resnet34_unet"):
        (version,) = rows.loc[rows["model"] == model, "model_version"].unique()
        assert version == f"{model}@tiny" == training[model]["version"]
        record = resolve_version(str(out / "store"), model, version)
        assert weights_sha256(record["checkpoint"]) == weights_sha256(training[model]["checkpoint"])

    assert job("reevaluate")(["--preset", "demo", "--dataset", "synthetic:16", "--cache-dir", str(out / "cache"),
                              "--results", str(out / "table"), "--checkpoint-store", str(out / "store"),
                              "--run-id", "nightly", "--image-size", "64", *langsam_options(tiny_weights)]) == 0
    again = pq.read_table(out / "table" / "run=nightly", columns=["image_id", "model", "model_version", "iou"]).to_pandas()
    assert sorted(again["model_version"].unique()) == sorted(rows["model_version"].unique())
    joined = rows.merge(again, on=["image_id", "model", "model_version"], suffixes=("", "_again"))
    assert len(joined) == len(rows) == len(again)
    # the same weights on the same images: the same scores
    trained = joined[joined["model"].isin(["unet", "resnet34_unet"])]
    assert (trained["iou"] - trained["iou_again"]).abs().max() < 1e-6
    summary = json.loads((out / "tiny" / "summary.json").read_text())
    assert pd.Series({m: s["model_version"] for m, s in summary["models"].items()}).notna().all()


def test_a_checkpoint_store_that_refuses_the_write_fails_the_benchmark(ray_session, synthetic_root, tmp_path, caplog):
    """The run itself completes, but its trained model is not where the team looks for it:
    the job says so and exits 1."""
    store = tmp_path / "store"
    store.write_text("a file where the store's folder should be")
    argv = ["--preset", "demo", "--dataset", str(synthetic_root), "--models", "unet", "--image-size", "32",
            "--unet-epochs", "1", "--output", str(tmp_path), "--run-id", "unrecorded", "--checkpoint-store", str(store)]
    assert job("benchmark")(argv) == 1
    assert json.loads((tmp_path / "unrecorded" / "summary.json").read_text())["status"] == "complete"
    assert f"recording the trained models in {store} failed" in caplog.text


def test_a_langsam_sweeps_rows_are_each_settings_rows_alone(ray_session, dataset_copy, tiny_weights, tmp_path):
    """The sweep through jobs/evaluate.py: its rows for a (prompt, threshold) are, but for
    their variant names and versions, what a run with that setting alone writes."""
    common = ["--preset", "demo", "--dataset", str(dataset_copy), "--models", "langsam", "--output", str(tmp_path),
              *langsam_options(tiny_weights)[:4]]
    assert job("evaluate")([*common, "--run-id", "sweep", "--langsam-box-threshold", "0",
                            "--langsam-box-thresholds", "0.999", "--langsam-prompts", "human."]) == 0
    compared = ["image_id", "model", "status", "iou", "dice", "boundary_iou", "box_score", "mask_score",
                "num_detections", "mask_png"]
    swept = read_rows(str(tmp_path / "sweep" / "predictions"), [*compared, "model_version"])
    assert len(swept) == 12 * 2 * 2 * len(VARIANTS) and swept["model_version"].nunique() == 1
    def setting(prompt: str, threshold: str):
        suffix = f"[{prompt}@{threshold}]"
        rows = swept[swept["model"].astype(str).str.endswith(suffix)].copy()
        rows["model"] = rows["model"].astype(str).str.removesuffix(suffix)
        return rows[compared].sort_values(["image_id", "model"]).reset_index(drop=True)

    # The settings differ (the higher threshold keeps fewer boxes) ...
    assert (setting("human.", "0.999")["num_detections"] < setting("person.", "0.0")["num_detections"]).any()
    # ... and a setting's rows are those of a run with it alone (the model-level test covers every setting).
    assert job("evaluate")([*common, "--run-id", "alone", "--langsam-prompt", "human.",
                            "--langsam-box-threshold", "0.999"]) == 0
    alone = read_rows(str(tmp_path / "alone" / "predictions"), compared)
    alone["model"] = alone["model"].astype(str)
    pd.testing.assert_frame_equal(setting("human.", "0.999"),
                                  alone.sort_values(["image_id", "model"]).reset_index(drop=True),
                                  check_categorical=False)
