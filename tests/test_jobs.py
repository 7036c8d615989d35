"""The jobs end to end, in-process on the shared local Ray, at a tiny size."""

import json

import pyarrow.parquet as pq
import pytest

from segray.models.langsam import VARIANTS
from tests.conftest import job


@pytest.fixture(scope="module")
def demo_run(ray_session, tiny_weights, tmp_path_factory):
    """The demo preset, shrunk: 16 images at 64 px, one epoch each, tiny LangSAM."""
    out = tmp_path_factory.mktemp("runs")
    detector, sam = tiny_weights
    argv = ["--preset", "demo", "--dataset", "synthetic:16", "--cache-dir", str(out / "cache"),
            "--output", str(out), "--run-id", "tiny", "--image-size", "64",
            "--unet-epochs", "1", "--resnet-epochs", "1",
            "--langsam-detector", str(detector), "--langsam-sam", str(sam), "--langsam-box-threshold", "0"]
    return job("benchmark")(argv), out, argv


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
