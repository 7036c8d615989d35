"""The data/tuning sweep (#17): trainings on nested subsets of the train split beside a
LangSAM prompt x threshold sweep, and the report section that answers the seeds' question."""

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from segray.models.checkpoint import read_meta
from segray.train import passes_per_epoch, training_rows
from tests.conftest import job
from tests.test_jobs import langsam_options


def manifest_of(n: int) -> pd.DataFrame:
    """A manifest of n pairs (no files: `training_rows` only orders and cuts rows)."""
    ids = [f"img{i:03d}" for i in range(n)]
    return pd.DataFrame({"image_id": ids, "image_uri": [f"/d/images/{i}.png" for i in ids],
                         "mask_uri": [f"/d/masks/{i}.png" for i in ids],
                         "split": ["val" if i % 5 == 0 else "train" for i in range(n)]})


def test_training_subsets_are_nested_and_the_same_on_every_rerun():
    manifest = manifest_of(100)
    fractions = [0.05, 0.1, 0.25, 0.5, 1.0]
    subsets = [list(training_rows(manifest, seed=3, fraction=f)["train"]["image_id"]) for f in fractions]
    assert [len(s) for s in subsets] == [4, 8, 20, 40, 80]
    for smaller, larger in zip(subsets, subsets[1:]):
        assert larger[:len(smaller)] == smaller  # nested: each subset is a prefix of the larger
    assert subsets == [list(training_rows(manifest, seed=3, fraction=f)["train"]["image_id"]) for f in fractions]
    assert list(training_rows(manifest, seed=4, fraction=0.25)["train"]["image_id"]) != subsets[2]
    # Every fraction validates on the same images; fraction 1 is the plain training's split.
    vals = {tuple(training_rows(manifest, seed=3, fraction=f)["val"]["image_id"]) for f in [*fractions, None]}
    assert len(vals) == 1 and len(next(iter(vals))) == 20
    assert list(training_rows(manifest, seed=3)["train"]["image_id"]) == subsets[-1]
    assert len(training_rows(manifest, seed=3, fraction=0.001)["train"]) == 1  # never empty


def test_a_subset_trains_as_many_steps_as_the_whole_split():
    assert [passes_per_epoch(f) for f in (None, 1.0, 0.5, 0.25, 0.3, 0.05)] == [1, 1, 2, 4, 3, 20]


@pytest.fixture(scope="module")
def sweep_run(ray_session, tiny_weights, tmp_path_factory):
    """A tiny sweep: unet on 3 nested fractions beside a 2-prompt x 2-threshold LangSAM sweep,
    its trainings recorded in a checkpoint store."""
    out = tmp_path_factory.mktemp("sweep")
    argv = ["--preset", "demo", "--dataset", "synthetic:20", "--cache-dir", str(out / "cache"),
            "--output", str(out), "--run-id", "sweep", "--image-size", "32", "--models", "unet,langsam",
            "--unet-epochs", "1", "--train-fractions", "0.25,0.5,1", *langsam_options(tiny_weights),
            "--langsam-prompts", "human.", "--langsam-box-thresholds", "0.5",
            "--checkpoint-store", str(out / "store")]
    return job("benchmark")(argv), out


def test_each_fraction_is_its_own_model_in_the_rows_the_training_and_the_store(sweep_run, tmp_path):
    status, out = sweep_run
    assert status == 0
    summary = json.loads((out / "sweep" / "summary.json").read_text())
    assert summary["status"] == "complete"
    names = {"unet": (16, 1), "unet[frac=0.5]": (8, 2), "unet[frac=0.25]": (4, 4)}  # 16 train images of 20
    training = json.loads((out / "sweep" / "training.json").read_text())
    assert set(training) == set(names)
    for name, (images, passes) in names.items():
        assert (training[name]["train_images"], training[name]["passes_per_epoch"]) == (images, passes)
        assert training[name]["version"] == f"{name}@sweep"
        assert summary["models"][name]["model_version"] == f"{name}@sweep"
        assert (out / "store" / name / "sweep" / "record.json").exists()
    assert read_meta(training["unet[frac=0.25]"]["checkpoint"])["train_fraction"] == 0.25
    rows = pq.read_table(out / "sweep" / "predictions").to_pandas()
    assert rows.groupby("model")["image_id"].nunique().eq(20).all()

    # The store's subset version evaluates again under its own name, with the same rows.
    again = tmp_path / "again"
    assert job("evaluate")(["--dataset", "synthetic:20", "--cache-dir", str(out / "cache"), "--output", str(again),
                            "--run-id", "frac", "--models", "unet[frac=0.25]",
                            "--checkpoint-store", str(out / "store")]) == 0
    evaluated = pq.read_table(again / "frac" / "predictions").to_pandas()
    assert set(evaluated["model"]) == {"unet[frac=0.25]"}
    assert set(evaluated["model_version"]) == {"unet[frac=0.25]@sweep"}
    mine = rows[rows["model"] == "unet[frac=0.25]"].set_index("image_id")["iou"].sort_index()
    assert evaluated.set_index("image_id")["iou"].sort_index().to_numpy() == pytest.approx(mine.to_numpy())
