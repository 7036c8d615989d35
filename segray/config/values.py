"""Value rules of the settings that are not names: a share of the train split, a pool's
size, a run id."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

from segray.config.names import split_training_name, training_name


def check_fraction(value: float) -> float:
    """A share of the train split, as its training's name writes it (`unet[frac=F]`)."""
    if not 0 < value <= 1:
        raise ValueError(f"{value} is not in (0, 1]")
    if split_training_name(training_name("unet", value))[1] not in (None, value):
        raise ValueError(f"{value} has more digits than a training's name keeps (6 significant)")
    return value


def parse_pool_range(value: Any) -> tuple[int, int]:
    """`N` or `MIN-MAX` actors (or replicas), 1 <= MIN <= MAX."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        low, high = (int(v) for v in value)
    else:
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", str(value))
        if not match:
            raise ValueError(f"expected N or MIN-MAX, got {value!r}")
        low, high = int(match[1]), int(match[2] or match[1])
    if not 1 <= low <= high:
        raise ValueError(f"expected 1 <= MIN <= MAX, got {value!r}")
    return low, high


def check_run_id(run_id: str) -> str:
    """One folder name: it cannot point outside the output folder, nor nest (a results
    table's partitions are one level deep)."""
    if not re.fullmatch(r"[A-Za-z0-9._-]+", run_id) or run_id in (".", ".."):
        raise ValueError(f"{run_id!r} is not one folder name of letters, digits, '.', '_' and '-' (nor . or ..)")
    return run_id


Fraction = Annotated[float, AfterValidator(check_fraction)]
PoolRange = Annotated[tuple[int, int], BeforeValidator(parse_pool_range)]
Share = Annotated[float, Field(gt=0)]
RunId = Annotated[str, AfterValidator(check_run_id)]
