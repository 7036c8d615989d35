"""The models' own settings: one section per model of the catalogue (`MODEL_SECTIONS`)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, model_validator

from segray.config.base import Section
from segray.config.names import (
    DEFAULT_BOX_THRESHOLD,
    DEFAULT_PROMPT,
    DEFAULT_SAM3_PROMPT,
    Setting,
    normalize_prompt,
    normalize_sam3_prompt,
    pairing_name,
    split_pairing,
)

Prompt = Annotated[str, AfterValidator(normalize_prompt)]  # GroundingDINO's: lowercased, ending with "."
Pairing = Annotated[str, AfterValidator(lambda pairing: "+".join(split_pairing(pairing)))]  # DETECTOR+SAM
Sam3Prompt = Annotated[str, AfterValidator(normalize_sam3_prompt)]  # SAM 3's: a noun phrase, lowercased


class UNetConfig(Section):
    """unet: the article's UNet, trained from scratch"""

    base_width: int = Field(64, ge=1, description="the first layer's width, doubled at each of the 4 levels down")
    epochs: int = Field(25, ge=1, description="training epochs")

    def network(self) -> dict[str, Any]:
        """The network's own parameters (what a checkpoint records)."""
        return self.model_dump(exclude={"epochs"})


class ResNet34UNetConfig(Section):
    """resnet34_unet: segmentation_models_pytorch's UNet with a ResNet34 encoder"""

    encoder_weights: str = Field("imagenet", description="the encoder's start: imagenet (downloads "
                                 "smp-hub/resnet34.imagenet), none, or a local .pth or .safetensors ResNet34 state dict")
    decoder_channels: list[Annotated[int, Field(ge=1)]] | None = Field(
        None, description="the decoder's 5 widths; null: smp's (256, 128, 64, 32, 16)")
    epochs: int = Field(20, ge=1, description="training epochs")

    def network(self) -> dict[str, Any]:
        return self.model_dump(exclude={"epochs"})


class PromptSweep:
    """A model prompted with text and a score threshold (`prompt`, `THRESHOLD`), and a sweep
    of more of each (`prompts`, `THRESHOLD`s)."""

    THRESHOLD: ClassVar[str]

    @property
    def settings(self) -> list[Setting]:
        """Every (prompt, threshold) evaluated: `prompt` and then `prompts`, each with the
        threshold and the sweep's thresholds in increasing order. One setting unless a sweep."""
        prompts = dict.fromkeys([self.prompt, *self.prompts])
        thresholds = sorted({getattr(self, self.THRESHOLD), *getattr(self, self.THRESHOLD + "s")})
        return [Setting(prompt, threshold) for prompt in prompts for threshold in thresholds]

    @property
    def sweep(self) -> list[Setting] | None:
        """The settings of a sweep (more than one), else None."""
        settings = self.settings
        return settings if len(settings) > 1 else None


class LangSAMConfig(PromptSweep, Section):
    """langsam: a detector's boxes from a text prompt, a SAM mask model's masks from the boxes"""

    THRESHOLD: ClassVar[str] = "box_threshold"

    prompt: Prompt = Field(DEFAULT_PROMPT, description="the text prompt (lowercased, ending with '.')")
    box_threshold: float = Field(DEFAULT_BOX_THRESHOLD, ge=0, le=1, description="GroundingDINO's box score to keep a box")
    text_threshold: float = Field(0.25, ge=0, le=1, description="GroundingDINO's token score for a box's label")
    detector: str = Field("IDEA-Research/grounding-dino-base", description="the detector, a hub id or a "
                          "save_pretrained folder of GroundingDINO (IDEA-Research/grounding-dino-tiny or -base), "
                          "MM-GroundingDINO or OWLv2 (its kind read from its config)")
    sam: str = Field("facebook/sam2.1-hiera-small", description="the mask model, a hub id or a save_pretrained folder "
                     "of SAM2 (facebook/sam2.1-hiera-tiny, -small, -base-plus or -large) or SAM 3's tracker "
                     "(facebook/sam3)")
    max_boxes: int = Field(8, ge=1, description="the highest-scoring boxes per image sent to the mask model")
    multimask_output: bool = Field(False, description="3 masks per box, the mask model's best-rated one kept")
    bf16: bool = Field(False, description="bf16 autocast around the forwards, on GPUs")
    backend: Literal["transformers", "lang_sam"] = Field("transformers", description="transformers (batched), or "
                                                         "the lang_sam package if installed")
    prompts: list[Prompt] = Field(default_factory=list, description="a sweep: more prompts, each evaluated with prompt, "
                               "from one forward per prompt and batch")
    box_thresholds: list[Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=list, description="a sweep: more box thresholds, from the same forwards")
    pairings: list[Pairing] = Field(default_factory=list, description="more detector and mask-model pairings, "
                                    "DETECTOR+SAM (hub ids or folders), each compared beside langsam's own as "
                                    "langsam[DETECTOR+SAM] (the last parts of the names) with the same other settings")

    @model_validator(mode="after")
    def _sweep_needs_transformers(self) -> LangSAMConfig:
        if self.backend == "lang_sam" and (self.sweep or self.pairings):
            raise ValueError("a sweep of prompts or box thresholds, or pairings, needs backend transformers")
        return self

    @model_validator(mode="after")
    def _pairings_have_their_own_names(self) -> LangSAMConfig:
        names = [pairing_name(self.detector, self.sam), *(pairing_name(*split_pairing(p)) for p in self.pairings)]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"two pairings would both be {', '.join(twice)} (langsam's own is {names[0]}): give "
                             "each pairing weights whose last name parts differ")
        return self

    def pairing(self, pairing: str) -> LangSAMConfig:
        """The settings of one of `pairings`: these, with its detector and mask model."""
        detector, sam = split_pairing(pairing)
        return self.model_copy(update={"detector": detector, "sam": sam, "pairings": []})



class Sam3Config(PromptSweep, Section):
    """sam3: SAM 3, masks of every instance of a text prompt's concept, in one model"""

    THRESHOLD: ClassVar[str] = "threshold"

    weights: str = Field("facebook/sam3", description="SAM 3 (or a sam3_lite_text checkpoint): a hub id or a "
                         "save_pretrained folder; facebook/sam3 is gated: accept its licence on the hub and log in")
    prompt: Sam3Prompt = Field(DEFAULT_SAM3_PROMPT, description="the concept to segment, a short noun phrase")
    threshold: float = Field(0.5, ge=0, le=1, description="an instance's score (detection x presence) to keep it")
    mask_threshold: float = Field(0.5, ge=0, le=1, description="the mask probability that is the person")
    bf16: bool = Field(True, description="bf16 autocast around the forward, on GPUs")
    prompts: list[Sam3Prompt] = Field(default_factory=list, description="a sweep: more prompts, one forward of the "
                                      "prompt's part per prompt and batch, the image's part shared")
    thresholds: list[Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=list, description="a sweep: more instance thresholds, from the same forwards")


# The models' own settings, by model name: a model in `Config.models` takes its section's.
MODEL_SECTIONS: dict[str, type[Section]] = {
    "unet": UNetConfig,
    "resnet34_unet": ResNet34UNetConfig,
    "langsam": LangSAMConfig,
    "sam3": Sam3Config,
}
# The networks we train: the models whose settings have epochs (segray.models.networks builds them).
TRAINABLE = tuple(name for name, section in MODEL_SECTIONS.items() if "epochs" in section.model_fields)
