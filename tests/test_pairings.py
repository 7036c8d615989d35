"""LangSAM's detector and mask-model choices, and further pairings beside its own, on tiny
random weights of every kind (segray.models.tiny_langsam): each detector with each mask
model, the kind read from the weights, versions, pairings as models of their own, and the
demo benchmark with every model in one stream."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from segray.config import Config, variant_parts
from segray.models.base import ModelSpec
from segray.models.catalogue import variants_of
from segray.models.langsam import LangSAMSegmenter
from segray.models.langsam_rules import RULES
from segray.models.selection import TrainedModels, models_to_evaluate
from segray.serve.options import serve_settings
from tests.conftest import job, langsam_options


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()  # tiny models on a busy 2-core machine: one thread is fastest
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def images() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (48, 80, 3), dtype=np.uint8), rng.integers(0, 256, (90, 30, 3), dtype=np.uint8)]


@pytest.mark.parametrize("sam", ["sam2", "sam3-tracker"])
@pytest.mark.parametrize("detector", ["grounding-dino", "mm-grounding-dino", "owlv2"])
def test_every_detector_runs_with_every_mask_model(tiny_folders, detector, sam):
    spec = ModelSpec("langsam", {"detector": str(tiny_folders[detector]), "sam": str(tiny_folders[sam]),
                                 "box_threshold": 0.0}, device="cpu")
    model = LangSAMSegmenter(spec)
    assert model.input_size.startswith(detector) and sam.replace("-", "_") in model.input_size
    batch = images()
    detections = model.detect(batch)
    for image, answer, (boxes, _) in zip(batch, model.predict(batch), detections):
        assert list(answer) == [f"langsam/{rule}" for rule in RULES]
        assert len(boxes) >= 1  # threshold 0 keeps every box: each image went to the mask model
        for prediction in answer.values():
            assert prediction.status == "ok" and prediction.mask.shape == image.shape[:2]
    assert LangSAMSegmenter.version_for(spec).startswith(
        f"langsam@{tiny_folders[detector]}+{tiny_folders[sam]}?prompt=person.&box=0.0")


def test_weights_of_the_wrong_kind_are_refused_in_the_driver_naming_the_setting(tiny_folders):
    wrong_detector = ModelSpec("langsam", {"detector": str(tiny_folders["sam3"]), "sam": str(tiny_folders["sam2"])})
    with pytest.raises(ValueError, match=r"langsam.detector: .*sam3.* is a sam3; langsam.detector takes "
                                         r"grounding-dino, mm-grounding-dino, owlv2 weights"):
        LangSAMSegmenter.check_available(wrong_detector)
    for wrong in ("owlv2", "sam3"):  # SAM 3 itself is not its tracker: its box-prompt heads would be random
        spec = ModelSpec("langsam", {"detector": str(tiny_folders["owlv2"]), "sam": str(tiny_folders[wrong])})
        with pytest.raises(ValueError, match=rf"langsam.sam: .* is a {wrong}; langsam.sam takes sam2, sam2_video, "
                                             r"sam3_tracker, sam3_video weights"):
            LangSAMSegmenter.check_available(spec)


def test_the_hubs_video_configs_load_their_image_models(tiny_folders, tmp_path):
    """facebook/sam2.1-* and facebook/sam3 are video models (model_type sam2_video, sam3_video):
    LangSAM takes their image parts, Sam2Model and Sam3TrackerModel."""
    import json
    import shutil

    for folder, video, model_class in (("sam2", "sam2_video", "Sam2Model"),
                                       ("sam3-tracker", "sam3_video", "Sam3TrackerModel")):
        copy = shutil.copytree(tiny_folders[folder], tmp_path / video)
        config = json.loads((copy / "config.json").read_text())
        (copy / "config.json").write_text(json.dumps(config | {"model_type": video}))
        spec = ModelSpec("langsam", {"detector": str(tiny_folders["grounding-dino"]), "sam": str(copy),
                                     "box_threshold": 0.0}, device="cpu")
        model = LangSAMSegmenter(spec)
        assert type(model.sam_model).__name__ == model_class and video in model.input_size
        assert all(p.status == "ok" for p in model.predict(images())[0].values())


def test_owlv2_keeps_one_box_of_overlapping_ones_inside_the_image(tiny_folders):
    from torchvision.ops import box_iou

    model = LangSAMSegmenter(ModelSpec("langsam", {"detector": str(tiny_folders["owlv2"]), "sam": str(tiny_folders["sam2"]),
                                                   "box_threshold": 0.0}, device="cpu"))
    for image, (boxes, scores) in zip(images(), model.detect(images())):
        height, width = image.shape[:2]
        assert len(boxes) >= 1 and len(boxes) == len(scores)
        assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= width).all()
        assert (boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= height).all()
        overlap = box_iou(torch.from_numpy(boxes), torch.from_numpy(boxes)).fill_diagonal_(0)
        assert overlap.max() <= 0.3 + 1e-6


def pairing_config(tiny_folders, *pairings: str, **langsam) -> Config:
    return Config(models=["langsam"], langsam={"detector": str(tiny_folders["grounding-dino"]),
                                               "sam": str(tiny_folders["sam2"]), "pairings": list(pairings), **langsam})


def test_each_pairing_is_a_model_of_its_own_named_after_its_weights(tiny_folders, tmp_path):
    owl = f"{tiny_folders['owlv2']}+{tiny_folders['sam3-tracker']}"
    missing = f"{tmp_path / 'no-detector'}+{tiny_folders['sam2']}"
    config = pairing_config(tiny_folders, owl, missing, prompts=["human."])
    specs, unavailable = models_to_evaluate(config, TrainedModels())
    assert [spec.label for spec in specs] == ["langsam", "langsam[owlv2+sam3-tracker]"]
    assert list(unavailable) == ["langsam[no-detector+sam2]"] and "no-detector" in unavailable[
        "langsam[no-detector+sam2]"]
    own, pairing = specs
    assert pairing.params["detector"] == str(tiny_folders["owlv2"]) and pairing.params["pairings"] == []
    assert pairing.params["prompts"] == ["human."]  # every other setting is langsam's
    names = variants_of(pairing)
    assert names[0] == "langsam[owlv2+sam3-tracker]/sam_score[person.@0.3]" and len(names) == 2 * len(RULES)
    assert variant_parts(names[0])[1:] == variant_parts(variants_of(own)[0])[1:]  # the same rule and setting
    assert own.version != pairing.version and f"+{tiny_folders['sam3-tracker']}?" in pairing.version
    predicted = LangSAMSegmenter(pairing).predict(images())
    assert list(predicted[0]) == names


def test_two_pairings_of_the_same_name_are_refused(tiny_folders, tmp_path):
    same = f"{tiny_folders['grounding-dino']}+{tiny_folders['sam2']}"
    with pytest.raises(ValueError, match=r"langsam\[grounding-dino\+sam2\]"):
        pairing_config(tiny_folders, same)
    with pytest.raises(ValueError, match="not a pairing: expected DETECTOR\\+SAM"):
        pairing_config(tiny_folders, str(tiny_folders["owlv2"]))


def test_the_api_serves_langsams_own_pairing_only(tiny_folders, tmp_path):
    config = pairing_config(tiny_folders, f"{tiny_folders['owlv2']}+{tiny_folders['sam2']}",
                            f"{tmp_path / 'missing'}+{tiny_folders['sam2']}")
    settings = serve_settings(config, cluster={})
    assert [spec.label for spec in settings.specs] == ["langsam"] and settings.unavailable == {}


@pytest.mark.slow
def test_the_demo_with_every_model_and_two_pairings_is_one_stream(ray_session, dataset_copy, tiny_folders, tmp_path):
    """The README's demo with the tiny weights of every model: both networks trained, then
    evaluated beside langsam, a second langsam pairing and sam3, each image decoded once."""
    pairing = f"{tiny_folders['owlv2']}+{tiny_folders['sam3-tracker']}"
    argv = ["--preset", "demo", "--dataset", str(dataset_copy), "--output", str(tmp_path), "--run-id", "every",
            "--image-size", "64", "--unet-epochs", "1", "--resnet-epochs", "1",
            "--models", "unet,resnet34_unet,langsam,sam3",
            *langsam_options((tiny_folders["grounding-dino"], tiny_folders["sam2"])), "--langsam.pairings", pairing,
            "--sam3.weights", str(tiny_folders["sam3"]), "--sam3.threshold", "0.3"]
    assert job("benchmark")(argv) == 0
    run = tmp_path / "every"
    summary = pd.read_json(run / "summary.json", typ="series")
    rows = pq.read_table(run / "predictions").to_pandas()
    images_in = summary["manifest"]["images"]
    stages = summary["timeline"]["stages"]
    assert stages["decode"]["rows_in"] == images_in  # each image decoded once, for every model
    assert {"model:langsam", "model:langsam[owlv2+sam3-tracker]", "model:sam3"} <= set(stages)
    variants = 2 + 2 * len(RULES) + 3  # two networks, two pairings' rules, SAM 3's rules
    assert rows["model"].nunique() == variants
    assert len(rows) == images_in * variants and not rows.duplicated(["image_id", "model"]).any()
    scored = rows[rows["split"] == summary["split"]]
    for model, stats in summary["models"].items():
        assert stats["mean_iou"] == pytest.approx(float(scored.loc[scored["model"] == model, "iou"].mean())), model
    assert "foundation model" in (run / "report" / "report.md").read_text()
