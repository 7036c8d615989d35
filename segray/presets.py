"""The named starting points of the settings (`--preset`), each a few changes to `Config`.

- `article`: the recipe of the article "Who Would Win: A State-of-the-Art Foundation Model
  or a Neural Net?": the Kaggle MADS dataset, 256x256 inputs, batch 16, Adam 1e-4, 25
  epochs for the UNet (width 64) and 20 for the ResNet34-UNet (ImageNet encoder), LangSAM
  with the prompt `person.` and its two `pick_best` rules; beside them SAM 3 with the prompt
  `person`, today's state of the art. These are `Config`'s defaults.
- `demo`: the same pipeline shrunk to run offline on a small CPU machine in minutes: 240
  generated MADS-like images, narrow networks at 96 px, few epochs.
- `demo-sweep`: the demo as a label-efficiency and LangSAM sweep.
"""

from __future__ import annotations

import copy
from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "article": {},
    "demo": {
        "data": {"dataset": "synthetic:240"},
        # Narrow networks at 96 px learn this set in minutes on 2 CPU cores; lr 1e-3 and batch 8
        # give them enough steps to get there (the article's 1e-4 is tuned for 25 GPU epochs).
        "train": {"image_size": 96, "batch_size": 8, "lr": 1e-3, "cpus_per_worker": 2},
        "unet": {"base_width": 8, "epochs": 25},
        "resnet34_unet": {"encoder_weights": "none", "decoder_channels": [64, 32, 16, 16, 8], "epochs": 8},
    },
}
# The demo as a sweep: the UNet on 3 nested shares of the train split, LangSAM over 3 prompts
# x 5 box thresholds; the report answers how much data beats LangSAM. Each share trains about
# as many steps as the whole split, so the UNet gets 12 epochs and the ResNet34-UNet is left
# out, for the sweep to take minutes on 2 CPU cores. One CPU (and torch thread) per training
# lets each run beside the stream without two trainings' threads fighting for the cores.
PRESETS["demo-sweep"] = copy.deepcopy(PRESETS["demo"])
PRESETS["demo-sweep"].update({"models": ["unet", "langsam"],
                              "langsam": {"prompts": ["human.", "people."], "box_thresholds": [0.2, 0.25, 0.35, 0.4]}})
PRESETS["demo-sweep"]["train"].update({"fractions": [0.1, 0.3, 1.0], "cpus_per_worker": 1})
PRESETS["demo-sweep"]["unet"]["epochs"] = 12

OLD_NAMES = {"seeds": "article"}  # a preset's name before: still accepted


def preset_values(name: str) -> dict[str, Any]:
    """The settings a preset changes, with its name (a fresh copy)."""
    name = OLD_NAMES.get(name, name)
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return {**copy.deepcopy(PRESETS[name]), "preset": name}
