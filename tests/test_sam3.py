"""SAM 3 on tiny random weights built from configs (no download): its variants from one
forward, sweeps equal to single settings, the text embedding computed once, versions,
weights that cannot be had, and its rows through jobs/evaluate.py beside LangSAM."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from segray.config import Sam3Config
from segray.models.base import ModelSpec
from segray.models.catalogue import variants_of, version_of
from segray.models.hub_weights import WeightsSource, WeightsUnavailable, load_from
from segray.models.sam3 import FOLDERS, Sam3Segmenter, model_version
from tests.conftest import job, langsam_options


def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8), rng.integers(0, 256, (120, 80, 3), dtype=np.uint8),
            np.full((40, 300, 3), 128, np.uint8)]  # grey, and an odd aspect


def segmenter(tiny_sam3, **params) -> Sam3Segmenter:
    return Sam3Segmenter(ModelSpec("sam3", {"weights": str(tiny_sam3), "threshold": 0.3, **params}, device="cpu"))


def test_every_rule_is_a_variant_from_one_forward(tiny_sam3):
    model = segmenter(tiny_sam3)
    assert model.variants == ["sam3/semantic", "sam3/union", "sam3/best"]
    batch = images()
    for image, answer in zip(batch, model.predict(batch)):
        assert list(answer) == model.variants
        union, best = answer["sam3/union"], answer["sam3/best"]
        assert union.status == best.status == "ok" and union.num_detections >= 1
        assert union.mask.shape == best.mask.shape == answer["sam3/semantic"].mask.shape == image.shape[:2]
        assert (union.mask | best.mask).sum() == union.mask.sum()  # the best instance is inside the union
        assert best.box_score == union.box_score  # the union's score is its best instance's
    nothing = segmenter(tiny_sam3, threshold=1.0).predict(batch[:1])[0]
    assert nothing["sam3/union"].status == nothing["sam3/best"].status == "no_detection"
    assert nothing["sam3/best"].mask is None and nothing["sam3/semantic"].status == "ok"


def test_a_sweeps_predictions_are_each_settings_alone_and_each_prompt_is_encoded_once(tiny_sam3):
    sweep = segmenter(tiny_sam3, prompts=["people", "Human."], thresholds=[0.45, 0.5])
    assert len(sweep.variants) == 3 * 3 * 3
    calls = []
    encode = sweep.model.get_text_features
    sweep.model.get_text_features = lambda **kw: calls.append(kw) or encode(**kw)
    batch = images()
    swept = sweep.predict(batch)
    sweep.predict(batch)
    assert len(calls) == 3  # one per prompt, for the actor's life
    for prompt in ("person", "people", "human"):
        for threshold in (0.3, 0.45, 0.5):
            alone = segmenter(tiny_sam3, prompt=prompt, threshold=threshold).predict(batch)
            for i, answer in enumerate(alone):
                for variant, prediction in answer.items():
                    other = swept[i][f"{variant}[{prompt}@{threshold}]"]
                    assert (prediction.status, prediction.box_score, prediction.num_detections) == (
                        other.status, other.box_score, other.num_detections), variant
                    if prediction.mask is not None:
                        assert np.array_equal(prediction.mask, other.mask), (variant, prompt, threshold)


def test_the_version_names_the_weights_and_every_option_that_changes_the_masks():
    assert model_version(Sam3Config()) == "sam3@facebook/sam3?prompt=person&threshold=0.5&mask=0.5&bf16=1"
    spec = ModelSpec("sam3", {"prompts": ["people"], "bf16": False})
    assert version_of(spec) == "sam3@facebook/sam3?prompt=person,people&threshold=0.5&mask=0.5"
    assert variants_of(spec)[:3] == ["sam3/semantic[person@0.5]", "sam3/union[person@0.5]", "sam3/best[person@0.5]"]
    assert Sam3Config(prompt=" Person. ").prompt == "person"


def test_weights_that_cannot_be_had_say_how_to_get_them_and_never_show_a_token(tmp_path, monkeypatch):
    with pytest.raises(WeightsUnavailable) as missing:
        Sam3Segmenter.check_available(ModelSpec("sam3", {"weights": str(tmp_path / "nowhere")}))
    assert str(missing.value).startswith("SAM 3 weights unavailable: ")
    assert FOLDERS in str(missing.value) and "tiny_langsam" in str(missing.value)

    monkeypatch.setenv("HF_TOKEN", "hf_CANARYtoken7731")

    def gated(location: str, local_files_only: bool):
        raise OSError("You are trying to access a gated repo.\nMake sure to have access to it at "
                      "https://huggingface.co/facebook/sam3.") from PermissionError("401 Client Error")

    source = WeightsSource("SAM 3", "facebook/sam3", "facebook/sam3", False, True, FOLDERS)
    with pytest.raises(WeightsUnavailable) as refused:
        load_from(source, gated)
    said = str(refused.value)
    assert "accept the model's licence on its hub page, https://huggingface.co/facebook/sam3" in said
    assert "hf auth login" in said and "HF_TOKEN" in said and "hf_CANARYtoken7731" not in said


def test_a_sam3_lite_text_checkpoint_loads_as_its_own_model_and_other_weights_are_refused(tiny_folders):
    lite = Sam3Segmenter(ModelSpec("sam3", {"weights": str(tiny_folders["sam3-lite-text"]), "threshold": 0.3},
                                   device="cpu"))
    assert type(lite.model).__name__ == "Sam3LiteTextModel"  # not Sam3Model with a random text encoder
    batch = images()
    for image, answer in zip(batch, lite.predict(batch)):
        assert list(answer) == lite.variants and answer["sam3/semantic"].mask.shape == image.shape[:2]
    with pytest.raises(ValueError, match=r"sam3.weights: .*owlv2.* is a owlv2; sam3.weights takes sam3, sam3_video, "
                                         r"sam3_lite_text"):
        Sam3Segmenter.check_available(ModelSpec("sam3", {"weights": str(tiny_folders["owlv2"])}))


@pytest.mark.slow
def test_sam3_and_langsam_are_evaluated_from_one_decode_with_a_row_per_image_and_variant(
        ray_session, synthetic_root, tiny_weights, tiny_sam3, tmp_path):
    argv = ["--preset", "demo", "--dataset", str(synthetic_root), "--output", str(tmp_path), "--run-id", "fm",
            "--models", "langsam,sam3", *langsam_options(tiny_weights), "--sam3.weights", str(tiny_sam3),
            "--sam3.threshold", "0.3"]
    assert job("evaluate")(argv) == 0
    rows = pq.read_table(tmp_path / "fm" / "predictions").to_pandas()
    summary = json.loads((tmp_path / "fm" / "summary.json").read_text())
    images_in = summary["manifest"]["images"]
    assert summary["timeline"]["stages"]["decode"]["rows_in"] == images_in  # each image decoded once
    variants = 5 + 3
    assert len(rows) == images_in * variants and not rows.duplicated(["image_id", "model"]).any()
    assert set(rows.loc[rows["model"].str.startswith("sam3/"), "model_version"]) == {
        f"sam3@{tiny_sam3}?prompt=person&threshold=0.3&mask=0.5&bf16=1"}
    scored = rows[rows["split"] == summary["split"]] if summary["split"] != "all" else rows
    for model, stats in summary["models"].items():
        mine = scored[scored["model"] == model]
        assert stats["mean_iou"] == pytest.approx(float(pd.Series(mine["iou"]).mean())), model


@pytest.mark.slow
def test_grey_tiny_huge_and_odd_aspect_images_each_get_sam3s_rows_at_their_own_size(ray_session, tiny_sam3, tmp_path):
    import cv2

    shapes = {"grey.png": (120, 160), "tiny.png": (6, 9), "huge.png": (3000, 4000), "odd.png": (40, 1000)}
    for folder in ("images", "masks"):
        (tmp_path / "set" / folder).mkdir(parents=True)
    for name, (height, width) in shapes.items():
        image = np.full((height, width, 3), 128, np.uint8) if name == "grey.png" else (
            np.random.default_rng(len(name)).integers(0, 256, (height, width, 3), dtype=np.uint8))
        mask = np.zeros((height, width), np.uint8)
        mask[height // 4: 3 * height // 4 + 1, width // 4: 3 * width // 4 + 1] = 255
        cv2.imwrite(str(tmp_path / "set" / "images" / name), image)
        cv2.imwrite(str(tmp_path / "set" / "masks" / name), mask)
    argv = ["--preset", "demo", "--dataset", str(tmp_path / "set"), "--output", str(tmp_path), "--run-id", "odd",
            "--models", "sam3", "--sam3.weights", str(tiny_sam3), "--sam3.threshold", "0.3"]
    assert job("evaluate")(argv) == 0
    rows = pq.read_table(tmp_path / "odd" / "predictions").to_pandas()
    assert len(rows) == len(shapes) * 3 and set(rows["status"]) <= {"ok", "no_detection"}
    from segray.data.decode import decode_mask

    for _, row in rows[rows["status"] == "ok"].iterrows():
        assert decode_mask(row["mask_png"]).shape == shapes[row["image_id"]], row["image_id"]
