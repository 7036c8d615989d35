import os

import numpy as np
import pyarrow.parquet as pq
import pytest

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


def test_mask_person_values_reach_decode_and_score_and_lift_the_note(tmp_path):
    """`--mask-person-values` -> BenchmarkConfig -> decode_batch and score_batch (no Ray):
    a label map the default rules cannot read gets a note; naming its person value
    scores it right, without one."""
    import cv2

    from segray.cli import config_from_args, parser
    from segray.evaluate import decode_batch, score_batch

    labels = np.zeros((24, 32), np.uint8)
    labels[4:20, 8:16], labels[4:20, 20:28] = 5, 2  # the person is 5; 2 is something else
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((24, 32, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "x-mask.png"), labels)
    manifest = {"image_id": np.array(["x.png"]), "image_uri": np.array([str(tmp_path / "x.png")]),
                "mask_uri": np.array([str(tmp_path / "x-mask.png")]), "split": np.array(["val"]),
                "category": np.array(["c"])}
    config = config_from_args(parser("t").parse_args(["--mask-person-values", "5"]))
    assert config.mask_person_values == [5] and config.to_dict()["mask_person_values"] == [5]
    with pytest.raises(SystemExit):
        parser("t").parse_args(["--mask-person-values", "five"])

    def scored(person_values):
        decoded = decode_batch(manifest, person_values)
        predicted = {**{k: v for k, v in decoded.items() if k != "image"}, "model": np.array(["m"]),
                     "status": np.array(["ok"]), "latency_ms": np.array([1.0]), "box_score": np.array([None]),
                     "mask_score": np.array([None]), "num_detections": np.array([None]),
                     "mask": [(labels == 5).astype(np.uint8)], "device": np.array(["CPU: test (1 threads)"])}
        return score_batch(predicted, "r", mask_person_values=person_values).to_pylist()[0]

    default = scored(None)
    assert default["true_area"] == 0 and default["iou"] == 0.0 and default["image_orientation"] == "stored"
    assert default["mask_note"].startswith("label map with values [0, 2, 5]")
    named = scored(config.mask_person_values)
    assert named["true_area"] == int((labels == 5).sum()) and named["iou"] == 1.0 and named["mask_note"] is None
