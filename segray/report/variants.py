"""The report's view of the rows' model variants: which are foundation models, which model
instance each belongs to (`langsam`, a LangSAM pairing `langsam[DETECTOR+SAM]`, `sam3`),
its rule and, in a prompt x threshold sweep, its setting; and the run's own setting of
each, the one the general tables show."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from segray.config import TRAINABLE, Sam3Config, Setting, model_of, variant_parts
from segray.models.langsam_rules import DEFAULT_RULE, run_setting

# The rule a user of each model gets without choosing one: the article's for LangSAM (and
# its pairings), SAM 3's own semantic map for SAM 3.
DEFAULT_RULES = {"langsam": DEFAULT_RULE, "sam3": "semantic"}


def is_foundation(name: str) -> bool:
    """A variant of a model we do not train (`langsam/...`, `langsam[a+b]/...`, `sam3/...`)."""
    return model_of(name.split("/")[0]) not in TRAINABLE


def run_settings(config: dict[str, Any]) -> dict[str, Setting]:
    """The run's own (prompt, threshold) per model (summary.json's `config`), whatever a sweep
    adds; a LangSAM pairing takes LangSAM's."""
    sam3 = Sam3Config.model_validate({k: v for k, v in (config.get("sam3") or {}).items() if k in ("prompt", "threshold")})
    return {"langsam": run_setting(config.get("langsam") or {}), "sam3": Setting(sam3.prompt, sam3.threshold)}


def run_setting_of(instance: str, defaults: dict[str, Setting]) -> Setting | None:
    """An instance's own setting among `run_settings`; None for a model without one."""
    return defaults.get(model_of(instance))  # a pairing `langsam[a+b]` is LangSAM's


def other_sweep_settings(models: Iterable[str], defaults: dict[str, Setting]) -> list[str]:
    """The variants of a sweep's settings other than the run's own (`run_settings`), of every
    swept model: the console and the report's general tables leave them to the sweep's section."""
    out = []
    for model in models:
        instance, _, setting = variant_parts(model)
        if setting is not None and setting != run_setting_of(instance, defaults):
            out.append(model)
    return out
