"""Secrets in URIs, masked wherever a URI is shown or kept.

A URI may carry a password (`https://user:TOKEN@host`) or a token in its query
(`?token=…`, a presigned `X-Amz-Signature=…`). Printed text, error messages, run.json,
summary.json, settings.yaml and what MLflow receives show it as `***` instead.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/:@]*:)[^\s/@]+(?=@)")
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&](?:[a-zA-Z0-9_.-]*(?:token|secret|password|passwd|signature|sig|credential|api[_-]?key|"
    r"access[_-]?key)[a-zA-Z0-9_.-]*)=)[^&\s#'\"]+", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with the password of every URI in it, and every secret-named query value, masked."""
    return _QUERY_SECRET.sub(rf"\g<head>{MASK}", _PASSWORD.sub(rf"\g<head>{MASK}", text))


def redacted(value: Any) -> Any:
    """A JSON-like value with every string in it `redact`ed."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redacted(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redacted(item) for item in value]
    return value
