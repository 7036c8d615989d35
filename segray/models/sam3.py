"""SAM 3 ("Segment Anything with Concepts"): a text prompt straight to a mask of every
instance of its concept, in one model, batched.

One forward per batch: the image encoder runs once, and per prompt the detector and mask
heads run on the prompt's text embedding, which is computed once per actor. From that
forward every rule in RULES makes its own variant (`sam3/<rule>`):

- `semantic`: SAM 3's semantic map (probability > `mask_threshold`);
- `union`: the union of the instances scoring above `threshold`;
- `best`: the highest-scoring instance above `threshold`.

An instance's score is SAM 3's (detection x presence). A sweep (`prompts`, `thresholds`)
is one forward of the prompt's part per prompt and batch; every threshold keeps its
instances from the lowest one's, as SAM 3's post-processing would alone. Each (prompt,
threshold, rule) is a variant `sam3/<rule>[<prompt>@<threshold>]`.

Weights are a hub id (`facebook/sam3`, gated: accept its licence and log in) or a local
`save_pretrained` folder; a sam3_lite_text checkpoint loads the same way. When they cannot
be reached the constructor raises quickly with the fixes (`segray.models.hub_weights`).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from PIL import Image

from segray.config import Sam3Config, Setting, variant_name
from segray.models.base import ModelSpec, Prediction, check_images, resolve_device
from segray.models.hub_weights import WeightsSource, checked_kind, load_from, resolve_weights

RULES = ("semantic", "union", "best")
FOLDERS = "sam3.weights (--sam3.weights DIR)"
# The model class of each kind of SAM 3 weights (their config's model_type); facebook/sam3 is a sam3_video.
MODELS = {"sam3": "Sam3Model", "sam3_video": "Sam3Model", "sam3_lite_text": "Sam3LiteTextModel"}


def checked_source(config: Sam3Config) -> tuple[WeightsSource, str]:
    """The weights and their kind; raises WeightsUnavailable when they cannot be reached and
    ValueError when they are not SAM 3's. Reads their config.json only."""
    source = resolve_weights("SAM 3", config.weights, FOLDERS, needs_tokenizer=True)
    return source, checked_kind(source, "sam3.weights", MODELS)


def variants(settings: list[Setting] | None = None) -> list[str]:
    """Every variant name, setting by setting, in RULES order within each."""
    return [variant_name("sam3", rule, setting) for setting in (settings or [None]) for rule in RULES]


def model_version(config: Sam3Config) -> str:
    """The `model_version` of SAM 3's rows: the weights as given, then every option that
    changes its masks. A sweep lists its prompts and thresholds."""
    prompt, threshold = config.prompt, config.threshold
    if config.sweep:
        prompt = ",".join(dict.fromkeys(setting.prompt for setting in config.sweep))
        threshold = ",".join(dict.fromkeys(str(setting.box_threshold) for setting in config.sweep))
    version = f"sam3@{config.weights}?prompt={prompt}&threshold={threshold}&mask={config.mask_threshold}"
    return version + ("&bf16=1" if config.bf16 else "")


def choose(masks: np.ndarray, scores: np.ndarray, semantic: np.ndarray,
           setting: Setting | None = None) -> dict[str, Prediction]:
    """One image's predictions by rule, from its instances above the threshold (masks (N,H,W)
    bool, scores (N,)) and its semantic map (H,W) bool."""
    out = {variant_name("sam3", "semantic", setting): Prediction(semantic, num_detections=len(scores))}
    if not len(scores):
        for rule in ("union", "best"):
            out[variant_name("sam3", rule, setting)] = Prediction(None, status="no_detection", num_detections=0)
        return out
    best = int(np.argmax(scores))
    out[variant_name("sam3", "union", setting)] = Prediction(masks.any(axis=0), box_score=float(scores.max()),
                                                    num_detections=len(scores))
    out[variant_name("sam3", "best", setting)] = Prediction(masks[best], box_score=float(scores[best]),
                                                   num_detections=len(scores))
    return out


class Sam3Segmenter:
    """SAM 3 behind the `Segmenter` interface; one variant per rule (and per sweep setting)."""

    def __init__(self, spec: ModelSpec) -> None:
        self.config = Sam3Config.model_validate(spec.params)
        self.device = resolve_device(spec.device)
        self.variants = variants(self.config.sweep)
        # Checked before transformers' model classes are imported, so a bad path fails at once.
        source, kind = checked_source(self.config)
        import transformers

        self.processor = load_from(source, transformers.Sam3Processor.from_pretrained)
        model_class = getattr(transformers, MODELS[kind])
        self.model = load_from(source, model_class.from_pretrained).to(self.device).eval()
        self.input_size = "x".join(str(v) for v in dict(self.processor.image_processor.size).values())
        self._text: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def variants_for(cls, spec: ModelSpec) -> list[str]:
        return variants(Sam3Config.model_validate(spec.params).sweep)

    @classmethod
    def version_for(cls, spec: ModelSpec) -> str:
        return model_version(Sam3Config.model_validate(spec.params))

    @classmethod
    def check_available(cls, spec: ModelSpec) -> None:
        """Raise now, in the driver, what the constructor would raise: bad settings,
        unreachable weights or weights of another kind. Loads no model."""
        checked_source(Sam3Config.model_validate(spec.params))

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.config.bf16 and self.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def text_embedding(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompt's text embedding and attention mask, computed once per actor."""
        if prompt not in self._text:
            tokens = self.processor(text=[prompt], return_tensors="pt").to(self.device)
            with self._autocast():
                features = self.model.get_text_features(input_ids=tokens["input_ids"],
                                                        attention_mask=tokens["attention_mask"])
            self._text[prompt] = (features.pooler_output, tokens["attention_mask"])
        return self._text[prompt]

    @torch.inference_mode()
    def predict(self, images: list[np.ndarray]) -> list[dict[str, Prediction]]:
        """Segment a batch of RGB uint8 images; one dict of all variants per image."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        images = check_images(images)
        if not images:
            return []
        cfg, settings = self.config, self.config.settings
        sizes = [image.shape[:2] for image in images]
        pixels = self.processor(images=[Image.fromarray(image) for image in images], return_tensors="pt")
        with self._autocast():
            vision = self.model.get_vision_features(pixel_values=pixels["pixel_values"].to(self.device))
        results: list[dict[str, Prediction]] = [{} for _ in images]
        for prompt in dict.fromkeys(setting.prompt for setting in settings):
            embedding, attention = self.text_embedding(prompt)
            batch = len(images)
            text = BaseModelOutputWithPooling(pooler_output=embedding.expand(batch, *embedding.shape[1:]))
            with self._autocast():
                outputs = self.model(vision_embeds=vision, text_embeds=text,
                                     attention_mask=attention.expand(batch, -1))
            thresholds = [s.box_threshold for s in settings if s.prompt == prompt]
            instances = self.processor.post_process_instance_segmentation(
                outputs, threshold=thresholds[0], mask_threshold=cfg.mask_threshold, target_sizes=sizes)
            semantic = self.processor.post_process_semantic_segmentation(
                outputs, target_sizes=sizes, threshold=cfg.mask_threshold)
            for i, (found, seg) in enumerate(zip(instances, semantic)):
                scores, masks = found["scores"].float().cpu().numpy(), found["masks"].cpu().numpy().astype(bool)
                for threshold in thresholds:
                    keep = scores > threshold  # what the post-processing keeps at this threshold alone
                    setting = Setting(prompt, threshold) if len(settings) > 1 else None
                    results[i].update(choose(masks[keep], scores[keep], seg.cpu().numpy().astype(bool), setting))
        return results
