"""--seed makes a run repeat: two CPU runs of the same command and seed train the same
history and weights, bit for bit, and write the same rows; another seed trains another
history (tests/test_train.py checks the seeded shards)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from tests.conftest import job

# Everything in a row but what names the run or times it.
RUN_COLUMNS = ["run_id", "model_version", "latency_ms"]


def train_and_evaluate(dataset, out, run_id: str, seed: int) -> tuple[list[dict], bytes, object]:
    common = ["--preset", "demo", "--dataset", str(dataset), "--output", str(out), "--models", "unet",
              "--image-size", "32", "--unet-base-width", "4", "--seed", str(seed)]
    assert job("train")([*common, "--run-id", run_id, "--unet-epochs", "2"]) == 0
    assert json.loads((out / run_id / "run.json").read_text())["status"] == "complete"  # nothing to resume
    training = json.loads((out / run_id / "training.json").read_text())["unet"]
    assert job("evaluate")([*common, "--run-id", f"{run_id}-eval", "--checkpoints-from", str(out / run_id)]) == 0
    rows = pq.read_table(out / f"{run_id}-eval" / "predictions").drop(RUN_COLUMNS).to_pandas()
    history = [{k: v for k, v in epoch.items() if k != "epoch_time_s"} for epoch in training["history"]]
    weights = (Path(training["checkpoint"]) / "model.safetensors").read_bytes()
    return history, weights, rows.sort_values(["image_id", "model"], ignore_index=True)


def test_the_same_seed_repeats_a_run_and_another_seed_does_not(ray_session, synthetic_root, tmp_path):
    history, weights, rows = train_and_evaluate(synthetic_root, tmp_path, "a", seed=5)
    again = train_and_evaluate(synthetic_root, tmp_path, "b", seed=5)
    assert again[0] == history and again[1] == weights
    assert again[2].equals(rows) and len(rows) == 48
    other, other_weights, _ = train_and_evaluate(synthetic_root, tmp_path, "c", seed=6)
    assert other != history and other_weights != weights
