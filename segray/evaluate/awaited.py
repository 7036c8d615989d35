"""Models that join the evaluation stream when their training ends.

The benchmark starts evaluating the models that need no training (LangSAM) while the
UNets train. A trained model's pool is already a stage of that stream: it holds an
`AwaitedModel`, and at its first batch waits on the run's `ModelGate` until the driver
opens it with the trained spec (or with None when the training failed).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from segray.config import split_training_name
from segray.models.base import ModelSpec
from segray.models.catalogue import variants_of
from segray.timeline import on_driver_node


class ModelGate:
    """The actor (`start_gate`): the driver opens a model's gate, its pool waits on it."""

    def __init__(self):
        self.specs: dict[str, ModelSpec | None] = {}
        self.opened: dict[str, asyncio.Event] = {}

    async def open(self, name: str, spec: ModelSpec | None) -> None:
        self.specs[name] = spec
        self.opened.setdefault(name, asyncio.Event()).set()

    async def wait(self, name: str) -> ModelSpec | None:
        await self.opened.setdefault(name, asyncio.Event()).wait()
        return self.specs[name]


def start_gate():
    """The run's model gate, on the driver's node: a lost worker node must not take it."""
    import ray

    return ray.remote(num_cpus=0)(ModelGate).options(scheduling_strategy=on_driver_node()).remote()


@dataclass
class AwaitedModel:
    """A model of the stream whose spec comes through `gate` once its training ends. `name`
    is the network's (its pool is sized by it, as a `ModelSpec`'s), `training` the
    training's (`unet[frac=0.25]`, `segray.models.checkpoint.training_name`): the gate's key."""

    name: str
    variants: list[str]
    gate: Any  # a ModelGate actor handle
    training: str

    @classmethod
    def of(cls, training: str, gate) -> AwaitedModel:
        """The stream's model for the training named `training`, before it has run."""
        model, fraction = split_training_name(training)
        return cls(model, variants_of(ModelSpec(model, train_fraction=fraction)), gate, training)

    def wait(self) -> ModelSpec | None:
        import ray

        return ray.get(self.gate.wait.remote(self.training))
