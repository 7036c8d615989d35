"""LangSAM = GroundingDINO (text -> boxes) + SAM2 (box -> mask), batched.

The seeds ran `lang_sam.LangSAM().predict([image], ["person."])` once per image and
kept one mask with a `pick_best` rule. Here the same two models run once per *batch*:

1. one GroundingDINO forward for the whole batch -> boxes and box scores per image;
2. one SAM2 forward for the images that have at least one box -> one mask and one
   predicted-IoU score per box, upsampled to each image's own resolution;
3. every selection rule in `RULES` turns those candidates into one mask, so each rule
   becomes its own variant (`langsam/<rule>`) from the same forward passes.

Both models load with transformers (`backend="transformers"`, the default). The seeds'
`lang_sam` package can be used instead (`backend="lang_sam"`); it is imported only then.

Weights are hub ids or local `save_pretrained` folders. When they cannot be reached the
constructor raises `LangSAMWeightsUnavailable` quickly, with the fix in the message,
instead of letting huggingface_hub retry for minutes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import socket
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, NamedTuple
from urllib.parse import urlparse

import cv2
import numpy as np
import torch
from PIL import Image

from segray.models.base import ModelSpec, Prediction, resolve_device

log = logging.getLogger(__name__)

LANG_SAM_INSTALL = "pip install git+https://github.com/luca-medeiros/lang-segment-anything.git"

# Files a `save_pretrained` folder must hold before we try to load it: a missing file
# is reported by name here rather than as a confusing error deep inside transformers.
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")

# A hub id is "name" or "owner/name" of word characters, dots and dashes.
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")

# How long the hub reachability probe may take. Without it, huggingface_hub retries each
# file 5 times with back-off (~23 s per file, ~140 s for one AutoProcessor) when the
# machine has no network and HF_HUB_OFFLINE is not set.
HUB_PROBE_TIMEOUT_S = 3.0


class LangSAMWeightsUnavailable(RuntimeError):
    """GroundingDINO or SAM2 weights could not be loaded (no hub, not cached, bad folder)."""


# --------------------------------------------------------------------------- config


def normalize_prompt(prompt: str) -> str:
    """Lowercase and strip the prompt and end it with "." as GroundingDINO expects."""
    prompt = prompt.strip().lower()
    if not prompt.endswith("."):
        prompt += "."
    return prompt


def _as_bool(value: Any) -> bool:
    # Parameters may come from a CLI or a YAML file as strings.
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


@dataclass
class LangSAMConfig:
    """LangSAM options; `ModelSpec.params` keys have the same names."""

    prompt: str = "person."  # normalised: lowercase, stripped, ends with "."
    box_threshold: float = 0.3  # GroundingDINO box score to keep a box (lang_sam's default)
    text_threshold: float = 0.25  # token score for the box's text label (labels are unused)
    detector: str = "IDEA-Research/grounding-dino-base"  # hub id or save_pretrained folder
    sam: str = "facebook/sam2.1-hiera-small"  # hub id or save_pretrained folder
    max_boxes: int = 8  # highest-scoring boxes kept per image
    multimask_output: bool = False  # True: 3 masks per box, SAM's best-rated one kept
    bf16: bool = False  # bf16 autocast around the forwards, CUDA only (ignored on CPU)
    backend: str = "transformers"  # or "lang_sam" (the seeds' package, optional)

    def __post_init__(self) -> None:
        self.prompt = normalize_prompt(str(self.prompt))
        self.box_threshold = float(self.box_threshold)
        self.text_threshold = float(self.text_threshold)
        self.detector = str(self.detector)
        self.sam = str(self.sam)
        self.max_boxes = int(self.max_boxes)
        self.multimask_output = _as_bool(self.multimask_output)
        self.bf16 = _as_bool(self.bf16)
        if self.max_boxes < 1:
            raise ValueError(f"max_boxes must be >= 1, got {self.max_boxes}")
        if self.backend not in ("transformers", "lang_sam"):
            raise ValueError(f"backend must be 'transformers' or 'lang_sam', got {self.backend!r}")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> LangSAMConfig:
        """Build from `ModelSpec.params`; unknown keys are an error (they are usually typos)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown LangSAM parameters {unknown}; known: {sorted(known)}")
        return cls(**params)


# --------------------------------------------------------------------------- rules


class Choice(NamedTuple):
    """What a rule picked: the mask, its scores, and the candidate index (None for union)."""

    mask: np.ndarray
    mask_score: float
    box_score: float
    index: int | None


def _pick(masks: np.ndarray, mask_scores: np.ndarray, box_scores: np.ndarray, i: int) -> Choice:
    return Choice(masks[i], float(mask_scores[i]), float(box_scores[i]), i)


def rule_sam_score(masks: np.ndarray, mask_scores: np.ndarray, box_scores: np.ndarray) -> Choice:
    """Seed rule 1: the highest SAM mask score, the first one on ties."""
    best = 0
    for i in range(len(mask_scores)):
        if mask_scores[best] < mask_scores[i]:
            best = i
    return _pick(masks, mask_scores, box_scores, best)


def rule_seed_both(masks: np.ndarray, mask_scores: np.ndarray, box_scores: np.ndarray) -> Choice:
    """Seed rule 2 as written: move to i only if both scores beat the current pick (order-dependent)."""
    best = 0
    for i in range(len(mask_scores)):
        if mask_scores[best] < mask_scores[i] and box_scores[best] < box_scores[i]:
            best = i
    return _pick(masks, mask_scores, box_scores, best)


def rule_box_score(masks: np.ndarray, mask_scores: np.ndarray, box_scores: np.ndarray) -> Choice:
    """The highest GroundingDINO box score, the first one on ties."""
    return _pick(masks, mask_scores, box_scores, int(np.argmax(box_scores)))


def rule_product(masks: np.ndarray, mask_scores: np.ndarray, box_scores: np.ndarray) -> Choice:
    """The highest mask_score * box_score, the first one on ties."""
    product = np.asarray(mask_scores, dtype=np.float64) * np.asarray(box_scores, dtype=np.float64)
    return _pick(masks, mask_scores, box_scores, int(np.argmax(product)))


def rule_union(masks: np.ndarray, mask_scores: np.ndarray, box_scores: np.ndarray) -> Choice:
    """The union of all masks; its scores are the max mask score and the max box score."""
    # The two maxima may come from different candidates: they describe the set, not one box.
    return Choice(np.any(masks, axis=0), float(np.max(mask_scores)), float(np.max(box_scores)), None)


Rule = Callable[[np.ndarray, np.ndarray, np.ndarray], Choice]

# Fixed order: it is the order of `variants` and so of the result rows.
RULES: dict[str, Rule] = {
    "sam_score": rule_sam_score,
    "seed_both": rule_seed_both,
    "box_score": rule_box_score,
    "product": rule_product,
    "union": rule_union,
}

VARIANT_PREFIX = "langsam/"
VARIANTS: list[str] = [VARIANT_PREFIX + name for name in RULES]


def keep_top_boxes(box_scores: np.ndarray, max_boxes: int) -> np.ndarray:
    """Indices of the `max_boxes` highest scores, returned in their original order.

    The original (detector) order is kept because `seed_both` depends on it, and it is
    the order lang_sam hands the candidates to the seeds' `pick_best`.
    """
    scores = np.asarray(box_scores)
    if len(scores) <= max_boxes:
        return np.arange(len(scores))
    # Stable sort on -score: among equal scores the earlier candidate wins a place.
    top = np.argsort(-scores, kind="stable")[:max_boxes]
    return np.sort(top)


def no_detection() -> dict[str, Prediction]:
    """Every variant's answer for an image where GroundingDINO found no box."""
    return {v: Prediction(mask=None, status="no_detection", num_detections=0) for v in VARIANTS}


def select(masks: np.ndarray, mask_scores: np.ndarray, box_scores: np.ndarray) -> dict[str, Prediction]:
    """Apply every rule to one image's candidates; no candidates gives `no_detection()`."""
    n = len(mask_scores)
    if n == 0:
        return no_detection()
    out = {}
    for name, rule in RULES.items():
        choice = rule(masks, mask_scores, box_scores)
        out[VARIANT_PREFIX + name] = Prediction(
            mask=np.asarray(choice.mask, dtype=bool),
            status="ok",
            box_score=choice.box_score,
            mask_score=choice.mask_score,
            num_detections=n,
        )
    return out


def from_lang_sam_result(result: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map one `LangSAM.predict` result dict to (masks (N,H,W) bool, mask_scores (N,), box_scores (N,)).

    lang_sam squeezes its outputs: with one box `mask_scores` (and possibly `scores`) is a
    0-d array and `masks` may lose its box axis; with no box `masks` is an empty list.
    """
    masks = result.get("masks")
    if masks is None or len(masks) == 0:
        empty = np.zeros(0, dtype=np.float32)
        return np.zeros((0, 0, 0), dtype=bool), empty, empty
    masks = np.asarray(masks)
    if masks.ndim == 2:  # one box, squeezed to (H, W)
        masks = masks[None]
    elif masks.ndim == 4:  # (N, 1, H, W) when the mask-channel axis survived
        masks = masks[:, 0]
    # SAM2's predictor returns float 0/1 masks (or logits when asked): > 0 is the mask.
    masks = masks > 0 if masks.dtype != bool else masks
    mask_scores = np.atleast_1d(np.asarray(result["mask_scores"], dtype=np.float32)).reshape(-1)
    box_scores = np.atleast_1d(np.asarray(result["scores"], dtype=np.float32)).reshape(-1)
    if not len(masks) == len(mask_scores) == len(box_scores):
        raise ValueError(
            f"lang_sam result has {len(masks)} masks, {len(mask_scores)} mask scores "
            f"and {len(box_scores)} box scores; expected equal counts"
        )
    return masks, mask_scores, box_scores


# --------------------------------------------------------------------------- loading


def _offline() -> bool:
    # Read the environment now rather than huggingface_hub's import-time constant, so that
    # HF_HUB_OFFLINE set after transformers was imported (a test, a notebook) still counts.
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return env.strip().lower() in {"1", "true", "yes", "on"} or constants.HF_HUB_OFFLINE


def _hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """One TCP connect to the hub (or to the HTTPS proxy when one is set); (ok, why not)."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or os.environ.get("ALL_PROXY")
    url = urlparse(proxy or os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, ""
    except OSError as e:
        return False, f"cannot connect to {host}:{port} ({type(e).__name__}: {e})"


def _is_cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def _unavailable(what: str, name: str, error: str, needs_tokenizer: bool) -> LangSAMWeightsUnavailable:
    files = "config.json, model.safetensors, processor_config.json or preprocessor_config.json"
    if needs_tokenizer:
        files += ", tokenizer.json (or vocab.txt) and tokenizer_config.json"
    error = " ".join(str(error).split())  # one line
    return LangSAMWeightsUnavailable(
        f"LangSAM {what} weights unavailable: {name!r}: {error}\n"
        f"Fix one of:\n"
        f"  - pass local folders: --langsam-detector DIR --langsam-sam DIR "
        f"(params 'detector' / 'sam');\n"
        f"  - set HF_HUB_OFFLINE=1 with a Hugging Face cache that already holds {name!r};\n"
        f"  - give this machine access to the Hugging Face hub.\n"
        f"A local folder is what `save_pretrained` writes for the model and its processor: {files}. "
        f"`python -m segray.models.tiny_langsam DIR` writes a tiny random pair for offline demos."
    )


class WeightsSource(NamedTuple):
    """Where one model's weights load from, decided before any loading starts."""

    what: str  # "GroundingDINO" or "SAM2", for messages
    name: str  # as the user gave it
    location: str  # the folder or hub id handed to from_pretrained
    local_files_only: bool
    needs_tokenizer: bool


def resolve_weights(what: str, name: str, needs_tokenizer: bool = False) -> WeightsSource:
    """Check a local folder, or that a hub id can be fetched; raise LangSAMWeightsUnavailable if not."""

    def fail(error: str) -> LangSAMWeightsUnavailable:
        return _unavailable(what, name, error, needs_tokenizer)

    path = Path(name).expanduser()
    if path.is_dir():
        missing = []
        if not (path / "config.json").is_file():
            missing.append("config.json")
        if not any((path / f).is_file() for f in _WEIGHT_FILES):
            missing.append("model.safetensors")
        if not any((path / f).is_file() for f in _PROCESSOR_FILES):
            missing.append("processor_config.json or preprocessor_config.json")
        if needs_tokenizer and not any((path / f).is_file() for f in _TOKENIZER_FILES):
            missing.append("tokenizer.json or vocab.txt")
        if missing:
            raise fail(f"local folder {path} lacks {', '.join(missing)}")
        return WeightsSource(what, name, str(path), True, needs_tokenizer)
    if path.exists():
        raise fail(f"{path} is a file, not a save_pretrained folder")
    if not _HUB_ID.match(name) or name.startswith((".", "/", "~")):
        raise fail(f"local folder {path} does not exist")
    # A hub id. Offline: only the cache counts; look there before importing transformers.
    if _offline():
        if not _is_cached(name):
            raise fail("HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache")
        return WeightsSource(what, name, name, True, needs_tokenizer)
    ok, why = _hub_reachable()
    if ok:
        return WeightsSource(what, name, name, False, needs_tokenizer)
    # No network: use a warm cache directly instead of retrying every file for minutes.
    if _is_cached(name):
        log.warning("Hugging Face hub unreachable (%s); loading %s from the local cache", why, name)
        return WeightsSource(what, name, name, True, needs_tokenizer)
    raise fail(f"not in the local Hugging Face cache and the hub is unreachable: {why}")


def _load(source: WeightsSource, loader: Callable[..., Any]) -> Any:
    try:
        return loader(source.location, local_files_only=source.local_files_only)
    except Exception as e:  # noqa: BLE001 - any load failure means these weights are unusable
        error = f"{type(e).__name__}: {e}"
        if source.local_files_only and not Path(source.location).is_dir():
            # transformers' own message talks about connecting even when offline.
            error = f"not usable from the local Hugging Face cache (offline mode) - {error}"
        raise _unavailable(source.what, source.name, error, source.needs_tokenizer) from e


def upsample_masks(logits: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """SAM's low-resolution mask logits (N, h, w) -> bool masks (N, H, W) at the image's size.

    What Sam2Processor.post_process_masks does (bilinear, half-pixel centres, logit > 0),
    with OpenCV instead of torch: 5-9x faster on CPU, and only for the real boxes, not the
    padding. The float arithmetic differs slightly: about 1 pixel in a million may flip."""
    height, width = shape
    return np.stack(
        [cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR) > 0 for mask in logits]
    )


def _check_images(images: list[np.ndarray]) -> list[np.ndarray]:
    out = []
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image {i}: expected RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
        out.append(image)
    return out


# --------------------------------------------------------------------------- model


class LangSAMSegmenter:
    """GroundingDINO + SAM2 behind the `Segmenter` interface; one variant per rule in RULES."""

    variants: list[str] = VARIANTS

    def __init__(self, spec: ModelSpec) -> None:
        self.config = LangSAMConfig.from_params(dict(spec.params))
        self.device = resolve_device(spec.device)
        self.variants = list(VARIANTS)
        if self.config.backend == "lang_sam":
            self._lang_sam = _build_lang_sam(self.config, self.device)
            return
        # Both sources are checked before transformers' model classes are imported (10-20 s
        # on a small CPU machine) and before anything loads, so bad paths fail at once.
        detector = resolve_weights("GroundingDINO", self.config.detector, needs_tokenizer=True)
        sam = resolve_weights("SAM2", self.config.sam)
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor, Sam2Model, Sam2Processor

        self.detector_processor = _load(detector, AutoProcessor.from_pretrained)
        self.detector = _load(detector, AutoModelForZeroShotObjectDetection.from_pretrained)
        # Sam2Processor explicitly: the hub's sam2.1 repos declare a *video* processor,
        # which is what AutoProcessor would build.
        self.sam_processor = _load(sam, Sam2Processor.from_pretrained)
        self.sam_model = _load(sam, Sam2Model.from_pretrained)
        self.detector.to(self.device).eval()
        self.sam_model.to(self.device).eval()

    @classmethod
    def variants_for(cls, spec: ModelSpec) -> list[str]:
        """The variant names, without building the model (segray.models.registry asks)."""
        return list(VARIANTS)

    @classmethod
    def check_available(cls, spec: ModelSpec) -> None:
        """Raise now, in the driver, what the constructor would raise in an actor: bad
        options, unreachable weights, or a missing lang_sam package. Loads nothing."""
        config = LangSAMConfig.from_params(dict(spec.params))
        if config.backend == "lang_sam":
            if importlib.util.find_spec("lang_sam") is None:
                raise ImportError(f"backend='lang_sam' needs the lang_sam package; install it with: {LANG_SAM_INSTALL}")
            return
        resolve_weights("GroundingDINO", config.detector, needs_tokenizer=True)
        resolve_weights("SAM2", config.sam)

    # The autocast context is local to each forward so nothing leaks into other models
    # running in the same process (lang_sam enables it globally at import).
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.config.bf16 and self.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def detect(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """One GroundingDINO forward: per image, (boxes (N,4) xyxy pixels, scores (N,)), capped."""
        cfg = self.config
        pil = [Image.fromarray(im) for im in images]
        inputs = self.detector_processor(
            images=pil, text=[cfg.prompt] * len(pil), padding="longest", return_tensors="pt"
        ).to(self.device)
        with self._autocast():
            outputs = self.detector(**inputs)
        results = self.detector_processor.post_process_grounded_object_detection(
            outputs,
            inputs["input_ids"],
            threshold=cfg.box_threshold,
            text_threshold=cfg.text_threshold,
            target_sizes=[im.shape[:2] for im in images],
        )
        detections = []
        for result in results:
            scores = result["scores"].float().cpu().numpy()
            boxes = result["boxes"].float().cpu().numpy()
            keep = keep_top_boxes(scores, cfg.max_boxes)
            detections.append((boxes[keep], scores[keep]))
        return detections

    @torch.inference_mode()
    def segment(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """One SAM2 forward: per image, (masks (N,H,W) bool at its resolution, IoU scores (N,)).

        Every image needs at least one box. Sam2Processor wants the same number of boxes
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
        """Segment a batch of RGB uint8 images; one dict of all variants per image."""
        images = _check_images(images)
        if not images:
            return []
        if self.config.backend == "lang_sam":
            return self._predict_lang_sam(images)
        detections = self.detect(images)
        with_boxes = [i for i, (boxes, _) in enumerate(detections) if len(boxes) > 0]
        segmented = self.segment([images[i] for i in with_boxes], [detections[i][0] for i in with_boxes])
        by_index = dict(zip(with_boxes, segmented))
        results: list[dict[str, Prediction]] = []
        for i, (_, box_scores) in enumerate(detections):
            if i in by_index:
                masks, mask_scores = by_index[i]
                results.append(select(masks, mask_scores, box_scores))
            else:
                results.append(no_detection())  # not sent to SAM
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
        raise LangSAMWeightsUnavailable(
            f"lang_sam could not build LangSAM({kwargs}): {' '.join(str(e).split())}\n"
            f"Fix: give the machine access to the Hugging Face hub and dl.fbaipublicfiles.com, or use "
            f"backend='transformers' with local folders (--langsam-detector DIR --langsam-sam DIR) "
            f"or HF_HUB_OFFLINE=1 with a warm cache."
        ) from e
