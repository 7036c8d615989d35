import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from segray.config import EvalConfig
from segray.data.decode import decode_mask
from segray.data.manifest import build_manifest
from segray.evaluate import evaluate
from segray.evaluate.stages import PredictStage, decode_batch, score_batch
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


def decoded(images: list[np.ndarray], **columns) -> dict:
    """A batch as decode_batch leaves it: each image with an all-person truth mask."""
    n = len(images)
    return {"image_id": np.array([f"i{k}" for k in range(n)]), "image_uri": np.array([f"u{k}" for k in range(n)]),
            "mask_uri": np.array([f"m{k}" for k in range(n)]), "split": np.array(["val"] * n),
            "category": np.array(["c"] * n), "image": images,
            "truth": [np.ones(image.shape[:2], np.uint8) for image in images], "error": np.array([None] * n),
            "image_orientation": np.array(["stored"] * n), "mask_note": np.array([None] * n), **columns}


def stand_in_stage(monkeypatch, cls, index=0, **kwargs) -> PredictStage:
    monkeypatch.setattr("segray.evaluate.stages.build_segmenter", cls)
    return PredictStage(index, ModelSpec("stand-in", version="stand-in@test"), cls.variants, "stand-in",
                        cpus_per_actor=1, models_per_node=1, **kwargs)


def test_a_failing_image_does_not_take_its_batch_down(monkeypatch):
    stage = stand_in_stage(monkeypatch, FailsOnDarkImages)
    images = [np.full((4, 5, 3), 9, np.uint8), np.zeros((4, 5, 3), np.uint8), np.full((6, 2, 3), 9, np.uint8)]
    rows = score_batch(stage(decoded(images)), "r", [(0, FailsOnDarkImages.variants)]).to_pylist()
    assert [row["image_id"] for row in rows] == ["i0", "i0", "i1", "i1", "i2", "i2"]
    assert [row["model"] for row in rows] == ["a", "b"] * 3
    assert [row["status"] for row in rows] == ["ok", "ok", "error", "error", "ok", "ok"]
    assert rows[2]["error"] == "RuntimeError: dark image" and rows[2]["iou"] is None
    assert rows[4]["iou"] == 1.0 and decode_mask(rows[4]["mask_png"]).shape == (6, 2)
    assert {row["model_version"] for row in rows} == {"stand-in@test"}


def test_each_model_writes_rows_only_for_its_own_images_from_one_decoded_batch(monkeypatch):
    """Two models in one stream, each with its work list (`todo`): one decoded batch,
    and each model's rows only for the images it was to predict; a decode error becomes
    the row of every model that wanted the image."""
    first = stand_in_stage(monkeypatch, FailsOnDarkImages, index=0)
    second = stand_in_stage(monkeypatch, FailsOnDarkImages, index=1, drop_image=True)
    images = [np.full((4, 5, 3), 9, np.uint8) for _ in range(3)]
    batch = decoded(images, **{"m0|todo": np.array([True, False, True]), "m1|todo": np.array([False, True, True])})
    batch["error"] = np.array([None, None, "image u2: truncated"])
    out = second(first(batch))
    assert "image" not in out  # the last pool frees the decoded images
    rows = score_batch(out, "r", [(0, ["a", "b"]), (1, ["a", "b"])]).to_pylist()
    assert [(row["image_id"], row["model"]) for row in rows] == [
        ("i0", "a"), ("i0", "b"), ("i1", "a"), ("i1", "b"), ("i2", "a"), ("i2", "b"), ("i2", "a"), ("i2", "b")]
    assert [row["status"] for row in rows] == ["ok"] * 4 + ["error"] * 4
    assert {row["error"] for row in rows[4:]} == {"image u2: truncated"}


class FailedTraining:
    """An awaited model whose gate opens with None: its training failed."""

    name, variants = "stand-in", ["a", "b"]

    def wait(self):
        return None


def test_a_model_whose_training_failed_adds_no_rows(monkeypatch):
    monkeypatch.setattr("segray.evaluate.stages.build_segmenter", FailsOnDarkImages)
    stage = PredictStage(0, FailedTraining(), ["a", "b"], "stand-in", cpus_per_actor=1, models_per_node=1)
    rows = score_batch(stage(decoded([np.full((4, 5, 3), 9, np.uint8)])), "r", [(0, ["a", "b"])])
    assert rows.num_rows == 0


def test_actor_threads_share_the_cores_among_the_model_actors_on_cpu(monkeypatch):
    from segray.evaluate.stages import actor_threads

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert actor_threads(0.5, models=1, gpu=False) == 8
    assert actor_threads(0.5, models=2, gpu=False) == 4
    assert actor_threads(0.5, models=9, gpu=False) == 1  # never 0
    assert actor_threads(4, models=3, gpu=False) == 4  # asked for more
    assert actor_threads(0.5, models=1, gpu=True) == 1  # the GPU does the work


class PredictsLabelFive:
    variants = ["m"]

    def __init__(self, spec):
        pass

    def predict(self, images):
        labels = np.zeros((24, 32), np.uint8)
        labels[4:20, 8:16] = 1
        return [{"m": Prediction(mask=labels.astype(bool))} for _ in images]


def test_mask_person_values_reach_decode_and_score_and_lift_the_note(tmp_path, monkeypatch):
    """`--mask-person-values` -> the settings -> decode_batch, then a stand-in model and
    score_batch (no Ray): a label map the default rules cannot read gets a note; naming its
    person value scores it right, without one."""
    import cv2

    from segray.errors import SettingsError
    from segray.settings import load

    labels = np.zeros((24, 32), np.uint8)
    labels[4:20, 8:16], labels[4:20, 20:28] = 5, 2  # the person is 5; 2 is something else
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((24, 32, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "x-mask.png"), labels)
    manifest = {"image_id": np.array(["x.png"]), "image_uri": np.array([str(tmp_path / "x.png")]),
                "mask_uri": np.array([str(tmp_path / "x-mask.png")]), "split": np.array(["val"]),
                "category": np.array(["c"])}
    config = load("evaluate", ["--mask-person-values", "5"])
    assert config.data.mask_person_values == [5] and config.to_dict()["data"]["mask_person_values"] == [5]
    with pytest.raises(SettingsError, match="data.mask_person_values"):
        load("evaluate", ["--mask-person-values", "five"])
    stage = stand_in_stage(monkeypatch, PredictsLabelFive)

    def scored(person_values):
        return score_batch(stage(decode_batch(manifest, person_values)), "r", [(0, ["m"])]).to_pylist()[0]

    default = scored(None)
    assert default["true_area"] == 0 and default["iou"] == 0.0 and default["image_orientation"] == "stored"
    assert default["mask_note"].startswith("label map with values [0, 2, 5]")
    named = scored(config.data.mask_person_values)
    assert named["true_area"] == int((labels == 5).sum()) and named["iou"] == 1.0 and named["mask_note"] is None
