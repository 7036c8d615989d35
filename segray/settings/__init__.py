"""The jobs' settings, from three places, each later one winning:

    --preset NAME       the base (segray.presets; `article` by default)
    --config FILE       a YAML settings file, repeatable: a later file wins
    --KEY VALUE         any setting the job takes, by its dotted key (--langsam.prompt human.),
                        or by a short spelling (--dataset, --run-id; `ALIASES`)

and `--print-config` writes the effective settings as YAML that `--config` accepts back.
Every setting is checked against `segray.config.Config` before anything starts: a bad
one (an unknown key, a wrong type, a value out of range, a model's key when the model is
not compared, YAML that does not parse) is a `SettingsError` naming where it came from,
the key and what is allowed; the jobs exit 2 with it (`segray.cli.job_config`). pydantic-settings
merges the preset, the files and the command line; argparse parses the command line,
whose options are made here from the schema.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_settings import InitSettingsSource

from segray.config import MODEL_SECTIONS, Config
from segray.errors import SettingsError
from segray.presets import preset_values
from segray.settings.command_line import ALIASES, from_command_line, option, parser
from segray.settings.keys import FIELDS, JOBS, Job, check, flatten, nest, value_at

__all__ = ["JOBS", "dump", "from_mapping", "load"]


def load(job_name: str, argv: list[str] | None = None) -> Config:
    """The job's effective settings: the preset, then each file, then the command line.
    `--print-config` prints them and exits 0; a bad setting raises SettingsError (an
    argparse error exits 2 itself)."""
    job = JOBS[job_name]
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset")
    pre.add_argument("--config", action="append", default=[])
    early, _ = pre.parse_known_args(argv)
    files = {path: read_file(path) for path in early.config}
    named = [values["preset"] for values in files.values() if isinstance(values, dict) and "preset" in values]
    base = base_config(early.preset or (named[-1] if named else "article"))
    args = parser(job, base).parse_args(argv)
    sources = [(path, flatten(values, path, job)) for path, values in files.items()]
    given = from_command_line(args)
    sources.append(("the command line", {key: check(key, value, "the command line") for key, value in given.items()}))
    config = effective(job, base, sources)
    if getattr(args, "print_config", False):
        print(dump(config, job), end="")
        raise SystemExit(0)
    return config


def from_mapping(job_name: str, values: Any, where: str) -> Config:
    """The job's effective settings from one mapping that a settings file would hold (a
    Serve config's `args`), over its preset. `where` names it in errors."""
    job = JOBS[job_name]
    base = base_config(values.get("preset", "article") if isinstance(values, dict) else "article")
    return effective(job, base, [(where, flatten(values, where, job))])


def base_config(preset: str) -> Config:
    try:
        return Config.model_validate(preset_values(str(preset)))
    except ValueError as error:
        raise SettingsError(f"preset: {error}") from None


def effective(job: Job, base: Config, sources: list[tuple[str, dict[str, Any]]]) -> Config:
    """`base` with each source's settings over the ones before, checked as a whole."""
    config = merge(base.model_dump(), [flat for _, flat in sources])
    config.preset = base.preset
    check_selected(config, sources)
    for key in job.required:
        if value_at(config, key) is None:
            raise SettingsError(f"{key} is required: {FIELDS[key].description} (on the command line: "
                                f"{ALIASES.get(key, (option(key),))[0]} or {option(key)})")
    return config


def merge(base: dict[str, Any], sources: list[dict[str, Any]]) -> Config:
    """pydantic-settings' merge: each source over the ones before it (the first over `base`,
    every setting of the preset), nested mappings key by key."""
    layers = [InitSettingsSource(Config, values) for values in [base, *map(nest, sources)]]
    try:
        return Config(_build_sources=(tuple(reversed(layers)), {}))
    except ValidationError as error:
        raise SettingsError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                                      for e in error.errors())) from None


def check_selected(config: Config, sources: list[tuple[str, dict[str, Any]]]) -> None:
    """A model's setting given (in a file or on the command line) for a model the run does
    not compare is a mistake: refused, naming the models it compares."""
    selected = config.selected()
    for where, flat in sources:
        for key in flat:
            model = key.partition(".")[0]
            if model in MODEL_SECTIONS and model not in selected:
                raise SettingsError(f"{where}: {key}: {model} is not among the models this run compares "
                                    f"(models: {', '.join(config.models)}); add it to models, or drop the setting")


def dump(config: Config, job: Job | str) -> str:
    """The job's settings as YAML that `--config` takes back: its preset, then every key it
    takes (of the models, those it compares)."""
    job = JOBS[job] if isinstance(job, str) else job
    selected = config.selected()
    keys = [key for key in FIELDS if job.takes(key) and key != "preset"
            and (key.partition(".")[0] not in MODEL_SECTIONS or key.partition(".")[0] in selected)]
    named = {"preset": config.preset} if job.takes("preset") else {}
    values = config.to_dict()  # secrets in URIs masked: give them through the environment instead
    return yaml.safe_dump({**named, **nest({key: value_at(values, key) for key in keys})}, sort_keys=False)


def read_file(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            values = yaml.safe_load(f)
    except OSError as error:
        raise SettingsError(f"{path}: cannot read it: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise SettingsError(f"{path}: not YAML that parses: {' '.join(str(error).split())}") from None
    return {} if values is None else values
