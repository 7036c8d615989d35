import os

import numpy as np
import pytest

from segray.config import Config
from segray.data.manifest import build_manifest
from segray.models.base import ModelSpec
from segray.models.checkpoint import load_network
from segray.models.trained import TrainedSegmenter
from segray.train import train_model, training_datasets


@pytest.fixture(scope="module")
def small_sets(ray_session, synthetic_root):
    manifest = build_manifest(str(synthetic_root)).table
    return manifest, training_datasets(manifest, image_size=64)


def test_two_worker_gloo_ddp_saves_and_reloads_the_best_checkpoint(ray_session, synthetic_root, tmp_path):
    manifest = build_manifest(str(synthetic_root)).table
    datasets = training_datasets(manifest, image_size=64, num_workers=2)
    assert sorted(datasets) == ["train_0", "train_1", "val_0", "val_1"]
    config = Config(train={"image_size": 64, "batch_size": 8, "num_workers": 2, "cpus_per_worker": 1},
                    unet={"epochs": 2, "base_width": 4})
    result = train_model("unet", config, datasets, str(tmp_path / "train"))

    assert [row["epoch"] for row in result.history] == [1, 2]
    best = max(result.history, key=lambda row: row["val_iou"])
    assert result.best_epoch == best["epoch"] and result.best_val_iou == best["val_iou"]
    assert os.path.isfile(os.path.join(result.checkpoint, "model.safetensors"))

    network, meta = load_network(result.checkpoint)
    assert meta["epoch"] == result.best_epoch and meta["params"] == {"base_width": 4, "image_size": 64}
    segmenter = TrainedSegmenter(ModelSpec("unet", checkpoint=result.checkpoint))
    image = np.random.default_rng(0).integers(0, 256, (384, 512, 3), dtype=np.uint8)
    (prediction,) = segmenter.predict([image])
    assert prediction["unet"].mask.shape == (384, 512) and prediction["unet"].mask.dtype == bool


def val_iou(segmenter, manifest) -> float:
    from segray import storage
    from segray.data.decode import decode_image, decode_mask
    from segray.metrics import iou

    val = manifest[manifest["split"] == "val"]
    scores = []
    for row in val.itertuples():
        image = decode_image(storage.read_bytes(row.image_uri))
        (prediction,) = segmenter.predict([image])
        scores.append(iou(prediction["unet"].mask, decode_mask(storage.read_bytes(row.mask_uri))))
    return float(np.mean(scores))


@pytest.mark.slow
def test_training_clearly_beats_the_untrained_network(small_sets, tmp_path):
    manifest, datasets = small_sets
    config = Config(train={"image_size": 64, "batch_size": 4, "lr": 3e-3, "cpus_per_worker": 2},
                    unet={"epochs": 15, "base_width": 8})
    result = train_model("unet", config, datasets, str(tmp_path / "train"))

    untrained = val_iou(TrainedSegmenter(ModelSpec("unet", params=config.params("unet"))), manifest)
    trained = val_iou(TrainedSegmenter(ModelSpec("unet", checkpoint=result.checkpoint)), manifest)
    assert trained == pytest.approx(result.best_val_iou, abs=0.05)  # the pipeline scores what training saw
    assert trained > untrained + 0.15, (untrained, trained, result.history)


def test_shards_are_a_seeded_partition_of_each_split(ray_session, synthetic_root):
    """Every labelled image lands in exactly one shard of its split; the same seed cuts the
    same shards in the same order, another seed other ones; the shards must match the workers."""
    manifest = build_manifest(str(synthetic_root)).table

    def shard_images(seed: int) -> dict[str, list]:
        sets = training_datasets(manifest, image_size=16, num_workers=2, seed=seed)
        return {name: [row["image"].tobytes() for row in ds.iter_rows()] for name, ds in sets.items()}

    first, again, other = shard_images(3), shard_images(3), shard_images(4)
    assert first == again and first != other
    for split in ("train", "val"):
        sizes = [len(first[f"{split}_{rank}"]) for rank in (0, 1)]
        assert sum(sizes) == (manifest["split"] == split).sum() and abs(sizes[0] - sizes[1]) <= 1
    with pytest.raises(ValueError, match="2 training shards for 1 workers"):
        train_model("unet", Config(), training_datasets(manifest, 16, num_workers=2), "x")


def test_load_resized_decodes_pairs_as_evaluation_does(tmp_path, caplog):
    """Training reads a pair by the same rule (`decode_pair`): the orientation its mask
    agrees with, and the named person values."""
    import io
    import logging

    import cv2
    from PIL import Image

    from segray.train import load_resized

    stored = np.zeros((40, 40 + 24, 3), np.uint8)
    stored[:, :32] = 255  # the left part is white as stored; after an EXIF turn, the top
    exif = Image.Exif()
    exif[0x0112] = 6  # turned 90 degrees clockwise when shown
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, "JPEG", exif=exif, quality=95)
    (tmp_path / "turned.jpg").write_bytes(buffer.getvalue())
    shown_mask = np.zeros((64, 40), np.uint8)  # drawn on the image as viewers show it
    shown_mask[:32] = 5
    shown_mask[32:40] = 2
    cv2.imwrite(str(tmp_path / "turned.png"), shown_mask)
    batch = {"image_uri": np.array([str(tmp_path / "turned.jpg")]), "mask_uri": np.array([str(tmp_path / "turned.png")])}

    loaded = load_resized(batch, size=16, mask_person_values=[5])
    assert loaded["image"].shape == (1, 16, 16, 3)
    np.testing.assert_array_equal(loaded["mask"][0], (np.arange(16) < 8)[:, None].repeat(16, 1))  # the top half
    assert loaded["image"][0, :6].min() > 200 and loaded["image"][0, 10:].max() < 50  # the image turned with it
    with caplog.at_level(logging.WARNING, logger="segray.train"):
        assert not load_resized(batch, size=16)["mask"].any()  # {0, 2, 5}: no person by the default rules
    assert f"training uses {tmp_path / 'turned.jpg'} with mask {tmp_path / 'turned.png'}: label map" in caplog.text


def test_training_leaves_out_a_pair_over_the_pixel_budget_and_names_it(tmp_path, caplog):
    import logging

    import cv2

    from segray.train import load_resized
    from tests.conftest import png_bomb

    (tmp_path / "bomb.png").write_bytes(png_bomb())
    cv2.imwrite(str(tmp_path / "ok.png"), np.full((30, 40, 3), 90, np.uint8))
    cv2.imwrite(str(tmp_path / "mask.png"), np.zeros((30, 40), np.uint8))
    batch = {"image_uri": np.array([str(tmp_path / "bomb.png"), str(tmp_path / "ok.png")]),
             "mask_uri": np.array([str(tmp_path / "mask.png")] * 2)}
    with caplog.at_level(logging.WARNING, logger="segray.train"):
        loaded = load_resized(batch, size=16)
    assert len(loaded["image"]) == 1
    assert f"training skips {tmp_path / 'bomb.png'}: image is 32768x32767" in caplog.text
