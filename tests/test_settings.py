"""The settings: a preset, then files, then the command line; every option a job lists
changes its settings; `--print-config` round-trips through `--config`; every bad setting is
exit 2 before Ray starts, naming the file, the key and what is allowed; the reference page
is the schema's; the commands in the README and the docs parse."""

from __future__ import annotations

import os
import re
import shlex
import typing
from pathlib import Path

import pytest
import yaml

import segray.run
from segray.config import KAGGLE_DATASET, Config
from segray.errors import RunExists, SettingsError
from segray.presets import PRESETS
from segray.run import prepare_run_dir
from segray.settings import JOBS, dump, from_mapping, load
from segray.settings.command_line import parser
from segray.settings.keys import FIELDS, bare_type, kind, value_at
from segray.settings.reference import reference
from tests.conftest import job

ROOT = Path(__file__).parents[1]
REQUIRED = {"results.uri": "runs/table", "report.run": "runs/x", "tracking.run": "runs/x"}


def required(name: str) -> list[str]:
    """The command line's values for the keys the job needs (its positional one bare)."""
    spec = JOBS[name]
    return [arg for key in spec.required
            for arg in ([REQUIRED[key]] if key == spec.positional else [f"--{key.replace('_', '-')}", REQUIRED[key]])]


def test_the_default_run_is_the_articles_recipe_on_kaggle():
    config = load("benchmark", [])
    assert config.preset == "article" and config.data.dataset == KAGGLE_DATASET
    assert config.models == ["unet", "resnet34_unet", "langsam", "sam3"]
    assert (config.train.image_size, config.train.batch_size, config.train.lr) == (256, 16, 1e-4)
    assert (config.unet.epochs, config.resnet34_unet.epochs) == (25, 20)
    assert config.unet.base_width == 64 and config.resnet34_unet.encoder_weights == "imagenet"
    assert (config.langsam.prompt, config.langsam.box_threshold) == ("person.", 0.3)
    assert (config.sam3.weights, config.sam3.prompt) == ("facebook/sam3", "person")
    assert load("benchmark", ["--preset", "seeds"]).preset == "article"  # the preset's name before


def test_options_override_files_which_override_the_preset(tmp_path):
    first = tmp_path / "first.yaml"
    first.write_text("unet:\n  epochs: 3\nevaluation:\n  batch_size: {unet: 4}\nlangsam:\n  prompt: Human\n")
    second = tmp_path / "second.yaml"
    second.write_text("unet:\n  epochs: 5\n")
    config = load("benchmark", ["--preset", "demo", "--config", str(first), "--config", str(second),
                                "--image-size", "64", "--models", "unet, langsam", "--langsam-sam", "/w/sam2"])
    assert config.data.dataset == "synthetic:240" and config.resnet34_unet.epochs == 8  # the preset's
    assert config.unet.epochs == 5  # the later file wins
    assert config.evaluation.batch_size == {"unet": 4, "resnet34_unet": 16, "langsam": 4, "sam3": 4}  # key by key
    assert config.langsam.prompt == "human." and config.langsam.sam == "/w/sam2"
    assert config.models == ["unet", "langsam"] and config.params("unet") == {"base_width": 8, "image_size": 64}
    assert load("benchmark", ["--config", str(second), "--unet.epochs", "9"]).unet.epochs == 9  # options win


def test_a_bare_value_of_a_per_model_setting_is_every_models():
    config = load("benchmark", ["--gpus-per-actor", "1", "--gpus-per-actor", "langsam=2"])
    assert config.evaluation.gpus_per_actor == {"unet": 1.0, "resnet34_unet": 1.0, "langsam": 2.0, "sam3": 1.0,
                                                "*": 1.0}
    assert load("evaluate", ["--version", "unet[frac=0.25]=latest"]).checkpoints.versions == {
        "unet[frac=0.25]": "latest"}  # a training's name keeps its own '='


def sample(key: str, current) -> str:
    """A command line value for `key` other than `current`."""
    special = {"preset": "demo", "models": "unet", "data.mask_person_values": "15", "train.fractions": "0.5,1",
               "langsam.backend": "lang_sam", "report.split": "train", "resnet34_unet.decoder_channels": "8,8,8,8,8",
               "langsam.box_thresholds": "0.5", "langsam.prompts": "human.", "sam3.thresholds": "0.7",
               "sam3.prompts": "people", "langsam.pairings": "google/owlv2-base-patch16-ensemble+facebook/sam3"}
    if key in special:
        return special[key]
    if kind(key) == "dict":
        return "unet=2"
    bare = bare_type(FIELDS[key].annotation)
    if bare is int:
        return str((current or 0) + 1)
    if bare is float:
        return str(current / 2 if current else 0.5)
    return "changed"


@pytest.mark.parametrize("name", JOBS)
def test_every_option_a_job_lists_changes_its_settings(name):
    """Each option of the job's --help, aliases included, given a value other than the
    preset's: the effective setting changes. No option is accepted and then ignored."""
    base = load(name, required(name))
    checked = 0
    for action in parser(JOBS[name], base)._actions:
        key = action.dest
        if key not in FIELDS or not action.option_strings:
            continue
        current = value_at(base, key)
        for flag in action.option_strings:
            if kind(key) == "bool":
                if flag.startswith("--no-") != bool(current):
                    continue  # this spelling sets what is set already
                argv = [flag]
            else:
                argv = [flag, sample(key, current)]
            if key == "output.resume":
                argv += ["--run-id", "x"]  # a run to resume
            changed = value_at(load(name, [*required(name), *argv]), key)
            assert changed != current, (name, flag, current)
            checked += 1
    assert checked >= len([key for key in FIELDS if JOBS[name].takes(key)]) - 1  # its positional aside


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", JOBS)
def test_print_config_is_what_config_takes_back(name, preset, tmp_path, capsys):
    argv = ["--preset", preset, *required(name)] if JOBS[name].takes("preset") else required(name)
    with pytest.raises(SystemExit) as exit_:
        load(name, [*argv, "--print-config"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    (tmp_path / "settings.yaml").write_text(printed)
    again = load(name, ["--config", str(tmp_path / "settings.yaml")])
    assert again == load(name, argv) and dump(again, name) == printed


def test_a_serve_configs_args_are_the_serve_jobs_settings():
    config = from_mapping("serve", {"models": ["unet"], "checkpoints": {"store": "s3://b/store"},
                                    "serve": {"replicas": {"*": "1-4"}}}, "args")
    assert config.serve.replicas["unet"] == (1, 4) and config.checkpoints.store == "s3://b/store"
    with pytest.raises(SettingsError, match="args: serve.replica: unknown key; did you mean serve.replicas"):
        from_mapping("serve", {"serve": {"replica": 2}}, "args")


BAD = {
    "unknown key": ("langsam:\n  box_treshold: 0.2\n", ["langsam.box_treshold", "did you mean langsam.box_threshold",
                                                       "langsam takes: prompt, box_threshold"]),
    "unknown section": ("trian:\n  lr: 0.1\n", ["trian: unknown key", "did you mean train"]),
    "wrong type": ("unet:\n  epochs: many\n", ["unet.epochs", "'many' is not allowed", "a whole number >= 1"]),
    "out of range": ("langsam:\n  box_threshold: 3\n", ["langsam.box_threshold", "3 is not allowed",
                                                        "a number >= 0 and <= 1"]),
    "not a choice": ("langsam:\n  backend: sam3\n", ["langsam.backend", "one of transformers, lang_sam"]),
    "not a model": ("models: [unet, sam]\n", ["models", "'sam' is not a model", "unet, resnet34_unet, langsam"]),
    "a key of a model not compared": ("models: [unet]\nlangsam:\n  prompt: human.\n",
                                      ["langsam.prompt", "langsam is not among the models this run compares",
                                       "models: unet"]),
    "not the job's": ("serve:\n  port: 9000\n", ["serve: not a setting of jobs/benchmark.py", "it takes: "]),
    "YAML that does not parse": ("train:\n  lr: [1\n", ["not YAML that parses", "line 2"]),
    "not a mapping": ("- unet\n", ["must be a mapping of keys to values"]),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_settings_file_exits_2_before_ray_starts_naming_the_file_and_key(case, tmp_path, monkeypatch, capsys):
    def no_ray(*_):
        raise AssertionError("Ray started")

    monkeypatch.setattr(segray.run, "start_ray", no_ray)
    text, said = BAD[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SystemExit) as exit_:
        job("benchmark")(["--config", str(path)])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {path}: ")
    for part in said:
        assert part in error, error


def test_bad_options_exit_2_naming_the_key(capsys):
    with pytest.raises(SystemExit) as exit_:
        job("benchmark")(["--unet-epochs", "0"])
    assert exit_.value.code == 2
    assert "the command line: unet.epochs: '0' is not allowed" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        job("benchmark")(["--langsam.promt", "x"])
    assert exit_.value.code == 2 and "(did you mean --langsam.prompt?)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        job("train")(["--langsam-prompt", "x"])  # train takes no LangSAM setting
    assert exit_.value.code == 2
    with pytest.raises(SystemExit):
        job("reevaluate")([])  # results.uri is required
    assert "results.uri is required" in capsys.readouterr().err
    for argv, message in ((["--resume", "--overwrite", "--run-id", "x"], "exclude each other"),
                          (["--resume"], "resume needs the run_id")):
        with pytest.raises(SystemExit) as exit_:
            job("benchmark")(["--preset", "demo", *argv])
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_help_writes_every_default_one_way(capsys):
    for name in JOBS:
        with pytest.raises(SystemExit):
            load(name, ["--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "[default" not in text and "default: None" not in text
        options = [o for o in re.findall(r"(--[a-z][a-z0-9.-]+)", text) if o not in ("--help", "--config")]
        assert options
    assert "--preset TEXT the starting settings: article, demo, demo-sweep (segray.presets) (default: article)" in " ".join(
        load_help("benchmark").split())


def load_help(name: str) -> str:
    return parser(JOBS[name], Config()).format_help()


def test_the_reference_page_is_the_schemas():
    assert (ROOT / "docs" / "CONFIGURATION.md").read_text() == reference(), (
        "docs/CONFIGURATION.md is stale: python -m segray.settings.reference > docs/CONFIGURATION.md")
    for key in FIELDS:
        assert f"| `{key}` |" in reference()


def commands(text: str) -> list[tuple[str, list[str]]]:
    """Every `python jobs/NAME.py ARGS` in `text`'s code blocks (continued lines joined; a
    shell's `$(...)` is one word, and the command ends at a redirection, pipe or `&&`)."""
    found = []
    for language, block in re.findall(r"```(\w*)\n(.*?)```", text, re.S):
        if language not in ("bash", "sh", ""):
            continue
        for line in block.replace("\\\n", " ").splitlines():
            match = re.search(r"python jobs/([a-z_]+)\.py(.*)", line)
            if match:
                args = re.sub(r"\$\([^)]*\)", "X", match[2])
                found.append((match[1], shlex.split(re.split(r"\s(?:>>?|\||&&|;|#)\s", args)[0])))
    return found


def test_every_command_in_the_readme_and_the_docs_parses():
    checked = 0
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for name, argv in commands(page.read_text()):
            spec = JOBS[name]
            args = parser(spec, Config()).parse_args(without_config_files(argv))
            assert args is not None, (page.name, name, argv)
            checked += 1
    assert checked >= 10


def without_config_files(argv: list[str]) -> list[str]:
    """`argv` without its `--config FILE` pairs (the files are the pages' own examples)."""
    return [arg for i, arg in enumerate(argv) if arg != "--config" and (i == 0 or argv[i - 1] != "--config")]


def test_every_settings_file_in_the_readme_and_the_docs_loads():
    checked = 0
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for language, block in re.findall(r"```(\w*)\n(.*?)```", page.read_text(), re.S):
            if language != "yaml":
                continue
            values = yaml.safe_load(block)
            errors = {}
            for name in JOBS:  # a file is for some job: the first that takes all its keys
                try:
                    from_mapping(name, values, page.name)
                    break
                except SettingsError as error:
                    errors[name] = str(error)
            else:
                pytest.fail(f"{page.name}: no job takes this settings file:\n{block}\n{errors}")
            checked += 1
    assert checked >= 2


def test_a_run_dir_is_refused_or_replaced_whole(tmp_path):
    run = tmp_path / "run"
    (run / "predictions").mkdir(parents=True)
    (run / "predictions" / "old.parquet").write_bytes(b"old rows")
    with pytest.raises(RunExists, match="--overwrite"):
        prepare_run_dir(str(run), overwrite=False)
    prepare_run_dir(str(run), overwrite=True)
    assert [p.name for p in run.iterdir()] == ["run.json"]


def test_each_model_has_its_section_and_its_code():
    from segray.config import MODEL_SECTIONS, TRAINABLE
    from segray.models.catalogue import SEGMENTERS
    from segray.models.networks import NETWORKS

    assert set(SEGMENTERS) == set(MODEL_SECTIONS) and set(NETWORKS) == set(TRAINABLE)
    assert typing.get_args(FIELDS["langsam.backend"].annotation)


def test_a_local_rays_workers_use_the_jobs_environment_and_a_clusters_keep_rays_default(monkeypatch):
    """On a cluster, Ray's `uv run` hook is how workers on other nodes get the locked
    environment (k8s/rayjob.yaml): a job that joins one leaves it on."""
    from segray.cli import set_up

    monkeypatch.delenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    set_up(load("benchmark", ["--ray-address", "10.0.0.1:6379"]))
    assert "RAY_ENABLE_UV_RUN_RUNTIME_ENV" not in os.environ
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")  # as `ray job submit` sets it
    set_up(load("benchmark", []))
    assert "RAY_ENABLE_UV_RUN_RUNTIME_ENV" not in os.environ
    monkeypatch.delenv("RAY_ADDRESS")
    set_up(load("benchmark", []))
    assert os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] == "0"
