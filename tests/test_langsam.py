"""LangSAM: the batched pipeline on tiny random models, load errors. The selection rules
are tested in test_langsam_rules.py.

The tiny GroundingDINO/SAM2 pair (segray.models.tiny_langsam) is written once per module
and loaded through the real loading code. Its boxes are random, so the tests pick
thresholds from its own scores: 0.0 keeps every query, 1.0 keeps none (scores are
sigmoids, < 1).
"""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

import segray.models.hub_weights as W
from segray.config import LangSAMConfig, variant_name
from segray.models import langsam as L
from segray.models.base import ModelSpec
from segray.models.hub_weights import WeightsUnavailable
from segray.models.langsam import LangSAMSegmenter, model_version
from segray.models.langsam_rules import RULES, Setting, above, keep_top_boxes
from segray.models.tiny_langsam import main as tiny_main
from segray.models.tiny_langsam import save_tiny_langsam
from tests.test_langsam_rules import EXPECTED_VARIANTS


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models on a busy 2-core machine: torch's thread pool spins and is ~20x slower
    # than one thread. Restore the setting for the rest of the session.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_langsam(tmp_path_factory.mktemp("tiny-langsam"))


def build(tiny, device: str | None = None, **params) -> LangSAMSegmenter:
    """The real loading code on the tiny folders; params are LangSAM options."""
    detector, sam = tiny
    spec = ModelSpec("langsam", params={"detector": str(detector), "sam": str(sam), **params}, device=device)
    return LangSAMSegmenter(spec)


@pytest.fixture(scope="module")
def seg(tiny):
    return build(tiny)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [
        rng.integers(0, 256, (384, 512, 3), dtype=np.uint8),
        rng.integers(0, 256, (200, 300, 3), dtype=np.uint8),
        np.zeros((200, 300, 3), np.uint8),
    ]


# ------------------------------------------------------------------ config


def test_prompt_is_normalised():
    assert LangSAMConfig(prompt="Person").prompt == "person."
    assert LangSAMConfig(prompt="  A Person. ").prompt == "a person."
    assert LangSAMConfig().prompt == "person."


def test_config_defaults_and_unknown_keys():
    cfg = LangSAMConfig.model_validate({})
    assert (cfg.box_threshold, cfg.text_threshold, cfg.max_boxes) == (0.3, 0.25, 8)
    assert (cfg.detector, cfg.sam) == ("IDEA-Research/grounding-dino-base", "facebook/sam2.1-hiera-small")
    assert (cfg.multimask_output, cfg.bf16, cfg.backend) == (False, False, "transformers")
    assert LangSAMConfig.model_validate({"bf16": "true", "max_boxes": "3"}).bf16 is True
    with pytest.raises(ValueError, match="box_treshold"):
        LangSAMConfig.model_validate({"box_treshold": 0.5})
    with pytest.raises(ValueError, match="backend"):
        LangSAMConfig(backend="sam3")


# ------------------------------------------------------------------ the lang_sam backend


def test_lang_sam_backend_missing_names_install_command(tiny):
    if importlib.util.find_spec("lang_sam") is not None:
        pytest.skip("lang_sam is installed here")
    with pytest.raises(ImportError, match="lang-segment-anything"):
        build(tiny, backend="lang_sam")


class FakeLangSAM:
    """Stands in for lang_sam.LangSAM: one box on the first image, none on the others."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def predict(self, images_pil, texts_prompt, box_threshold=0.3, text_threshold=0.25):
        self.calls = (len(images_pil), texts_prompt, box_threshold, text_threshold)
        results = []
        for i, image in enumerate(images_pil):
            if i == 0:
                mask = np.zeros((1, image.height, image.width), np.float32)
                mask[0, :10, :10] = 1.0
                results.append(
                    {"scores": np.array([0.7]), "boxes": np.zeros((1, 4)), "masks": mask, "mask_scores": np.array(0.9)}
                )
            else:
                results.append({"scores": np.zeros(0), "boxes": np.zeros((0, 4)), "masks": [], "mask_scores": []})
        return results


def test_lang_sam_backend_with_a_stand_in_package(monkeypatch, images):
    # The real package enters a global bf16 autocast when imported; the stand-in does the
    # same when `from lang_sam import LangSAM` runs, and the backend must undo it.
    def module_getattr(name):
        if name != "LangSAM":
            raise AttributeError(name)
        torch.set_autocast_enabled("cuda", True)
        return FakeLangSAM

    fake = types.ModuleType("lang_sam")
    fake.__getattr__ = module_getattr
    monkeypatch.setitem(sys.modules, "lang_sam", fake)
    seg = LangSAMSegmenter(ModelSpec("langsam", params={"backend": "lang_sam", "prompt": "Person"}, device="cpu"))
    assert not torch.is_autocast_enabled("cuda")
    assert seg._lang_sam.kwargs["sam_type"] == "sam2.1_hiera_small"

    out = seg.predict(images[:2])
    assert seg._lang_sam.calls == (2, ["person.", "person."], 0.3, 0.25)
    assert list(out[0]) == EXPECTED_VARIANTS
    p = out[0]["langsam/sam_score"]
    assert (p.status, p.num_detections, p.mask.shape, int(p.mask.sum())) == ("ok", 1, (384, 512), 100)
    assert (p.mask_score, p.box_score) == (pytest.approx(0.9), pytest.approx(0.7))
    assert all(q.status == "no_detection" and q.mask is None for q in out[1].values())


# ------------------------------------------------------------------ the real pipeline


def test_predict_shapes_mixed_sizes(seg, images):
    assert seg.variants == EXPECTED_VARIANTS
    batch = images[:2]  # 384x512 and 200x300 in one batch
    out = seg.predict(batch)
    assert len(out) == 2
    for image, preds in zip(batch, out):
        assert list(preds) == EXPECTED_VARIANTS
        for name, p in preds.items():
            assert p.status == "ok", name  # the tiny detector is confident at 0.3
            assert p.mask.dtype == bool and p.mask.shape == image.shape[:2]
            assert 1 <= p.num_detections <= 8
            assert isinstance(p.box_score, float) and isinstance(p.mask_score, float)
        union = preds["langsam/union"].mask
        for name in EXPECTED_VARIANTS[:-1]:
            assert not (preds[name].mask & ~union).any()


def test_no_detection_path(tiny, images):
    seg = build(tiny, box_threshold=1.0)
    out = seg.predict(images)
    for preds in out:
        assert list(preds) == EXPECTED_VARIANTS
        for p in preds.values():
            assert (p.mask, p.status, p.num_detections) == (None, "no_detection", 0)


def test_mixed_batch_some_images_without_detections(tiny, seg, images):
    # A threshold between the lowest per-image top score and the next one: the image with
    # the lowest top score gets no box, the others keep at least one.
    tops = np.array([scores.max() for _, scores in build(tiny, box_threshold=0.0).detect(images)])
    order = np.argsort(tops)
    assert tops[order[0]] < tops[order[1]]
    threshold = float((tops[order[0]] + tops[order[1]]) / 2)
    out = build(tiny, box_threshold=threshold).predict(images)
    for i, (image, preds) in enumerate(zip(images, out)):
        p = preds["langsam/sam_score"]
        if i == order[0]:
            assert (p.mask, p.status, p.num_detections) == (None, "no_detection", 0)
        else:
            assert p.status == "ok" and p.num_detections >= 1 and p.mask.shape == image.shape[:2]


def test_max_boxes_cap(tiny, images):
    capped = build(tiny, box_threshold=0.0, max_boxes=3)
    _, scores = capped.detect(images[:1])[0]
    assert len(scores) > 3  # the tiny detector has 16 queries, uncapped by detect
    np.testing.assert_array_equal(above(scores, 0.0, 3), keep_top_boxes(scores, 3))
    out = capped.predict(images[:2])
    assert [preds["langsam/union"].num_detections for preds in out] == [3, 3]


# ------------------------------------------------------------------ sweep


def sweep_thresholds(tiny, images) -> list[float]:
    """0.0 keeps every box (past the cap of 12), the eighth score of the first image keeps
    its seven best, 1.0 keeps none (a score is above it, and a sigmoid is below 1)."""
    _, scores = build(tiny, box_threshold=0.0).detect(images[:1])[0]
    return [0.0, float(np.sort(scores)[::-1][7]), 1.0]


def test_a_sweeps_predictions_are_each_settings_alone(tiny, images):
    thresholds = sweep_thresholds(tiny, images)
    prompts = ["person.", "a human."]
    sweep = build(tiny, box_threshold=thresholds[0], box_thresholds=thresholds[1:], prompts=prompts[1:], max_boxes=12)
    out = sweep.predict(images)
    assert sweep.variants == [variant_name("langsam", rule, Setting(p, t))
                              for p in prompts for t in thresholds for rule in RULES]
    assert [list(preds) for preds in out] == [sweep.variants] * len(images)
    statuses = set()
    for prompt in prompts:
        for threshold in thresholds:
            alone = build(tiny, prompt=prompt, box_threshold=threshold, max_boxes=12).predict(images)
            for swept, single in zip(out, alone):
                for rule in RULES:
                    a, b = swept[variant_name("langsam", rule, Setting(prompt, threshold))], single[f"langsam/{rule}"]
                    assert (a.status, a.num_detections, a.box_score) == (b.status, b.num_detections, b.box_score)
                    assert a.mask_score == pytest.approx(b.mask_score, abs=1e-6)
                    assert (a.mask is None and b.mask is None) or np.array_equal(a.mask, b.mask)
                    statuses.add((a.status, a.num_detections))
    assert {("no_detection", 0), ("ok", 12), ("ok", 7)} <= statuses  # no box, the cap, fewer


def test_a_sweep_runs_each_model_once_per_prompt_and_batch(tiny, images):
    sweep = build(tiny, box_threshold=0.0, box_thresholds=[0.2, 0.4, 0.6], prompts=["human.", "people."])
    calls = {"detector": 0, "sam": 0}
    hooks = [sweep.detector.register_forward_hook(lambda *_: calls.__setitem__("detector", calls["detector"] + 1)),
             sweep.sam_model.register_forward_hook(lambda *_: calls.__setitem__("sam", calls["sam"] + 1))]
    try:
        sweep.predict(images)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(sweep.config.settings) == 12
    assert calls == {"detector": 3, "sam": 3}  # per prompt, not per (prompt, threshold)


def test_a_sweep_has_its_own_version_and_variants_without_building_it():
    params = {"detector": "d", "sam": "s", "prompts": ["human.", "people"], "box_thresholds": [0.25, 0.35]}
    spec = ModelSpec("langsam", params=params)
    assert LangSAMSegmenter.version_for(spec) == ("langsam@d+s?prompt=person.,human.,people.&box=0.25,0.3,0.35"
                                                  "&text=0.25&boxes=8")
    names = LangSAMSegmenter.variants_for(spec)
    assert len(names) == 3 * 3 * len(RULES) and names[0] == "langsam/sam_score[person.@0.25]"
    with pytest.raises(ValueError, match="needs backend transformers"):
        LangSAMConfig.model_validate({**params, "backend": "lang_sam"})


def test_padded_sam_outputs_are_dropped(seg, images, monkeypatch):
    a, b = images[0], images[1]
    boxes_a = np.array([[10, 10, 200, 300], [50, 60, 100, 120], [300, 20, 500, 380]], np.float32)
    boxes_b = np.array([[20, 30, 150, 180]], np.float32)
    (masks_a, scores_a), (masks_b, scores_b) = seg.segment([a, b], [boxes_a, boxes_b])
    assert masks_a.shape == (3, 384, 512) and scores_a.shape == (3,)
    assert masks_b.shape == (1, 200, 300) and scores_b.shape == (1,)
    # Padding the second image with copies of its box does not change its own result.
    ((solo_masks, solo_scores),) = seg.segment([b], [boxes_b])
    np.testing.assert_allclose(scores_b, solo_scores, rtol=1e-4, atol=1e-5)
    assert (masks_b != solo_masks).mean() < 0.01

    # Through predict: the detector is replaced so the box counts are exactly 3 and 1.
    fake = [(boxes_a, np.array([0.9, 0.8, 0.7], np.float32)), (boxes_b, np.array([0.6], np.float32))]
    monkeypatch.setattr(seg, "detect", lambda imgs, prompt, threshold: fake)
    out = seg.predict([a, b])
    assert [preds["langsam/sam_score"].num_detections for preds in out] == [3, 1]
    assert out[1]["langsam/box_score"].box_score == pytest.approx(0.6)


def test_multimask_output_keeps_sams_best_mask(tiny, images):
    out = build(tiny, multimask_output=True, max_boxes=2).predict(images[:2])
    for image, preds in zip(images, out):
        p = preds["langsam/sam_score"]
        assert p.status == "ok" and p.mask.shape == image.shape[:2] and p.num_detections == 2


@pytest.mark.parametrize("shape", [(384, 512), (200, 300), (40, 50)])
def test_upsample_masks_matches_sam2_post_process_masks(shape):
    """The OpenCV upsampling gives SAM2's own post-processing masks (bilinear, logit > 0),
    to float rounding: at most a pixel in ten thousand may differ."""
    from transformers import Sam2ImageProcessor

    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(5, 64, 64)).cumsum(-1).cumsum(-2) / 8).astype(np.float32)
    expected = Sam2ImageProcessor().post_process_masks([torch.from_numpy(logits[:, None])], [shape])[0][:, 0]
    masks = L.upsample_masks(logits, shape)
    assert masks.dtype == bool and masks.shape == (5, *shape)
    assert 0 < masks.mean() < 1
    assert (masks != expected.numpy()).mean() <= 1e-4


def test_no_global_state_leak(tiny, images):
    seg = build(tiny, bf16=False)
    seg.predict(images[:2])
    assert not torch.is_autocast_enabled()
    assert not torch.is_autocast_enabled("cuda")
    assert torch.get_default_dtype() == torch.float32
    # bf16 only applies on CUDA; on CPU it must be a no-op, and never global.
    seg = build(tiny, bf16=True, device="cpu")
    seg.predict(images[:1])
    assert not torch.is_autocast_enabled() and torch.get_default_dtype() == torch.float32


def test_tiny_langsam_cli(tmp_path, capsys):
    assert tiny_main([str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / name) for name in ("grounding-dino", "mm-grounding-dino", "owlv2", "sam2",
                                                         "sam3-tracker", "sam3", "sam3-lite-text")]
    for folder in printed:
        assert (tmp_path / folder / "model.safetensors").is_file()


# ------------------------------------------------------------------ weights unavailable


def assert_helpful(error: WeightsUnavailable, name: str):
    message = str(error)
    assert name in message
    assert "--langsam.detector" in message and "--langsam.sam" in message
    assert "HF_HUB_OFFLINE" in message
    assert "config.json" in message and "model.safetensors" in message


def test_missing_local_folder(tiny, tmp_path):
    missing = str(tmp_path / "no-such-folder")
    with pytest.raises(WeightsUnavailable) as info:
        LangSAMSegmenter(ModelSpec("langsam", params={"detector": missing, "sam": str(tiny[1])}))
    assert_helpful(info.value, missing)
    assert "does not exist" in str(info.value)


def test_incomplete_local_folder(tiny, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(WeightsUnavailable) as info:
        LangSAMSegmenter(ModelSpec("langsam", params={"detector": str(tiny[0]), "sam": str(tmp_path)}))
    assert_helpful(info.value, str(tmp_path))
    assert "lacks model.safetensors" in str(info.value)


def test_hub_id_offline_without_cache(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "segray-tests/no-such-grounding-dino"
    with pytest.raises(WeightsUnavailable) as info:
        LangSAMSegmenter(ModelSpec("langsam", params={"detector": name, "sam": "segray-tests/no-such-sam2"}))
    assert_helpful(info.value, name)


def test_hub_unreachable_fails_without_retrying(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(W, "_offline", lambda: False)
    monkeypatch.setattr(W, "_hub_reachable", lambda timeout=3.0: (False, "cannot connect (test)"))
    name = "segray-tests/no-such-grounding-dino"
    with pytest.raises(WeightsUnavailable) as info:
        LangSAMSegmenter(ModelSpec("langsam", params={"detector": name}))
    assert_helpful(info.value, name)
    assert "unreachable" in str(info.value)


def test_unreachable_hub_uses_a_warm_cache(monkeypatch):
    # No network but the files are cached: load them directly instead of retrying.
    monkeypatch.setattr(W, "_offline", lambda: False)
    monkeypatch.setattr(W, "_hub_reachable", lambda timeout=3.0: (False, "cannot connect (test)"))
    monkeypatch.setattr(W, "_is_cached", lambda repo_id: True)
    source = W.resolve_weights("SAM2", "facebook/sam2.1-hiera-small", "langsam.sam")
    assert (source.location, source.local_files_only) == ("facebook/sam2.1-hiera-small", True)


def test_registry_hooks(tiny, tmp_path):
    spec = ModelSpec("langsam", params={"detector": str(tiny[0]), "sam": str(tiny[1])})
    assert LangSAMSegmenter.variants_for(spec) == EXPECTED_VARIANTS
    LangSAMSegmenter.check_available(spec)  # loads nothing, raises nothing
    bad = ModelSpec("langsam", params={"detector": str(tmp_path / "missing"), "sam": str(tiny[1])})
    with pytest.raises(WeightsUnavailable, match="--langsam.detector"):
        LangSAMSegmenter.check_available(bad)


def test_the_version_names_the_weights_and_every_option_that_changes_the_masks():
    default = model_version(LangSAMConfig())
    assert default == ("langsam@IDEA-Research/grounding-dino-base+facebook/sam2.1-hiera-small"
                       "?prompt=person.&box=0.3&text=0.25&boxes=8")
    changed = [LangSAMConfig(prompt="Human"), LangSAMConfig(box_threshold=0.35), LangSAMConfig(text_threshold=0.2),
               LangSAMConfig(max_boxes=4), LangSAMConfig(multimask_output=True), LangSAMConfig(bf16=True),
               LangSAMConfig(backend="lang_sam"), LangSAMConfig(sam="facebook/sam2.1-hiera-large")]
    versions = [model_version(config) for config in changed]
    assert default not in versions and len(set(versions)) == len(versions)
    assert "prompt=human.&" in versions[0]
    assert LangSAMSegmenter.version_for(ModelSpec("langsam", params={"box_threshold": 0.35})) == versions[1]
