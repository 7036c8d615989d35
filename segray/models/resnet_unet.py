"""segmentation-models-pytorch's UNet with a ResNet34 encoder (the article's second network).

Encoder weights: "imagenet" (smp downloads `smp-hub/resnet34.imagenet` from the Hugging
Face hub), a local weights file (a torchvision/timm ResNet34 state dict as .pth or
.safetensors), or none. When ImageNet weights cannot be fetched we fail with a message
naming these options; we never fall back to random weights silently.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

DEFAULT_ENCODER_WEIGHTS = "imagenet"


class EncoderWeightsUnavailable(RuntimeError):
    """The requested ResNet34 encoder weights could not be loaded."""


def build_network(params: dict[str, Any]) -> nn.Module:
    """params: `encoder_weights` ("imagenet" | path | None/"none"), `decoder_channels` (smp's default if absent)."""
    import segmentation_models_pytorch as smp

    weights = params.get("encoder_weights", DEFAULT_ENCODER_WEIGHTS)
    weights = None if weights in (None, "", "none") else weights
    kwargs: dict[str, Any] = {"encoder_name": "resnet34", "in_channels": 3, "classes": 1, "activation": None}
    if params.get("decoder_channels"):
        kwargs["decoder_channels"] = tuple(params["decoder_channels"])

    if weights is None:
        return smp.Unet(encoder_weights=None, **kwargs)
    if weights == "imagenet":
        try:
            return smp.Unet(encoder_weights="imagenet", **kwargs)
        except Exception as error:  # hub errors come in many types (HTTP, offline, cache)
            raise EncoderWeightsUnavailable(_fix_message("ImageNet weights (smp-hub/resnet34.imagenet)", error)) from error
    model = smp.Unet(encoder_weights=None, **kwargs)
    _load_encoder_file(model, weights)
    return model


def _load_encoder_file(model: nn.Module, path: str) -> None:
    if not os.path.isfile(path):
        raise EncoderWeightsUnavailable(_fix_message(f"encoder weights file {path}", FileNotFoundError(path)))
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise EncoderWeightsUnavailable(_fix_message(f"encoder weights file {path}", error)) from error
    # A classification checkpoint carries the fc head, which the encoder does not have.
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    # smp's encoder overrides load_state_dict and returns nothing: compare the keys here.
    expected = set(model.encoder.state_dict())
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise EncoderWeightsUnavailable(
            f"encoder weights file {path} does not fit a ResNet34 encoder: "
            f"missing {missing[:5]}..., unexpected {unexpected[:5]}..."
        )
    model.encoder.load_state_dict(state)


def _fix_message(what: str, error: Exception) -> str:
    cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (
        f"Cannot load the ResNet34 encoder's {what}: {cause}\n"
        "Fix one of: give this machine access to the Hugging Face hub (or set HF_HUB_OFFLINE=1 "
        "with smp-hub/resnet34.imagenet already in the HF cache); pass a local ResNet34 weights "
        "file as resnet34_unet.encoder_weights (--resnet34-unet.encoder-weights PATH: a .pth or .safetensors "
        "state dict); or train without pretraining: resnet34_unet.encoder_weights none."
    )


def check_weights(params: dict[str, Any]) -> None:
    """Fail fast, before any training starts, when the encoder weights cannot be had.
    Building the network once fetches (and caches) or reads them, and raises if it cannot."""
    if params.get("encoder_weights", DEFAULT_ENCODER_WEIGHTS) not in (None, "", "none"):
        build_network(params)
