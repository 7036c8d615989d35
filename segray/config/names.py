"""The names the settings give things: trainings (`unet[frac=0.25]`), LangSAM's settings
(`person.@0.3`), and per-model values, whose `*` is every model's."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

DEFAULT_PROMPT = "person."  # the article's LangSAM prompt
DEFAULT_BOX_THRESHOLD = 0.3  # lang_sam's box threshold, the article's
DEFAULT_SAM3_PROMPT = "person"  # SAM 3 takes a noun phrase
EVERY_MODEL = "*"  # in a per-model setting (keyed by model name): every model without its own


def training_name(model: str, fraction: float | None = None) -> str:
    """What a training is called: the model's name, or, for a training on a nested subset of
    the train split (`train.fractions`), `unet[frac=0.25]`. It names the trained model's
    rows (their variant), its folder, its entry in training.json and its place in the
    checkpoint store. The whole train split (fraction 1) is the model's own name."""
    return model if fraction is None or fraction >= 1 else f"{model}[frac={fraction:g}]"


def split_training_name(name: str) -> tuple[str, float | None]:
    """`unet[frac=0.25]` -> ("unet", 0.25); `unet` -> ("unet", None)."""
    model, _, rest = name.partition("[frac=")
    if not rest:
        return name, None
    try:
        return model, float(rest.removesuffix("]"))
    except ValueError:
        raise ValueError(f"{name!r} is not a training name: expected MODEL or MODEL[frac=F]") from None


def model_of(name: str) -> str:
    """The model of a model, training or instance name: `unet[frac=0.25]` -> `unet`,
    `langsam[owlv2-base-patch16-ensemble+sam3]` -> `langsam`."""
    return name.partition("[")[0]


def split_pairing(pairing: str) -> tuple[str, str]:
    """LangSAM's `DETECTOR+SAM` (hub ids or folders) -> (detector, sam)."""
    detector, plus, sam = pairing.partition("+")
    if not (plus and detector.strip() and sam.strip()) or "+" in sam:
        raise ValueError(f"{pairing!r} is not a pairing: expected DETECTOR+SAM, each a hub id or a folder")
    return detector.strip(), sam.strip()


def pairing_name(detector: str, sam: str) -> str:
    """What a LangSAM pairing's rows are called: `langsam[DETECTOR+SAM]` of the last parts
    of their names (`langsam[owlv2-base-patch16-ensemble+sam3]`)."""
    return f"langsam[{Path(detector).name}+{Path(sam).name}]"


class Setting(NamedTuple):
    """One (prompt, box threshold) of LangSAM: a run's own, or one of a sweep's."""

    prompt: str
    box_threshold: float

    def __str__(self) -> str:
        return f"{self.prompt}@{self.box_threshold}"  # the float's shortest exact form


def variant_name(model: str, rule: str, setting: Setting | None = None) -> str:
    """A foundation model's rows: `MODEL/RULE`, or `MODEL/RULE[PROMPT@THRESHOLD]` for a setting
    of a sweep; MODEL is the model or a LangSAM pairing (`langsam[A+B]`)."""
    return f"{model}/{rule}" + (f"[{setting}]" if setting is not None else "")


def variant_parts(name: str) -> tuple[str, str, Setting | None]:
    """`variant_name`'s inverse, (model, rule, setting or None): `sam3/best[person@0.5]` ->
    ("sam3", "best", person@0.5). A name without a rule (a trained network's) is its own model."""
    model, _, variant = name.partition("/")
    if not variant:
        return name, "", None
    rule, _, setting = variant.partition("[")
    if not setting:
        return model, rule, None
    prompt, _, threshold = setting.removesuffix("]").rpartition("@")
    return model, rule, Setting(prompt, float(threshold))


def normalize_prompt(prompt: str) -> str:
    """Lowercase and strip the prompt and end it with "." as GroundingDINO expects."""
    prompt = str(prompt).strip().lower()
    return prompt if prompt.endswith(".") else prompt + "."


def normalize_sam3_prompt(prompt: str) -> str:
    """Lowercase and strip the noun phrase; no final "." (SAM 3's prompts are phrases)."""
    prompt = str(prompt).strip().lower().rstrip(".").strip()
    if not prompt:
        raise ValueError("an empty prompt")
    return prompt


def of_model(values: dict[str, Any], model: str, default: Any) -> Any:
    """A per-model setting's value for `model`: its own, else every model's (`EVERY_MODEL`),
    else `default`."""
    return values.get(model, values.get(EVERY_MODEL, default))
