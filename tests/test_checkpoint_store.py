"""The model registry on a local folder and on a real S3 endpoint (moto on loopback):
record, resolve latest / best / a named version / all, refusals, and the dataset fingerprint."""

from __future__ import annotations

import json
import shutil
import uuid

import pytest
import torch

from segray import storage
from segray.data.manifest import manifest_fingerprint, read_folder
from segray.model_registry import (
    RegistryError,
    list_versions,
    record_model,
    record_training,
    resolve_version,
    select_versions,
    spec_for,
)
from segray.models.registry import build_network
from segray.models.trained import OPTIMIZER_FILE, load_network, save_checkpoint


def write_checkpoint(directory, seed: int) -> dict[str, torch.Tensor]:
    """A tiny random UNet checkpoint (with an optimizer state, which the registry must not copy)."""
    torch.manual_seed(seed)
    network = build_network("unet", {"base_width": 4})
    optimizer = torch.optim.Adam(network.parameters())
    save_checkpoint(str(directory), network, {"model": "unet", "params": {"base_width": 4}, "image_size": 32},
                    optimizer)
    return network.state_dict()


@pytest.fixture(params=["local", "s3"])
def registry(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "registry")
    import boto3

    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"registry-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/models"


def record(registry: str, checkpoint, version: str, val_iou: float) -> dict:
    return record_model(registry, str(checkpoint), version, config={"lr": 1e-3},
                        metrics={"best_val_iou": val_iou, "best_epoch": 3, "train_time_s": 1.5},
                        dataset={"uri": "synthetic:8", "fingerprint": "f" * 64})


def test_versions_are_recorded_and_resolved(registry, tmp_path):
    weights = {}
    for seed, (version, val_iou) in enumerate([("run-a", 0.5), ("run-b", 0.7), ("run-c", 0.6)]):
        weights[version] = write_checkpoint(tmp_path / version, seed)
        record(registry, tmp_path / version, version, val_iou)

    assert [r["version"] for r in list_versions(registry, "unet")] == ["run-a", "run-b", "run-c"]
    assert resolve_version(registry, "unet", "latest")["version"] == "run-c"
    assert resolve_version(registry, "unet", "best")["version"] == "run-b"
    assert resolve_version(registry, "unet", "run-a")["version"] == "run-a"
    assert [r["version"] for r in select_versions(registry, "unet", "all")] == ["run-a", "run-b", "run-c"]

    found = resolve_version(registry, "unet", "run-a")
    assert {k: found[k] for k in ("model", "run_id", "config", "metrics", "dataset", "checkpoint_source")} == {
        "model": "unet", "run_id": "run-a", "config": {"lr": 1e-3},
        "metrics": {"best_val_iou": 0.5, "best_epoch": 3, "train_time_s": 1.5},
        "dataset": {"uri": "synthetic:8", "fingerprint": "f" * 64}, "checkpoint_source": str(tmp_path / "run-a")}
    assert found["created_at"].endswith("+00:00")
    # The registry's own copy holds the weights, and no optimizer state.
    assert OPTIMIZER_FILE not in storage.list_files(found["checkpoint"])
    network, _ = load_network(storage.local_copy(found["checkpoint"]))
    for name, tensor in network.state_dict().items():
        assert torch.equal(tensor, weights["run-a"][name])
    spec = spec_for(found)
    assert (spec.name, spec.checkpoint, spec.version) == ("unet", found["checkpoint"], "unet@run-a")


def test_an_unknown_version_lists_the_known_ones(registry, tmp_path):
    with pytest.raises(RegistryError, match="no version of unet"):
        resolve_version(registry, "unet", "latest")
    write_checkpoint(tmp_path / "ckpt", 0)
    record(registry, tmp_path / "ckpt", "run-a", 0.5)
    with pytest.raises(RegistryError, match="no version 'run-z'.*versions: run-a"):
        resolve_version(registry, "unet", "run-z")


def test_a_version_is_written_once(registry, tmp_path):
    write_checkpoint(tmp_path / "first", 0)
    write_checkpoint(tmp_path / "second", 1)
    record(registry, tmp_path / "first", "run-a", 0.5)
    with pytest.raises(RegistryError, match="already in"):
        record(registry, tmp_path / "second", "run-a", 0.9)
    kept = resolve_version(registry, "unet", "run-a")
    assert kept["metrics"]["best_val_iou"] == 0.5 and kept["checkpoint_source"] == str(tmp_path / "first")


def test_an_interrupted_copy_is_invisible_and_can_be_redone(tmp_path):
    registry = str(tmp_path / "registry")
    write_checkpoint(tmp_path / "ckpt", 0)
    record(registry, tmp_path / "ckpt", "run-a", 0.5)
    (tmp_path / "registry" / "unet" / "run-a" / "record.json").unlink()  # as if the copy stopped before it
    assert list_versions(registry, "unet") == []
    assert record(registry, tmp_path / "ckpt", "run-a", 0.5)["version"] == "run-a"


def test_write_new_refuses_an_existing_object(registry):
    uri = storage.join(registry, "lock.json")
    storage.write_new(uri, b"first")
    with pytest.raises(FileExistsError):
        storage.write_new(uri, b"second")
    assert storage.read_bytes(uri) == b"first"


def test_the_dataset_fingerprint_follows_pairs_masks_and_sizes(dataset_copy, tmp_path):
    before = manifest_fingerprint(read_folder(str(dataset_copy)).table)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(dataset_copy, elsewhere)
    assert manifest_fingerprint(read_folder(str(elsewhere)).table) == before  # location does not count

    masks = sorted((elsewhere / "masks").iterdir())
    masks[0].unlink()
    without_mask = manifest_fingerprint(read_folder(str(elsewhere)).table)
    assert without_mask != before

    images = sorted((elsewhere / "images").iterdir())
    images[1].write_bytes(images[1].read_bytes() + b"\0")  # same name, another size
    assert manifest_fingerprint(read_folder(str(elsewhere)).table) not in (before, without_mask)


def test_record_json_is_plain_json(tmp_path):
    registry = str(tmp_path / "registry")
    write_checkpoint(tmp_path / "ckpt", 0)
    record(registry, tmp_path / "ckpt", "run-a", 0.5)
    stored = json.loads((tmp_path / "registry" / "unet" / "run-a" / "record.json").read_text())
    assert set(stored) == {"model", "version", "run_id", "created_at", "config", "metrics", "dataset",
                           "checkpoint_source"}


def test_a_training_result_is_recorded_with_its_metrics_and_dataset(dataset_copy, tmp_path):
    registry = str(tmp_path / "registry")
    write_checkpoint(tmp_path / "best", 0)
    training = {  # segray.benchmark.train_models' result: one model trained, one failed
        "unet": {"model": "unet", "checkpoint": str(tmp_path / "best"), "best_epoch": 2, "best_val_iou": 0.61,
                 "history": [], "train_time_s": 12.5},
        "resnet34_unet": {"model": "resnet34_unet", "error": "RuntimeError: no weights"},
    }
    manifest = read_folder(str(dataset_copy)).table
    records = record_training(registry, training, "train-1", {"lr": 1e-3}, "synthetic:12", manifest)
    assert [r["model"] for r in records] == ["unet"]
    found = resolve_version(registry, "unet", "latest")
    assert found["version"] == found["run_id"] == "train-1"
    assert found["metrics"] == {"best_val_iou": 0.61, "best_epoch": 2, "train_time_s": 12.5}
    assert found["dataset"] == {"uri": "synthetic:12", "fingerprint": manifest_fingerprint(manifest), "images": 12}
    assert list_versions(registry, "resnet34_unet") == []
