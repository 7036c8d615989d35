import os

import numpy as np
import pyarrow.parquet as pq

from segray.config import EvalConfig
from segray.data.decode import decode_mask
from segray.data.manifest import build_manifest
from segray.evaluate import PredictStage, evaluate
from segray.models.base import ModelSpec, Prediction
from segray.results.read import read_rows
from segray.results.scoring import model_summary

UNTRAINED_UNET = ModelSpec("unet", params={"base_width": 4, "image_size": 64})


def test_pipeline_keeps_every_row_and_names_each_failure(ray_session, dataset_copy, tmp_path):
    names = sorted(os.listdir(dataset_copy / "images"))
    corrupt, unmasked = names[1], names[2]
    png = (dataset_copy / "images" / corrupt).read_bytes()
    (dataset_copy / "images" / corrupt).write_bytes(png[: len(png) // 3])  # truncated PNG
    os.remove(dataset_copy / "masks" / unmasked)
    manifest = build_manifest(str(dataset_copy)).table

    out = tmp_path / "predictions"
    evaluate(manifest, [UNTRAINED_UNET], EvalConfig(batch_size={"unet": 4}), str(out), run_id="r1")

    rows = pq.read_table(out).to_pandas().set_index("image_id")
    assert len(rows) == len(manifest) == 12  # rows in = rows out
    assert len(os.listdir(out)) == 1  # a few sizeable files, not one per block
    assert rows.loc[corrupt, "status"] == "error"
    assert str(dataset_copy / "images" / corrupt) in rows.loc[corrupt, "error"]
    assert rows.loc[unmasked, "status"] == "error"
    assert "missing mask" in rows.loc[unmasked, "error"]

    good = rows[rows["status"] == "ok"]
    assert len(good) == 10
    assert good["iou"].between(0, 1).all() and good["error"].isna().all()
    assert (good["run_id"] == "r1").all() and (good["model"] == "unet").all()
    name = good.index[0]
    truth = decode_mask((dataset_copy / "masks" / name).read_bytes())
    assert decode_mask(good.loc[name, "mask_png"]).shape == truth.shape == (384, 512)

    summary = model_summary(read_rows(str(out)), split="train")["unet"]
    assert summary["errors"] == (rows.loc[[corrupt, unmasked], "split"] == "train").sum()


class FailsOnDarkImages:
    """A stand-in model whose batch call fails when any image in it is all black."""

    variants = ["a", "b"]

    def __init__(self, spec):
        pass

    def predict(self, images):
        if any(image.max() == 0 for image in images):
            raise RuntimeError("dark image")
        return [{v: Prediction(mask=np.ones(image.shape[:2], bool)) for v in self.variants} for image in images]


def test_a_failing_image_does_not_take_its_batch_down(monkeypatch):
    monkeypatch.setattr("segray.evaluate.build_segmenter", FailsOnDarkImages)
    stage = PredictStage(ModelSpec("stand-in"), torch_threads=1)
    images = [np.full((4, 5, 3), 9, np.uint8), np.zeros((4, 5, 3), np.uint8), np.full((6, 2, 3), 9, np.uint8)]
    batch = {
        "image_id": np.array(["x", "dark", "y"]),
        "mask_uri": np.array(["mx", "mdark", "my"]),
        "split": np.array(["val"] * 3),
        "category": np.array(["c"] * 3),
        "image": images,
        "error": np.array([None, None, None]),
    }
    rows = stage(batch)
    assert rows["image_id"] == ["x", "x", "dark", "dark", "y", "y"]
    assert rows["model"] == ["a", "b"] * 3
    assert rows["status"] == ["ok", "ok", "error", "error", "ok", "ok"]
    assert rows["error"][2] == "RuntimeError: dark image"
    assert rows["mask"][4].shape == (6, 2)


def test_actor_threads_share_the_cores_among_the_model_actors_on_cpu(monkeypatch):
    from segray.evaluate import actor_threads

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert actor_threads(EvalConfig(cpus_per_actor=0.5, actors=1), models=1, gpus=False) == 8
    assert actor_threads(EvalConfig(cpus_per_actor=0.5, actors=2), models=2, gpus=False) == 2
    assert actor_threads(EvalConfig(cpus_per_actor=0.5, actors=3), models=3, gpus=False) == 1  # never 0
    assert actor_threads(EvalConfig(cpus_per_actor=4, actors=3), models=3, gpus=False) == 4  # asked for more
    assert actor_threads(EvalConfig(cpus_per_actor=0.5), models=1, gpus=True) == 1  # the GPU does the work
