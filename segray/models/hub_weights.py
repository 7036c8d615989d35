"""Where a foundation model's weights load from (LangSAM's detector and mask model, SAM 3):
a local `save_pretrained` folder or a hub id, checked before anything loads.

When the weights cannot be reached `resolve_weights` raises `WeightsUnavailable`
quickly, with the fix in the message, instead of letting huggingface_hub retry for minutes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlparse

log = logging.getLogger(__name__)

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


class WeightsUnavailable(RuntimeError):
    """A foundation model's weights could not be loaded (no hub, not cached, gated, bad folder)."""


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


def _unavailable(what: str, name: str, reason: str, needs_tokenizer: bool, folders: str,
                 cause: str = "") -> WeightsUnavailable:
    """The error, its first line the reason in short (what a report shows), then the cause and
    the fixes: `folders` names the settings that take local folders. A gated repository (the
    hub refused it) adds how to get access; a token is never shown."""
    files = "config.json, model.safetensors, processor_config.json or preprocessor_config.json"
    if needs_tokenizer:
        files += ", tokenizer.json (or vocab.txt) and tokenizer_config.json"
    cause = " ".join(str(cause).split())  # one line
    gated = ("  - accept the model's licence on its hub page, https://huggingface.co/" + name + ", then log in on "
             "every node: `hf auth login`, or HF_TOKEN in the environment;\n") if "gated" in cause.lower() else ""
    return WeightsUnavailable(
        f"{what} weights unavailable: {name!r} {reason}\n"
        + (f"Cause: {cause}\n" if cause else "")
        + f"Fix one of:\n{gated}"
        f"  - pass local folders: {folders};\n"
        f"  - set HF_HUB_OFFLINE=1 with a Hugging Face cache that already holds {name!r};\n"
        f"  - give this machine access to the Hugging Face hub.\n"
        f"A local folder is what `save_pretrained` writes for the model and its processor: {files}. "
        f"`python -m segray.models.tiny_langsam DIR` writes tiny random weights of every model for offline demos."
    )


class WeightsSource(NamedTuple):
    """Where one model's weights load from, decided before any loading starts."""

    what: str  # "LangSAM detector", "LangSAM mask model", "SAM 3", for messages
    name: str  # as the user gave it
    location: str  # the folder or hub id handed to from_pretrained
    local_files_only: bool
    needs_tokenizer: bool
    folders: str  # the settings that take local folders, for messages


def resolve_weights(what: str, name: str, folders: str, needs_tokenizer: bool = False) -> WeightsSource:
    """Check a local folder, or that a hub id can be fetched; raise WeightsUnavailable if not."""

    def fail(reason: str, cause: str = "") -> WeightsUnavailable:
        return _unavailable(what, name, reason, needs_tokenizer, folders, cause)

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
            raise fail(f"is a folder that lacks {', '.join(missing)}")
        return WeightsSource(what, name, str(path), True, needs_tokenizer, folders)
    if path.exists():
        raise fail("is a file, not a save_pretrained folder")
    if not _HUB_ID.match(name) or name.startswith((".", "/", "~")):
        raise fail(f"is no local folder ({path} does not exist) and no hub id")
    # A hub id. Offline: only the cache counts; look there before importing transformers.
    if _offline():
        if not _is_cached(name):
            raise fail("is not in the local Hugging Face cache, and HF_HUB_OFFLINE is set")
        return WeightsSource(what, name, name, True, needs_tokenizer, folders)
    ok, why = _hub_reachable()
    if ok:
        return WeightsSource(what, name, name, False, needs_tokenizer, folders)
    # No network: use a warm cache directly instead of retrying every file for minutes.
    if _is_cached(name):
        log.warning("Hugging Face hub unreachable (%s); loading %s from the local cache", why, name)
        return WeightsSource(what, name, name, True, needs_tokenizer, folders)
    raise fail("is not in the local Hugging Face cache and the hub is unreachable", cause=why)


def model_type(source: WeightsSource) -> str:
    """The `model_type` its config.json names (`grounding-dino`, `owlv2`, `sam2`, ...): what
    kind of model the weights are, read without importing transformers."""
    from huggingface_hub import hf_hub_download

    def read(location: str, local_files_only: bool) -> Any:
        path = Path(location) / "config.json"
        if not path.is_file():
            path = Path(hf_hub_download(location, "config.json", local_files_only=local_files_only))
        return json.loads(path.read_text()).get("model_type", "")

    return str(load_from(source, read))


def checked_kind(source: WeightsSource, setting: str, allowed: Iterable[str]) -> str:
    """Its `model_type` if `setting` takes that kind of weights, else ValueError naming both."""
    kind = model_type(source)
    if kind not in allowed:
        raise ValueError(f"{setting}: {source.name!r} is a {kind or 'model without a model_type'}; {setting} takes "
                         f"{', '.join(allowed)} weights")
    return kind


def load_from(source: WeightsSource, loader: Callable[..., Any]) -> Any:
    """`loader(location, local_files_only=...)`, any failure raised as WeightsUnavailable with the fixes."""
    try:
        return loader(source.location, local_files_only=source.local_files_only)
    except Exception as e:  # noqa: BLE001 - any load failure means these weights are unusable
        reason = "does not load"
        if source.local_files_only and not Path(source.location).is_dir():
            # transformers' own message talks about connecting even when offline.
            reason = "does not load from the local Hugging Face cache (offline mode)"
        causes = f"{type(e).__name__}: {e}" + (f" (from {type(e.__cause__).__name__}: {e.__cause__})" if e.__cause__ else "")
        raise _unavailable(source.what, source.name, reason, source.needs_tokenizer, source.folders, causes) from e
