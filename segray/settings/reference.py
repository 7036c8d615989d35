"""docs/CONFIGURATION.md, generated from the settings' schema:

    python -m segray.settings.reference > docs/CONFIGURATION.md
"""

from __future__ import annotations

from typing import Any

from segray import presets
from segray.config import Config
from segray.presets import PRESETS
from segray.settings.command_line import ALIASES
from segray.settings.keys import FIELDS, JOBS, SECTIONS, allowed, shown


def reference() -> str:
    """docs/CONFIGURATION.md: every setting, from the schema (`python -m segray.settings`)."""
    base = Config().model_dump(mode="json")
    lines = ["# Settings reference", "",
             "Every setting of every job, generated from the settings schema (`segray/config`) by",
             "`python -m segray.settings.reference > docs/CONFIGURATION.md`; a test fails when this page is",
             "stale. A job takes its settings from",
             "`--preset` (`article` by default), then each `--config FILE` (YAML, repeatable, a later file wins),",
             "then its options, each later one winning; `--print-config` writes its effective settings as YAML",
             "that `--config` takes back, and every run keeps them in `OUTPUT/RUN_ID/settings.yaml`.",
             "",
             "On the command line a key is an option: `langsam.box_threshold` is `--langsam.box-threshold 0.25`;",
             "a list is comma-separated (`--models unet,langsam`); a per-model mapping takes `MODEL=VALUE`,",
             "repeatable, and a bare `VALUE` for every model (`--evaluation.batch-size unet=32`); `null` sets a",
             "setting that may have none to none. The spellings in the last column are accepted too: the",
             "short ones (`--dataset`, `--run-id`), and older spellings kept for existing scripts",
             "(`--langsam-prompt`, `--eval-actors`, `--checkpoint-store`, the preset name `seeds` for `article`).",
             "",
             "A settings file holds any of the keys below, nested by section:",
             "",
             "```yaml",
             "preset: demo",
             "data:",
             "  dataset: synthetic:240",
             "unet:",
             "  epochs: 30",
             "evaluation:",
             "  batch_size:",
             "    unet: 32",
             "```",
             "",
             "| job | its settings |", "|---|---|"]
    lines += [f"| `jobs/{job.name}.py` | {', '.join(f'`{key}`' for key in job.keys)} |" for job in JOBS.values()]
    lines += ["", "## Presets", "", presets.__doc__.split("\n\n", 1)[1].strip(), ""]
    lines += [f"- `{name}` sets " + (", ".join(f"`{key}`" for key in flatten_keys(values))
                                     or "nothing: it is the defaults below") + "."
              for name, values in PRESETS.items()]
    section = None
    for key, field in FIELDS.items():
        name = key.rpartition(".")[0]
        if name != section or section is None:
            section = name
            title = (SECTIONS[name].__doc__ or name).split("\n")[0] if name else "the run"
            lines += ["", f"## {name or 'top level'}", "", f"{title[0].upper()}{title[1:]}.", "",
                      "| key | takes | default | what it is | also |", "|---|---|---|---|---|"]
        default = base
        for part in key.split("."):
            default = default[part]
        also = ", ".join(f"`{alias}`" for alias in ALIASES.get(key, ()))
        lines.append(f"| `{key}` | {allowed(key)} | `{shown(default)}` | {field.description or ''} | {also} |")
    return "\n".join(lines) + "\n"


def flatten_keys(values: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for name, value in values.items():
        if name in SECTIONS and isinstance(value, dict):
            keys += flatten_keys(value, f"{name}.")
        else:
            keys.append(prefix + name)
    return keys


if __name__ == "__main__":
    print(reference(), end="")
