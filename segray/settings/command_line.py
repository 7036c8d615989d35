"""The jobs' command lines, made from the settings' schema: an option per setting a job
takes (`--langsam.box-threshold`), and the short spellings (`ALIASES`)."""

from __future__ import annotations

import argparse
import difflib
import re
import typing
from typing import Any, NoReturn

from segray.config import EVERY_MODEL, MODEL_SECTIONS, Config
from segray.settings.keys import FIELDS, SECTIONS, Job, bare_type, kind, may_be_null, shown, value_at

# Short spellings of keys: the common ones, and each key's spelling before the settings files.
ALIASES: dict[str, tuple[str, ...]] = {
    "data.dataset": ("--dataset",), "data.cache_dir": ("--cache-dir",),
    "data.mask_person_values": ("--mask-person-values",), "data.max_pixels": ("--max-pixels",),
    "output.path": ("--output",), "output.run_id": ("--run-id",), "output.overwrite": ("--overwrite",),
    "output.resume": ("--resume",),
    "cluster.ray_address": ("--ray-address",), "cluster.s3_endpoint_url": ("--s3-endpoint-url",),
    "cluster.gpu": ("--gpu",), "verbose": ("-v",),
    "train.image_size": ("--image-size",), "train.batch_size": ("--batch-size",), "train.lr": ("--lr",),
    "train.num_workers": ("--num-workers",), "train.cpus_per_worker": ("--cpus-per-worker",), "train.amp": ("--amp",),
    "train.fractions": ("--train-fractions",),
    "unet.epochs": ("--unet-epochs",), "unet.base_width": ("--unet-base-width",),
    "resnet34_unet.epochs": ("--resnet-epochs",), "resnet34_unet.encoder_weights": ("--resnet-encoder-weights",),
    **{f"langsam.{key}": (f"--langsam-{key.replace('_', '-')}",) for key in MODEL_SECTIONS["langsam"].model_fields},
    "evaluation.batch_size": ("--eval-batch-size",), "evaluation.actors": ("--eval-actors",),
    "evaluation.cpus_per_actor": ("--cpus-per-actor",), "evaluation.gpus_per_actor": ("--gpus-per-actor",),
    "evaluation.rows_per_file": ("--rows-per-file",),
    "tracking.uri": ("--mlflow-tracking-uri",), "tracking.experiment": ("--mlflow-experiment",),
    "checkpoints.store": ("--checkpoint-store", "--registry"), "checkpoints.versions": ("--version",),
    "checkpoints.run": ("--checkpoints-from",), "checkpoints.dirs": ("--checkpoint",),
    "results.uri": ("--results",), "results.lock_stale_after": ("--lock-stale-after",),
    **{f"serve.{key}": (f"--{key.replace('_', '-')}",) for key in ("host", "port", "rank_from", "max_batch_size",
                                                                   "batch_wait_ms", "replicas", "cpus_per_replica",
                                                                   "gpus_per_replica", "max_bytes")},
    **{f"report.{key}": (f"--{key.replace('_', '-')}",) for key in ("split", "gpu_hour_usd", "cpu_hour_usd", "worst")},
}
# The spellings of the command line that name the model per value (MODEL=VALUE).
NULL = "null"  # the command line's way to say "no value" for a setting that may have none


def option(key: str) -> str:
    return "--" + key.replace("_", "-")


class Parser(argparse.ArgumentParser):
    """argparse's, whose error for an unknown option names the nearest one."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):
            known = [o for action in self._actions for o in action.option_strings]
            for word in message.split(":", 1)[1].split():
                close = difflib.get_close_matches(word.split("=")[0], known, n=1, cutoff=0.6)
                if word.startswith("-") and close:
                    message += f" (did you mean {close[0]}?)"
                    break
        super().error(message)


def parser(job: Job, base: Config) -> Parser:
    """The job's command line: `--config`, `--print-config`, and one option per setting it
    takes, grouped by section, each with its description and the preset's value."""
    p = Parser(prog=f"jobs/{job.name}.py", description=f"{job.description}. Settings come from --preset, then each "
               "--config file, then the options, each later one winning; see docs/CONFIGURATION.md.",
               argument_default=argparse.SUPPRESS)
    g = p.add_argument_group("settings")
    g.add_argument("--config", action="append", metavar="FILE", dest="config_files",
                   help="a YAML settings file, repeatable: a later file wins")
    g.add_argument("--print-config", action="store_true", help="write the effective settings as YAML (what --config "
                   "takes) and exit")
    groups: dict[str, argparse._ArgumentGroup] = {"": p.add_argument_group("run: what it runs")}
    dump = base.model_dump(mode="json")
    for key, field in FIELDS.items():
        if not job.takes(key):
            continue
        section = key.rpartition(".")[0]
        if section not in groups:
            groups[section] = p.add_argument_group((SECTIONS[section].__doc__ or section).split("\n")[0])
        value = value_at(dump, key)
        text = field.description or ""
        if kind(key) == "dict":
            text += "; MODEL=VALUE sets a model's (or a training's), a bare VALUE every model's"
        text = (text + f" (default: {shown(value)})").replace("%", "%%")
        flags = [option(key), *ALIASES.get(key, ())]
        if key == job.positional:
            p.add_argument(key, nargs="?", metavar=key.rpartition(".")[2].upper(), help=text)
            continue
        if kind(key) == "bool":
            groups[section].add_argument(*flags, dest=key, action=argparse.BooleanOptionalAction, help=text)
        else:
            groups[section].add_argument(*flags, dest=key, help=text, metavar=metavar(key),
                                         action="append" if kind(key) == "dict" else "store")
    return p


def metavar(key: str) -> str:
    bare = bare_type(FIELDS[key].annotation)
    if typing.get_origin(bare) is typing.Literal:
        return "{" + ",".join(map(str, typing.get_args(bare))) + "}"
    return {"list": "A,B,...", "dict": "[MODEL=]VALUE"}.get(kind(key)) or {int: "N", float: "X"}.get(bare, "TEXT")


def from_command_line(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line, as a settings file would write them."""
    given = {}
    for key, value in vars(args).items():
        if key not in FIELDS or value is None:  # a positional argument not given is None
            continue
        if value == NULL and may_be_null(key):
            value = None
        elif kind(key) == "list" and isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        elif kind(key) == "dict":
            value = dict(model_and_value(item) for item in value)
        given[key] = value
    return given


def model_and_value(item: str) -> tuple[str, str]:
    """`MODEL=VALUE` -> (MODEL, VALUE); MODEL may be a training name, whose `=` is its own
    (`unet[frac=0.25]=latest`). A bare VALUE is every model's (`*`)."""

    match = re.fullmatch(r"([^=\[\]]+(?:\[[^\]]*\])?)=(.*)", item, re.DOTALL)
    return (match[1], match[2]) if match else (EVERY_MODEL, item)
