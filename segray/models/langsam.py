"""LangSAM = a detector (text -> boxes) + a SAM mask model (box -> mask), batched.

The detector is GroundingDINO (the article's), MM-GroundingDINO or OWLv2; the mask model
is SAM2 (the article's) or SAM 3's tracker, which keeps SAM2's box prompts. Each is
recognised by its config's `model_type`, so a setting names weights, not a kind.

The article ran `lang_sam.LangSAM().predict([image], ["person."])` once per image and
kept one mask with a `pick_best` rule. Here the same two models run once per *batch*:

1. one detector forward for the whole batch -> boxes and box scores per image;
2. one mask-model forward for the images that have at least one box -> one mask and one
   predicted-IoU score per box, upsampled to each image's own resolution;
3. every selection rule in `RULES` (segray.models.langsam_rules) turns those candidates
   into one mask, so each rule becomes its own variant (`langsam/<rule>`) from the same
   forward passes.

A sweep (`prompts`, `box_thresholds`) costs one detector and one mask-model forward per
prompt and batch, whatever the thresholds: the detector runs at the lowest threshold, each
threshold keeps its boxes from those scores (as the detector's post-processing would),
and the mask model segments the union of the boxes kept, which is the lowest threshold's. Each
(prompt, threshold, rule) is a variant, `langsam/<rule>[<prompt>@<threshold>]`, whose
rows are those a run with that prompt and threshold alone would write.

Both models load with transformers (`backend="transformers"`, the default). The article's
`lang_sam` package can be used instead (`backend="lang_sam"`); it is imported only then.

Further pairings (`langsam.pairings`) are further specs of this model, one pool each,
whose rows are named after them (`langsam[A+B]/<rule>`, `ModelSpec.instance`).

Weights are hub ids or local `save_pretrained` folders (segray.models.hub_weights).
When they cannot be reached the constructor raises `WeightsUnavailable` quickly,
with the fix in the message, instead of letting huggingface_hub retry for minutes.
"""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from segray.config import LangSAMConfig, Setting
from segray.models.base import ModelSpec, Prediction, check_images, resolve_device
from segray.models.hub_weights import WeightsSource, WeightsUnavailable, checked_kind, load_from, resolve_weights
from segray.models.langsam_rules import above, from_lang_sam_result, keep_top_boxes, no_detection, select, variants

LANG_SAM_INSTALL = "pip install git+https://github.com/luca-medeiros/lang-segment-anything.git"
FOLDERS = "langsam.detector and langsam.sam (--langsam.detector DIR --langsam.sam DIR)"
PAIRING_FOLDERS = "langsam.pairings, as DETECTOR_DIR+SAM_DIR"
# The kinds of model each stage takes, by their config's model_type: the hub's sam2.1 and
# sam3 repositories are video models (sam2_video, sam3_video), whose image parts load.
DETECTORS = ("grounding-dino", "mm-grounding-dino", "owlv2")
MASK_MODELS = {"sam2": ("Sam2Processor", "Sam2Model"), "sam2_video": ("Sam2Processor", "Sam2Model"),
               "sam3_tracker": ("Sam3TrackerProcessor", "Sam3TrackerModel"),
               "sam3_video": ("Sam3TrackerProcessor", "Sam3TrackerModel")}
OWLV2_NMS_IOU = 0.3  # OWLv2 scores every patch's box, so one person has many: keep the best of overlapping ones


def checked_sources(config: LangSAMConfig, pairing: bool = False) -> tuple[tuple[WeightsSource, str], ...]:
    """The detector's and the mask model's weights, each with its kind (`model_type`); raises
    WeightsUnavailable when they cannot be reached and ValueError when a kind is not one
    this stage takes. Reads their config.json only. `pairing`: one of `langsam.pairings`."""
    folders = PAIRING_FOLDERS if pairing else FOLDERS
    detector = resolve_weights("LangSAM detector", config.detector, folders, needs_tokenizer=True)
    sam = resolve_weights("LangSAM mask model", config.sam, folders)
    return ((detector, checked_kind(detector, "langsam.detector", DETECTORS)),
            (sam, checked_kind(sam, "langsam.sam", MASK_MODELS)))


def model_version(config: LangSAMConfig) -> str:
    """The `model_version` of LangSAM's rows: the weights as given (hub ids or folders),
    then every option that changes its masks: the prompt, the box and text thresholds and
    the boxes kept per image; multimask, bf16 and the lang_sam backend only when set. A
    sweep lists its prompts and thresholds."""
    prompt, box = config.prompt, config.box_threshold
    if config.sweep:
        prompt = ",".join(dict.fromkeys(setting.prompt for setting in config.sweep))
        box = ",".join(dict.fromkeys(str(setting.box_threshold) for setting in config.sweep))
    version = (f"langsam@{config.detector}+{config.sam}?prompt={prompt}&box={box}"
               f"&text={config.text_threshold}&boxes={config.max_boxes}")
    for flag, value in (("multimask", config.multimask_output), ("bf16", config.bf16)):
        version += f"&{flag}=1" if value else ""
    return version + (f"&backend={config.backend}" if config.backend != "transformers" else "")


def upsample_masks(logits: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """SAM's low-resolution mask logits (N, h, w) -> bool masks (N, H, W) at the image's size.

    What Sam2Processor.post_process_masks does (bilinear, half-pixel centres, logit > 0),
    with OpenCV instead of torch: 5-9x faster on CPU, and only for the real boxes, not the
    padding. The float arithmetic differs slightly: about 1 pixel in a million may flip."""
    height, width = shape
    return np.stack(
        [cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR) > 0 for mask in logits]
    )


def _owlv2_boxes(result: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
    """OWLv2's boxes cut to the image (they are scaled to the padded square), those left with
    an area, without near-duplicates (non-maximum suppression), in detector order."""
    from torchvision.ops import nms

    height, width = size
    boxes, scores = result["boxes"].float().clone(), result["scores"].float()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    inside = torch.nonzero((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))[:, 0]
    keep = inside[nms(boxes[inside], scores[inside], OWLV2_NMS_IOU)].sort().values
    return {"boxes": boxes[keep], "scores": scores[keep]}


# --------------------------------------------------------------------------- model


class LangSAMSegmenter:
    """A detector + a SAM mask model behind the `Segmenter` interface; one variant per rule
    in RULES (and per setting of a sweep)."""

    def __init__(self, spec: ModelSpec) -> None:
        self.config = LangSAMConfig.model_validate(spec.params)
        self.device = resolve_device(spec.device)
        self.name = spec.label
        self.variants = variants(self.config.sweep, self.name)
        if self.config.backend == "lang_sam":
            self._lang_sam = _build_lang_sam(self.config, self.device)
            self.input_size = "lang_sam's own"
            return
        # Both sources are checked before transformers' model classes are imported (10-20 s
        # on a small CPU machine) and before anything loads, so bad paths fail at once.
        (detector, self.detector_kind), (sam, sam_kind) = checked_sources(self.config, spec.instance is not None)
        import transformers

        self.detector_processor = load_from(detector, transformers.AutoProcessor.from_pretrained)
        self.detector = load_from(detector, transformers.AutoModelForZeroShotObjectDetection.from_pretrained)
        # The image model's classes explicitly: AutoProcessor would build the video processor
        # the hub's sam2.1 and sam3 repositories declare.
        processor, model = (getattr(transformers, name) for name in MASK_MODELS[sam_kind])
        self.sam_processor = load_from(sam, processor.from_pretrained)
        self.sam_model = load_from(sam, model.from_pretrained)
        self.detector.to(self.device).eval()
        self.sam_model.to(self.device).eval()
        self.input_size = (f"{self.detector_kind} {dict(self.detector_processor.image_processor.size)}, "
                           f"{sam_kind} {dict(self.sam_processor.image_processor.size)}")

    @classmethod
    def variants_for(cls, spec: ModelSpec) -> list[str]:
        """The variant names, without building the model (segray.models.catalogue asks)."""
        return variants(LangSAMConfig.model_validate(spec.params).sweep, spec.label)

    @classmethod
    def version_for(cls, spec: ModelSpec) -> str:
        """The version of its rows (segray.models.catalogue asks): `model_version`."""
        return model_version(LangSAMConfig.model_validate(spec.params))

    @classmethod
    def check_available(cls, spec: ModelSpec) -> None:
        """Raise now, in the driver, what the constructor would raise in an actor: bad
        options, unreachable weights or weights of another kind, or a missing lang_sam
        package. Loads no model."""
        config = LangSAMConfig.model_validate(spec.params)
        if config.backend == "lang_sam":
            if importlib.util.find_spec("lang_sam") is None:
                raise ImportError(f"backend='lang_sam' needs the lang_sam package; install it with: {LANG_SAM_INSTALL}")
            return
        checked_sources(config, spec.instance is not None)

    # The autocast context is local to each forward so nothing leaks into other models
    # running in the same process (lang_sam enables it globally at import).
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.config.bf16 and self.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def detect(self, images: list[np.ndarray], prompt: str | None = None,
               threshold: float | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """One detector forward: per image, (boxes (N,4) xyxy pixels, scores (N,)) of the
        boxes scoring above `threshold`, in detector order, not capped (`above` caps them).
        By default the config's prompt and box threshold."""
        cfg = self.config
        prompt = cfg.prompt if prompt is None else prompt
        threshold = cfg.box_threshold if threshold is None else threshold
        pil = [Image.fromarray(im) for im in images]
        sizes = [im.shape[:2] for im in images]
        if self.detector_kind == "owlv2":
            # OWLv2 takes one query per phrase ("person." -> ["person"]) and has no token scores.
            queries = [phrase.strip() for phrase in prompt.split(".") if phrase.strip()]
            inputs = self.detector_processor(images=pil, text=[queries] * len(pil), return_tensors="pt").to(self.device)
            with self._autocast():
                outputs = self.detector(**inputs)
            results = [_owlv2_boxes(result, size) for result, size in zip(
                self.detector_processor.post_process_grounded_object_detection(
                    outputs, threshold=threshold, target_sizes=sizes), sizes)]
        else:
            inputs = self.detector_processor(
                images=pil, text=[prompt] * len(pil), padding="longest", return_tensors="pt"
            ).to(self.device)
            with self._autocast():
                outputs = self.detector(**inputs)
            results = self.detector_processor.post_process_grounded_object_detection(
                outputs, inputs["input_ids"], threshold=threshold, text_threshold=cfg.text_threshold,
                target_sizes=sizes)
        return [(result["boxes"].float().cpu().numpy(), result["scores"].float().cpu().numpy()) for result in results]

    @torch.inference_mode()
    def segment(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """One mask-model forward: per image, (masks (N,H,W) bool at its resolution, IoU scores (N,)).

        Every image needs at least one box. The processor wants the same number of boxes
        per image, so shorter lists are padded by repeating their last box and the padded
        outputs are dropped afterwards.
        """
        if not images:
            return []
        counts = [len(b) for b in boxes]
        if min(counts) < 1:
            raise ValueError("segment() needs at least one box per image")
        width = max(counts)
        padded = [np.concatenate([b, np.repeat(b[-1:], width - len(b), axis=0)]).tolist() for b in boxes]
        inputs = self.sam_processor(
            images=[Image.fromarray(im) for im in images], input_boxes=padded, return_tensors="pt"
        ).to(self.device)
        with self._autocast():
            outputs = self.sam_model(
                pixel_values=inputs["pixel_values"],
                input_boxes=inputs["input_boxes"],
                multimask_output=self.config.multimask_output,
            )
        iou = outputs.iou_scores.float()  # (B, N, C); C = 3 with multimask_output, else 1
        # With several masks per box keep the one SAM rates best, before upsampling.
        best = iou.argmax(dim=-1)  # (B, N)
        scores = iou.gather(-1, best[..., None])[..., 0]
        low_res = outputs.pred_masks.float()  # (B, N, C, h, w)
        index = best[..., None, None, None].expand(-1, -1, 1, *low_res.shape[-2:])
        low_res = low_res.gather(2, index)[:, :, 0].cpu().numpy()  # (B, N, h, w)
        scores = scores.cpu().numpy()
        out = []
        for image, logits, image_scores, n in zip(images, low_res, scores, counts):
            out.append((upsample_masks(logits[:n], image.shape[:2]), image_scores[:n]))
        return out

    def predict(self, images: list[np.ndarray]) -> list[dict[str, Prediction]]:
        """Segment a batch of RGB uint8 images; one dict of all variants per image. Per
        prompt: one detector forward at its lowest threshold, one mask-model forward for the boxes
        any threshold keeps, and every rule at every threshold."""
        images = check_images(images)
        if not images:
            return []
        if self.config.backend == "lang_sam":
            return self._predict_lang_sam(images)
        settings = self.config.settings
        results: list[dict[str, Prediction]] = [{} for _ in images]
        for prompt in dict.fromkeys(setting.prompt for setting in settings):
            thresholds = [s.box_threshold for s in settings if s.prompt == prompt]
            detections = self.detect(images, prompt, thresholds[0])
            kept = [{t: above(scores, t, self.config.max_boxes) for t in thresholds} for _, scores in detections]
            # The lowest threshold keeps every box a higher one keeps (the cap takes the best).
            union = [per_threshold[thresholds[0]] for per_threshold in kept]
            with_boxes = [i for i, boxes in enumerate(union) if len(boxes)]
            segmented = dict(zip(with_boxes, self.segment([images[i] for i in with_boxes],
                                                          [detections[i][0][union[i]] for i in with_boxes])))
            for i, (_, box_scores) in enumerate(detections):
                for threshold, boxes in kept[i].items():
                    setting = Setting(prompt, threshold) if len(settings) > 1 else None
                    if not len(boxes):
                        results[i].update(no_detection(setting, self.name))  # not sent to SAM
                        continue
                    masks, mask_scores = segmented[i]
                    at = np.searchsorted(union[i], boxes)
                    results[i].update(select(masks[at], mask_scores[at], box_scores[boxes], setting, self.name))
        return results

    def _predict_lang_sam(self, images: list[np.ndarray]) -> list[dict[str, Prediction]]:
        cfg = self.config
        try:
            with torch.inference_mode(), self._autocast():
                raw = self._lang_sam.predict(
                    [Image.fromarray(im) for im in images],
                    [cfg.prompt] * len(images),
                    box_threshold=cfg.box_threshold,
                    text_threshold=cfg.text_threshold,
                )
        except TypeError as e:
            if "box_threshold" not in str(e):
                raise
            # lang_sam's GroundingDINO wrapper calls post_process_grounded_object_detection
            # with box_threshold=, which transformers 5 renamed to threshold=.
            raise RuntimeError(
                f"this lang_sam release does not work with the installed transformers ({e}); "
                "use backend='transformers' (same models, batched) or a lang_sam that passes threshold="
            ) from e
        results = []
        for result in raw:
            masks, mask_scores, box_scores = from_lang_sam_result(result)
            keep = keep_top_boxes(box_scores, cfg.max_boxes)
            results.append(select(masks[keep], mask_scores[keep], box_scores[keep]))
        return results


def _lang_sam_type(sam: str) -> str:
    # "facebook/sam2.1-hiera-small" -> "sam2.1_hiera_small", lang_sam's name for it.
    return Path(sam).name.replace("-", "_")


def _build_lang_sam(cfg: LangSAMConfig, device: str) -> Any:
    """Import lang_sam lazily and build its LangSAM, keeping its global autocast out."""
    autocast_before = torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")
    try:
        from lang_sam import LangSAM
    except ImportError as e:
        raise ImportError(
            f"backend='lang_sam' needs the lang_sam package ({e}); install it with: {LANG_SAM_INSTALL}"
        ) from e
    finally:
        # lang_sam enters a bf16 autocast context at import on CUDA machines and never
        # leaves it; put the process back as it was (bf16=True re-enables it locally).
        torch.set_autocast_enabled("cuda", autocast_before[0])
        torch.set_autocast_dtype("cuda", autocast_before[1])
    kwargs: dict[str, Any] = {"sam_type": _lang_sam_type(cfg.sam), "device": device}
    if Path(cfg.detector).expanduser().is_dir():
        kwargs["gdino_model_ckpt_path"] = kwargs["gdino_processor_ckpt_path"] = cfg.detector
    if Path(cfg.sam).expanduser().is_file():  # lang_sam takes a SAM2 .pt checkpoint
        kwargs["sam_ckpt_path"] = cfg.sam
        kwargs["sam_type"] = _lang_sam_type(Path(cfg.sam).stem)
    try:
        return LangSAM(**kwargs)
    except Exception as e:  # noqa: BLE001 - lang_sam downloads weights on construction
        raise WeightsUnavailable(
            f"lang_sam could not build LangSAM({kwargs}): {' '.join(str(e).split())}\n"
            f"Fix: give the machine access to the Hugging Face hub and dl.fbaipublicfiles.com, or use "
            f"backend='transformers' with local folders (langsam.detector and langsam.sam) "
            f"or HF_HUB_OFFLINE=1 with a warm cache."
        ) from e
