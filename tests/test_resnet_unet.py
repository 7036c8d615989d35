"""resnet34_unet's encoder from a local weights file (the offline alternative to ImageNet
weights from the hub): torchvision's ResNet34 layout, as .pth or .safetensors."""

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from segray.models.networks import build_network
from segray.models.resnet_unet import EncoderWeightsUnavailable


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_local_resnet34_file_becomes_the_encoder(tmp_path, suffix):
    state = torchvision.models.resnet34(weights=None).state_dict()  # with the classifier head, as published
    path = tmp_path / f"resnet34{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, path)

    network = build_network("resnet34_unet", {"encoder_weights": str(path), "decoder_channels": [16, 8, 8, 8, 8]})

    loaded = network.encoder.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if not k.startswith("fc."))


def test_weights_of_another_network_are_refused_by_name(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(EncoderWeightsUnavailable, match="does not fit a ResNet34 encoder"):
        build_network("resnet34_unet", {"encoder_weights": str(path)})


def test_a_missing_file_names_the_options(tmp_path):
    with pytest.raises(EncoderWeightsUnavailable, match="resnet34_unet.encoder_weights none"):
        build_network("resnet34_unet", {"encoder_weights": str(tmp_path / "nowhere.pth")})
