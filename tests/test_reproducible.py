"""--seed makes a run repeat: two CPU runs of the same command and seed train the same
history and weights, bit for bit, and write the same rows; another seed trains another
history (tests/test_train.py checks the seeded shards)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import job

pytestmark = pytest.mark.slow  # every test here runs a job or a server

# Everything in a row but what names the run or times it.
RUN_COLUMNS = ["run_id", "model_version", "latency_ms"]


def options(dataset, out, seed: int) -> list[str]:
    return ["--preset", "demo", "--dataset", str(dataset), "--output", str(out), "--models", "unet", "--seed", str(seed)]


TRAINING = ["--image-size", "32", "--unet-base-width", "4", "--unet-epochs", "2"]  # evaluation reads them from the checkpoint


def train(dataset, out, run_id: str, seed: int) -> tuple[list[dict], bytes]:
    """jobs/train.py: the history (its times aside) and the best weights."""
    assert job("train")([*options(dataset, out, seed), "--run-id", run_id, *TRAINING]) == 0
    assert json.loads((out / run_id / "run.json").read_text())["status"] == "complete"  # nothing to resume
    training = json.loads((out / run_id / "training.json").read_text())["unet"]
    history = [{k: v for k, v in epoch.items() if k != "epoch_time_s"} for epoch in training["history"]]
    return history, (Path(training["checkpoint"]) / "model.safetensors").read_bytes()


def evaluate(dataset, out, run_id: str, seed: int):
    """jobs/evaluate.py of a training run: its rows, less what names the run or times it."""
    assert job("evaluate")([*options(dataset, out, seed), "--run-id", f"{run_id}-eval",
                            "--checkpoints-from", str(out / run_id)]) == 0
    rows = pq.read_table(out / f"{run_id}-eval" / "predictions").drop(RUN_COLUMNS).to_pandas()
    return rows.sort_values(["image_id", "model"], ignore_index=True)


def test_the_same_seed_repeats_a_run_and_another_seed_does_not(ray_session, synthetic_root, tmp_path):
    history, weights = train(synthetic_root, tmp_path, "a", seed=5)
    assert train(synthetic_root, tmp_path, "b", seed=5) == (history, weights)
    rows = evaluate(synthetic_root, tmp_path, "a", seed=5)
    assert evaluate(synthetic_root, tmp_path, "b", seed=5).equals(rows) and len(rows) == 48
    other, other_weights = train(synthetic_root, tmp_path, "c", seed=6)
    assert other != history and other_weights != weights
