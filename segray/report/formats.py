"""How the report writes numbers and names: one place for its tables, notes, headline and files."""

from __future__ import annotations

import html
import re
from typing import Any

import numpy as np


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_p(value: float | None) -> str:
    if value is None:
        return "–"
    return "< 1e-300" if value == 0 else (f"{value:.2e}" if value < 1e-3 else f"{value:.3f}")


def fmt_ci(ci: tuple[float | None, float | None]) -> str:
    return "–" if ci[0] is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def fmt_pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def fmt_minutes(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds / 60:.1f} min"


def md_text(value: Any) -> str:
    """`value` as literal Markdown text on one line: HTML escaped, the marks that make
    emphasis, code, math, links or table cells backslash-escaped, line breaks as spaces (a
    category or prompt is data, not markup)."""
    text = " ".join(html.escape(str(value), quote=False).split())
    return re.sub(r"([\\`*|~$]|\](?=\())", r"\\\1", text)


def figure_name(model: str) -> str:
    """A file-name-safe form of a model variant (`langsam/sam_score` -> `langsam-sam_score`)."""
    return "".join(c if c.isalnum() or c in "-_.+" else "-" for c in model)  # '+' keeps pairings apart
