"""The jobs end to end, in-process on the shared local Ray, at a tiny size."""

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from segray.models.checkpoint import weights_sha256
from segray.models.langsam_rules import VARIANTS
from segray.models.store import resolve_version
from segray.results.read import read_rows
from tests.conftest import SHARED_LANGSAM_SWEEP, job, langsam_options

TRAININGS = ["resnet34_unet", "resnet34_unet[frac=0.5]", "unet", "unet[frac=0.5]"]


def langsam_variants(summary: dict) -> list[str]:
    return [name for name in summary["models"] if name.startswith("langsam/")]


def test_the_benchmark_writes_every_row_and_the_summary(shared_run):
    assert shared_run.status == 0
    summary = shared_run.read("summary.json")
    langsam = langsam_variants(summary)
    assert len(langsam) == 2 * 2 * len(VARIANTS)  # 2 prompts x 2 box thresholds x the rules
    variants = [*TRAININGS, *langsam]
    assert summary["status"] == "complete"
    n = 20 * len(variants)
    assert summary["rows"] == {"expected": n, "written": n, "errors": 0, "errors_by_model": {}}
    assert sorted(summary["models"]) == sorted(variants)
    for model in variants:
        assert summary["models"][model]["images"] == summary["manifest"]["val"]
        assert 0 <= summary["models"][model]["mean_iou"] <= 1
    for name in TRAININGS:
        epochs = 2 if name.startswith("unet") else 1
        assert [row["epoch"] for row in summary["training"][name]["history"]] == list(range(1, epochs + 1))

    rows = pq.read_table(shared_run.run / "predictions").to_pandas()
    assert len(rows) == n
    assert rows.groupby("model")["image_id"].nunique().eq(20).all()
    langsam_rows = rows[rows["model"].str.startswith("langsam/")]
    assert langsam_rows["num_detections"].ge(1).all() and langsam_rows["box_score"].notna().all()


def test_the_timeline_shows_one_decode_for_every_model_and_langsam_beside_the_trainings(shared_run):
    """From the run's own summary.json: one decode stage that read each image once, a pool
    per model and training fed from it, every row scored and written once, and LangSAM's
    pool at work before the last training ended (it needs no training, so it does not wait)."""
    summary = shared_run.read("summary.json")
    stages = summary["timeline"]["stages"]
    assert [name for name in stages if "decode" in name] == ["decode"]
    assert stages["decode"]["rows_in"] == stages["decode"]["rows_out"] == 20
    for model in ("langsam", *TRAININGS):
        assert stages[f"model:{model}"]["rows_in"] == 20
    rows = summary["rows"]["written"]
    assert stages["score"]["rows_in"] == 20 and stages["score"]["rows_out"] == rows
    assert stages["write"]["rows_in"] == rows
    for name in TRAININGS:
        assert stages[f"train:{name}"]["batches"] == len(summary["training"][name]["history"])  # one per epoch
    assert stages["model:langsam"]["start"] < max(stages[f"train:{name}"]["end"] for name in TRAININGS)
    # The trained models' pools waited for their training, and started after it.
    for name in TRAININGS:
        assert stages[f"model:{name}"]["start"] >= stages[f"train:{name}"]["end"]


def test_a_run_id_is_not_written_twice(shared_run):
    assert job("benchmark")(shared_run.argv) == 2
    assert shared_run.read("summary.json")["status"] == "complete"


def test_evaluate_job_reports_langsam_unavailable_and_finishes_the_rest(shared_run, monkeypatch, capsys):
    out = shared_run.out
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    status = job("evaluate")(["--preset", "demo", *shared_run.dataset_options(), "--output", str(out),
                              "--run-id", "offline-langsam", "--models", "unet,langsam",
                              "--checkpoints-from", str(shared_run.run)])
    assert status == 0
    summary = json.loads((out / "offline-langsam" / "summary.json").read_text())
    assert list(summary["models"]) == ["unet"]
    assert "HF_HUB_OFFLINE" in summary["unavailable"]["langsam"]
    assert "UNAVAILABLE" in capsys.readouterr().out
    assert summary["rows"] == {"expected": 20, "written": 20, "errors": 0, "errors_by_model": {}}


def test_an_unusable_dataset_exits_2_with_the_reason(ray_session, tmp_path, capsys):
    status = job("benchmark")(["--preset", "demo", "--dataset", str(tmp_path / "nowhere"), "--output", str(tmp_path)])
    assert status == 2
    assert "no dataset found" in capsys.readouterr().err


def test_benchmark_rows_name_the_stored_weights_and_join_a_reevaluation(shared_run, tiny_weights):
    """Every benchmark row's model_version resolves in the checkpoint store to the checkpoint
    that produced it, and a re-evaluation over the same store names the same weights with
    the same version strings: the two tables join on model_version."""
    out = shared_run.out
    training = shared_run.read("training.json")
    rows = pq.read_table(shared_run.run / "predictions", columns=["image_id", "model", "model_version", "iou"]).to_pandas()
    assert rows["model_version"].notna().all()
    for name in TRAININGS:
        (version,) = rows.loc[rows["model"] == name, "model_version"].unique()
        assert version == f"{name}@shared" == training[name]["version"]
        record = resolve_version(str(out / "store"), name, version)
        assert weights_sha256(record["checkpoint"]) == weights_sha256(training[name]["checkpoint"])

    assert job("reevaluate")(["--preset", "demo", *shared_run.dataset_options(), "--results", str(out / "table"),
                              "--checkpoint-store", str(out / "store"), "--run-id", "nightly",
                              "--models", ",".join([*TRAININGS, "langsam"]), *langsam_options(tiny_weights),
                              *SHARED_LANGSAM_SWEEP]) == 0
    again = pq.read_table(out / "table" / "run=nightly", columns=["image_id", "model", "model_version", "iou"]).to_pandas()
    assert sorted(again["model_version"].unique()) == sorted(rows["model_version"].unique())
    joined = rows.merge(again, on=["image_id", "model", "model_version"], suffixes=("", "_again"))
    assert len(joined) == len(rows) == len(again)
    # the same weights on the same images: the same scores
    trained = joined[joined["model"].isin(TRAININGS)]
    assert (trained["iou"] - trained["iou_again"]).abs().max() < 1e-6
    summary = shared_run.read("summary.json")
    assert pd.Series({m: s["model_version"] for m, s in summary["models"].items()}).notna().all()


@pytest.mark.slow
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


def test_a_langsam_sweeps_rows_are_each_settings_rows_alone(shared_run, tiny_weights):
    """The shared run's LangSAM sweep: its rows for a (prompt, threshold) are, but for their
    variant names and versions, what a jobs/evaluate.py run with that setting alone writes."""
    compared = ["image_id", "model", "status", "iou", "dice", "boundary_iou", "box_score", "mask_score",
                "num_detections", "mask_png"]
    swept = read_rows(str(shared_run.run / "predictions"), [*compared, "model_version"])
    swept = swept[swept["model"].astype(str).str.startswith("langsam/")]
    assert len(swept) == 20 * 2 * 2 * len(VARIANTS) and swept["model_version"].nunique() == 1

    def setting(prompt: str, threshold: str):
        suffix = f"[{prompt}@{threshold}]"
        rows = swept[swept["model"].astype(str).str.endswith(suffix)].copy()
        rows["model"] = rows["model"].astype(str).str.removesuffix(suffix)
        return rows[compared].sort_values(["image_id", "model"]).reset_index(drop=True)

    # The settings differ (the higher threshold keeps fewer boxes) ...
    assert (setting("human.", "0.999")["num_detections"] < setting("person.", "0.0")["num_detections"]).any()
    # ... and a setting's rows are those of a run with it alone (the model-level test covers every setting).
    assert job("evaluate")(["--preset", "demo", *shared_run.dataset_options(), "--models", "langsam",
                            "--output", str(shared_run.out), "--run-id", "langsam-alone",
                            *langsam_options(tiny_weights)[:4], "--langsam-prompt", "human.",
                            "--langsam-box-threshold", "0.999"]) == 0
    alone = read_rows(str(shared_run.out / "langsam-alone" / "predictions"), compared)
    alone["model"] = alone["model"].astype(str)
    pd.testing.assert_frame_equal(setting("human.", "0.999"),
                                  alone.sort_values(["image_id", "model"]).reset_index(drop=True),
                                  check_categorical=False, check_dtype=False)  # the run's trained rows null some columns
