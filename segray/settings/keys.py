"""The settings' keys: every setting of `segray.config.Config` by its dotted key, what each
takes, which a job takes, and a source's settings checked key by key."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from segray.config import EVERY_MODEL, MODEL_SECTIONS, Config
from segray.errors import SettingsError


@dataclass(frozen=True)
class Job:
    """A job's settings: the part of `Config` it takes (whole sections or single keys)."""

    name: str
    description: str
    keys: tuple[str, ...]
    required: tuple[str, ...] = ()  # keys without a default the job needs
    positional: str | None = None  # a key given as the command line's positional argument

    def takes(self, key: str) -> bool:
        return any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in self.keys)


RUN = ("preset", "seed", "verbose", "data", "output", "cluster", "tracking.uri", "tracking.experiment")
MODELS = ("models", "unet", "resnet34_unet", "langsam", "sam3")
FOUNDATION = ("langsam", "sam3")  # the models that need no training
JOBS = {job.name: job for job in (
    Job("benchmark", "the whole comparison: train, evaluate, summarize, report",
        (*RUN, "train", *MODELS, "evaluation", "checkpoints.store")),
    Job("train", "train the networks only (Ray Train)",
        (*RUN, "train", "models", "unet", "resnet34_unet", "checkpoints.store")),
    Job("evaluate", "evaluate models that need no training here, trained ones from checkpoints",
        (*RUN, "models", *FOUNDATION, "evaluation", "checkpoints")),
    Job("reevaluate", "evaluate only the (image, model version) pairs a results table lacks",
        ("preset", "seed", "verbose", "data", "output.run_id", "cluster", "tracking.uri", "tracking.experiment", "models",
         *FOUNDATION, "evaluation", "checkpoints", "results"), required=("results.uri",)),
    Job("serve", "serve the models as an HTTP API on Ray Serve",
        ("preset", "verbose", "data.max_pixels", "cluster", "tracking.uri", "models", *FOUNDATION, "checkpoints",
         "serve")),
    Job("report", "draw the comparison report of a finished run", ("report",), required=("report.run",),
        positional="report.run"),
    Job("log_mlflow", "log a finished run in MLflow afterwards, from its folder", ("tracking",),
        required=("tracking.run",), positional="tracking.run"),
)}

def _section(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def leaves(model: type[BaseModel] = Config, prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """(dotted key, field) of every setting, in the schema's order."""
    for name, field in model.model_fields.items():
        section = _section(field.annotation)
        if section is None:
            yield prefix + name, field
        else:
            yield from leaves(section, f"{prefix}{name}.")


FIELDS = dict(leaves())
SECTIONS = {name: _section(field.annotation) for name, field in Config.model_fields.items()
            if _section(field.annotation)}


def bare_type(annotation: Any) -> Any:
    """The type of a setting, without `| None` and `Annotated[...]` around it."""
    while True:
        origin = typing.get_origin(annotation)
        others = [a for a in typing.get_args(annotation) if a is not type(None)]
        if origin is typing.Annotated:
            annotation = others[0]
        elif origin in (typing.Union, types.UnionType) and len(others) == 1:
            annotation = others[0]
        else:
            return annotation


def kind(key: str) -> str:
    """How the command line writes a setting: bool, list, dict (per model) or a scalar."""
    origin = typing.get_origin(bare_type(FIELDS[key].annotation))
    bare = bare_type(FIELDS[key].annotation)
    if bare is bool:
        return "bool"
    return {list: "list", dict: "dict"}.get(origin, "scalar")


def may_be_null(key: str) -> bool:
    return type(None) in typing.get_args(FIELDS[key].annotation)


@cache
def _adapter(key: str) -> TypeAdapter:
    field = FIELDS[key]
    return TypeAdapter(typing.Annotated[field.annotation, field])


def allowed(key: str) -> str:
    """What a setting takes, in words, for error messages."""
    field = FIELDS[key]
    bare = bare_type(field.annotation)
    words = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}
    if typing.get_origin(bare) is typing.Literal:
        text = "one of " + ", ".join(map(str, typing.get_args(bare)))
    elif typing.get_origin(bare) is list:
        text = "a list"
    elif typing.get_origin(bare) is dict:
        text = "a mapping of model names (or * for every model) to values"
    else:
        text = words.get(bare, getattr(bare, "__name__", str(bare)))
    bounds = [f"{op} {getattr(m, attr)}" for m in field.metadata
              for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if getattr(m, attr, None) is not None]
    text += (" " + " and ".join(bounds)) if bounds else ""
    return text + (", or null" if may_be_null(key) else "")


def flatten(values: dict[str, Any], where: str, job: Job, prefix: str = "") -> dict[str, Any]:
    """A source's settings by dotted key, each checked: a key the job takes, a value of the
    key's type and range. `where` names the source in errors."""
    if not isinstance(values, dict):
        raise SettingsError(f"{where}: {prefix.rstrip('.') or 'the settings'} must be a mapping of keys to values, "
                            f"got {values!r}")
    flat = {}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if key in FIELDS:
            if not job.takes(key):
                raise SettingsError(f"{where}: {key}: not a setting of jobs/{job.name}.py (it takes: "
                                    f"{', '.join(job.keys)})")
            flat[key] = check(key, value, where)
        elif prefix == "" and name in SECTIONS and job.takes(name):
            flat.update(flatten(value, where, job, f"{name}."))
        elif prefix == "" and name in SECTIONS:
            raise SettingsError(f"{where}: {name}: not a setting of jobs/{job.name}.py (it takes: "
                                f"{', '.join(job.keys)})")
        else:
            raise SettingsError(f"{where}: {key}: unknown key{nearest(key, job)}")
    return flat


def nearest(key: str, job: Job) -> str:
    """`; did you mean X?` for an unknown key, and the keys of its section the job takes."""
    known = [k for k in FIELDS if job.takes(k)]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    section = key.rpartition(".")[0]
    siblings = [k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == section]
    text = f"; did you mean {close[0]}?" if close else ""
    return text + (f" ({section or 'the top level'} takes: {', '.join(siblings)})" if siblings else "")


def check(key: str, value: Any, where: str) -> Any:
    """`value` if the setting `key` takes it, else a SettingsError saying what it takes."""
    if kind(key) == "dict" and isinstance(value, dict):
        value = every_model(value)
    try:
        _adapter(key).validate_python(value)
    except ValidationError as error:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) + ': ' if e['loc'] else ''}"
                            f"{e['msg'].removeprefix('Value error, ')}"
                            for e in error.errors())
        raise SettingsError(f"{where}: {key}: {value!r} is not allowed ({reasons}); it takes {allowed(key)}") from None
    return value


def every_model(values: dict[str, Any]) -> dict[str, Any]:
    """A per-model setting whose `*` entry is given to every model without its own, so that
    a source's `*` overrides what a source before it set per model."""
    if EVERY_MODEL not in values:
        return values
    return {**{model: values[EVERY_MODEL] for model in MODEL_SECTIONS}, **values}


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys back into nested mappings."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *sections, name = key.split(".")
        place = nested
        for section in sections:
            place = place.setdefault(section, {})
        place[name] = value
    return nested


def shown(value: Any) -> str:
    """A default as the help writes every default: YAML's flow style."""
    if value is None or isinstance(value, (bool, dict, list, tuple)):
        text = yaml.safe_dump(list(value) if isinstance(value, tuple) else value, default_flow_style=True)
        return text.strip().removesuffix("...").strip()
    return str(value)


def value_at(values: Any, key: str) -> Any:
    """A dotted key's value in settings, or in nested mappings (None where a mapping lacks it)."""
    for part in key.split("."):
        if values is None:
            return None
        values = values.get(part) if isinstance(values, dict) else getattr(values, part)
    return values
