"""The checkpoint store on a local folder and on a real S3 endpoint (moto on loopback):
record, resolve latest / best / a named version / all, refusals, and the dataset fingerprint."""

from __future__ import annotations

import json
import os
import shutil
import uuid

import pytest
import torch

from segray import storage
from segray.config import Config
from segray.data.manifest import manifest_fingerprint, read_folder
from segray.errors import CheckpointStoreError
from segray.models.checkpoint import OPTIMIZER_FILE, load_network, save_checkpoint
from segray.models.networks import build_network
from segray.models.selection import TrainedModels, models_to_evaluate
from segray.models.store import list_versions, record_model, record_training, resolve_version, select_versions


def write_checkpoint(directory, seed: int) -> dict[str, torch.Tensor]:
    """A tiny random UNet checkpoint (with an optimizer state, which the store must not copy)."""
    torch.manual_seed(seed)
    network = build_network("unet", {"base_width": 4})
    optimizer = torch.optim.Adam(network.parameters())
    save_checkpoint(str(directory), network, {"model": "unet", "params": {"base_width": 4}, "image_size": 32},
                    optimizer)
    return network.state_dict()


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "store")
    import boto3

    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"store-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/models"


def record(store: str, checkpoint, version: str, val_iou: float) -> dict:
    return record_model(store, str(checkpoint), version, config={"lr": 1e-3},
                        metrics={"best_val_iou": val_iou, "best_epoch": 3, "train_time_s": 1.5},
                        dataset={"uri": "synthetic:8", "fingerprint": "f" * 64})


def test_versions_are_recorded_and_resolved(store, tmp_path):
    weights = {}
    for seed, (version, val_iou) in enumerate([("run-a", 0.5), ("run-b", 0.7), ("run-c", 0.6)]):
        weights[version] = write_checkpoint(tmp_path / version, seed)
        record(store, tmp_path / version, version, val_iou)

    assert [r["version"] for r in list_versions(store, "unet")] == ["run-a", "run-b", "run-c"]
    assert resolve_version(store, "unet", "latest")["version"] == "run-c"
    assert resolve_version(store, "unet", "best")["version"] == "run-b"
    assert resolve_version(store, "unet", "run-a")["version"] == "run-a"
    assert [r["version"] for r in select_versions(store, "unet", "all")] == ["run-a", "run-b", "run-c"]

    found = resolve_version(store, "unet", "run-a")
    assert {k: found[k] for k in ("model", "run_id", "config", "metrics", "dataset", "checkpoint_source")} == {
        "model": "unet", "run_id": "run-a", "config": {"lr": 1e-3},
        "metrics": {"best_val_iou": 0.5, "best_epoch": 3, "train_time_s": 1.5},
        "dataset": {"uri": "synthetic:8", "fingerprint": "f" * 64}, "checkpoint_source": str(tmp_path / "run-a")}
    assert found["created_at"].endswith("+00:00")
    # The store's own copy holds the weights, and no optimizer state.
    assert OPTIMIZER_FILE not in storage.list_files(found["checkpoint"])
    with storage.local_copy(found["checkpoint"]) as folder:
        network, _ = load_network(folder)
    assert os.path.isdir(folder) == storage.is_local(found["checkpoint"])  # a copy from S3 is removed after
    for name, tensor in network.state_dict().items():
        assert torch.equal(tensor, weights["run-a"][name])
    # What evaluation builds from it: the store's copy, named as the rows name it; the rows'
    # spelling of a version selects it too.
    config = Config(models=["unet"])
    for selector in ("run-a", "unet@run-a"):
        (spec,), unavailable = models_to_evaluate(config, TrainedModels(store=store, selectors={"unet": selector}))
        assert (spec.name, spec.checkpoint, spec.version, unavailable) == ("unet", found["checkpoint"], "unet@run-a", {})
    specs, _ = models_to_evaluate(config, TrainedModels(store=store, default_selector="all"))
    assert [s.version for s in specs] == ["unet@run-a", "unet@run-b", "unet@run-c"]


def test_an_unknown_version_lists_the_known_ones(store, tmp_path):
    with pytest.raises(CheckpointStoreError, match="no version of unet"):
        resolve_version(store, "unet", "latest")
    write_checkpoint(tmp_path / "ckpt", 0)
    record(store, tmp_path / "ckpt", "run-a", 0.5)
    with pytest.raises(CheckpointStoreError, match="no version 'run-z'.*versions: run-a"):
        resolve_version(store, "unet", "run-z")


def test_a_version_is_written_once(store, tmp_path):
    write_checkpoint(tmp_path / "first", 0)
    write_checkpoint(tmp_path / "second", 1)
    record(store, tmp_path / "first", "run-a", 0.5)
    with pytest.raises(CheckpointStoreError, match="already in"):
        record(store, tmp_path / "second", "run-a", 0.9)
    kept = resolve_version(store, "unet", "run-a")
    assert kept["metrics"]["best_val_iou"] == 0.5 and kept["checkpoint_source"] == str(tmp_path / "first")


def test_an_interrupted_copy_is_invisible_and_can_be_redone(tmp_path):
    store = str(tmp_path / "store")
    write_checkpoint(tmp_path / "ckpt", 0)
    record(store, tmp_path / "ckpt", "run-a", 0.5)
    (tmp_path / "store" / "unet" / "run-a" / "record.json").unlink()  # as if the copy stopped before it
    assert list_versions(store, "unet") == []
    assert record(store, tmp_path / "ckpt", "run-a", 0.5)["version"] == "run-a"


def test_write_new_refuses_an_existing_object(store):
    uri = storage.join(store, "lock.json")
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
    store = str(tmp_path / "store")
    write_checkpoint(tmp_path / "ckpt", 0)
    record(store, tmp_path / "ckpt", "run-a", 0.5)
    stored = json.loads((tmp_path / "store" / "unet" / "run-a" / "record.json").read_text())
    assert set(stored) == {"model", "train_fraction", "version", "run_id", "created_at", "config", "metrics", "dataset",
                           "checkpoint_source"}


def test_a_training_result_is_recorded_with_its_metrics_and_dataset(dataset_copy, tmp_path):
    store = str(tmp_path / "store")
    write_checkpoint(tmp_path / "best", 0)
    training = {  # segray.pipeline.train_models' result: one model trained, one failed
        "unet": {"model": "unet", "checkpoint": str(tmp_path / "best"), "best_epoch": 2, "best_val_iou": 0.61,
                 "history": [], "train_time_s": 12.5},
        "resnet34_unet": {"model": "resnet34_unet", "error": "RuntimeError: no weights"},
    }
    manifest = read_folder(str(dataset_copy))
    records = record_training(store, training, "train-1", {"lr": 1e-3}, manifest.description("synthetic:12"))
    assert [r["model"] for r in records] == ["unet"]
    found = resolve_version(store, "unet", "latest")
    assert found["version"] == found["run_id"] == "train-1"
    assert found["metrics"] == {"best_val_iou": 0.61, "best_epoch": 2, "train_time_s": 12.5}
    assert found["dataset"] == {"uri": "synthetic:12", "fingerprint": manifest_fingerprint(manifest.table),
                                "images": 12}
    assert list_versions(store, "resnet34_unet") == []


def test_selection_takes_a_checkpoint_folder_then_the_store_then_a_training_run(store, tmp_path):
    """One place turns the sources of trained models into specs and versions; a selector the
    user gave that matches nothing is an error, a model the store lacks is unavailable."""
    write_checkpoint(tmp_path / "stored", 0)
    record(store, tmp_path / "stored", "run-a", 0.5)
    folder = tmp_path / "folder"
    write_checkpoint(folder, 1)
    config = Config(models=["unet", "resnet34_unet"])

    specs, unavailable = models_to_evaluate(config, TrainedModels(checkpoints={"unet": str(folder)}, store=store))
    # A folder whose metadata names no training run is named by its weights.
    assert [s.checkpoint for s in specs] == [str(folder)] and specs[0].version.startswith("unet@sha256:")
    assert "no version of resnet34_unet" in unavailable["resnet34_unet"]

    training = {"unet": {"checkpoint": str(folder), "version": "unet@train-7"},
                "resnet34_unet": {"model": "resnet34_unet", "error": "RuntimeError: no weights"}}
    specs, unavailable = models_to_evaluate(config, TrainedModels(training=training))
    assert [s.version for s in specs] == ["unet@train-7"] and unavailable == {"resnet34_unet": "RuntimeError: no weights"}

    with pytest.raises(CheckpointStoreError, match="no version 'run-z'"):
        models_to_evaluate(config, TrainedModels(store=store, selectors={"unet": "run-z"}))
