"""The torch networks we train, by model name.

Each module named here defines `build_network(params)` (and may define
`check_weights(params)`). They are named as strings so that a process imports only the
network it builds (segmentation_models_pytorch alone takes 10-20 s to import).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported by the network modules, when one is built
    from torch import nn

NETWORKS = {
    "unet": "segray.models.unet",
    "resnet34_unet": "segray.models.resnet_unet",
}


def _module(name: str) -> ModuleType:
    if name not in NETWORKS:
        raise ValueError(f"unknown trainable model {name!r}; known: {sorted(NETWORKS)}")
    return importlib.import_module(NETWORKS[name])


def build_network(name: str, params: dict) -> nn.Module:
    """A fresh torch network for a trainable model."""
    return _module(name).build_network(params)


def check_weights(name: str, params: dict) -> None:
    """Raise, in the driver, when a trainable model's pretrained weights cannot be had.
    A module may define `check_weights(params)`; others need no weights."""
    check = getattr(_module(name), "check_weights", None)
    if check is not None:
        check(params)
