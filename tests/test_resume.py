"""Interrupted runs: Ctrl-C and SIGTERM stop a job within 30 s, run.json says where, and
`--resume` finishes the run, reusing what the first attempt did.

The jobs run as their own processes (signals go to them, not to pytest) and join the
session's Ray; each signal is sent on a real sign of progress: a checkpoint folder, a
Parquet file.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from segray.errors import RunExists
from segray.results.read import read_rows
from segray.results.resume import done_images
from segray.run import mark_interrupted, open_run, update_record
from segray.settings import load
from segray.trainings import Trainings
from tests.conftest import JOBS, job, needs_root, untrained_unet
from tests.test_faults import assert_one_row_per_pair, wait_for

STOP_S = 30  # the most a job may take from the signal to its exit


def start(script: str, argv: list[str], ray_session, log: Path) -> subprocess.Popen:
    """The job as its own process on the session's Ray, its output going to `log`."""
    address = ray_session.get_runtime_context().gcs_address
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, str(JOBS / script), *argv, "--ray-address", address],
                                stdout=out, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen, signum: int, log: Path) -> tuple[float, str]:
    """Send `signum`; the seconds until the process exited, and its output."""
    sent = time.monotonic()
    process.send_signal(signum)
    try:
        process.wait(timeout=STOP_S + 30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return time.monotonic() - sent, log.read_text()


@pytest.mark.slow
def test_ctrl_c_mid_training_stops_the_run_and_resume_finishes_it(ray_session, synthetic_root, tmp_path, capsys):
    argv = ["--preset", "demo", "--dataset", str(synthetic_root), "--models", "unet", "--image-size", "64",
            "--unet-epochs", "12", "--output", str(tmp_path), "--run-id", "r"]  # epochs of about a second
    run = tmp_path / "r"
    log = tmp_path / "benchmark.log"
    driver = start("benchmark.py", argv, ray_session, log)
    # Ray Train writes this once its controller has registered a checkpoint: a resumed run starts from it.
    snapshot = run / "train" / "unet" / "checkpoint_manager_snapshot.json"
    wait_for("a registered checkpoint", lambda: driver.poll() is not None or snapshot.exists())
    assert driver.poll() is None, log.read_text()[-3000:]
    took, output = stop(driver, signal.SIGINT, log)

    assert driver.returncode == 130, output[-3000:]
    assert took < STOP_S
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "interrupted" and record["interrupted_by"] == "SIGINT"
    assert record["stage"] == "train+evaluate"
    assert "rerun with --resume" in output
    assert not (run / "summary.json").exists()

    # Without --resume the run is refused; with other settings, the difference is named.
    assert job("benchmark")(argv) == 2
    assert "--resume" in capsys.readouterr().err
    assert job("benchmark")([*argv[:-4], "--output", str(tmp_path), "--run-id", "r", "--unet-epochs", "13",
                             "--resume"]) == 2
    assert "unet.epochs: 12 -> 13" in capsys.readouterr().err

    assert job("benchmark")([*argv, "--resume"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["resumed"]["attempts"] == 2 and summary["resumed"]["trainings_reused"] == []
    training = summary["training"]["unet"]
    assert training["resumed_from"] and training["resumed_from"][0] >= 1  # from a checkpoint, not from scratch
    assert [entry["epoch"] for entry in training["history"]] == list(range(1, 13))
    assert_one_row_per_pair(read_rows(str(run / "predictions")), images=48, variants=1)
    assert json.loads((run / "run.json").read_text())["attempts"] == 2

    assert job("benchmark")([*argv, "--resume"]) == 2  # finished: nothing to resume
    assert "nothing to resume" in capsys.readouterr().err


@pytest.mark.slow
def test_sigterm_mid_evaluation_then_resume_evaluates_only_the_missing_pairs(ray_session, synthetic_root, tmp_path):
    checkpoint = untrained_unet(tmp_path / "unet", base_width=32, image_size=256)  # slow enough to be caught
    argv = ["--preset", "demo", "--dataset", str(synthetic_root), "--models", "unet", "--checkpoint",
            f"unet={checkpoint}", "--eval-batch-size", "unet=1", "--rows-per-file", "1",
            "--output", str(tmp_path / "runs"), "--run-id", "e"]
    predictions = tmp_path / "runs" / "e" / "predictions"
    log = tmp_path / "evaluate.log"
    driver = start("evaluate.py", argv, ray_session, log)
    wait_for("a Parquet file", lambda: driver.poll() is not None or list(predictions.glob("*.parquet")))
    assert driver.poll() is None, log.read_text()[-3000:]
    took, output = stop(driver, signal.SIGTERM, log)

    assert driver.returncode == 143, output[-3000:]
    assert took < STOP_S
    record = json.loads((tmp_path / "runs" / "e" / "run.json").read_text())
    assert record["status"] == "interrupted" and record["stage"] == "evaluate"
    before = len(read_rows(str(predictions)))
    assert 0 < before < 48

    assert job("evaluate")([*argv, "--resume"]) == 0
    summary = json.loads((tmp_path / "runs" / "e" / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["resumed"]["rows_reused"] == before
    assert summary["resumed"]["rows_computed"] == 48 - before
    assert_one_row_per_pair(read_rows(str(predictions)), images=48, variants=1)


def rows(image_ids: list[str], models: list[str], version: str) -> pa.Table:
    pairs = [(i, m) for i in image_ids for m in models]
    return pa.table({"image_id": [i for i, _ in pairs], "model": [m for _, m in pairs],
                     "model_version": [version] * len(pairs)})


def test_an_unreadable_file_and_a_pair_missing_variants_are_dropped_before_counting(tmp_path):
    variants = ["langsam/a", "langsam/b"]
    pq.write_table(rows(["1.png", "2.png"], variants, "v"), tmp_path / "whole.parquet")
    # 3.png has only one of its two variants in this file (the other file was never written).
    pq.write_table(pa.concat_tables([rows(["4.png"], variants, "v"), rows(["3.png"], variants[:1], "v")]),
                   tmp_path / "cut.parquet")
    (tmp_path / "short.parquet").write_bytes((tmp_path / "whole.parquet").read_bytes()[:40])

    done = done_images(str(tmp_path), {"v": variants, "other": ["unet"]})

    assert done == {"v": {"1.png", "2.png", "4.png"}, "other": set()}
    assert not (tmp_path / "short.parquet").exists()
    kept = pq.read_table(tmp_path / "cut.parquet").to_pylist()
    assert [(r["image_id"], r["model"]) for r in kept] == [("4.png", "langsam/a"), ("4.png", "langsam/b")]


@pytest.mark.parametrize("flags, message", [
    (["--resume", "--overwrite", "--run-id", "x"], "exclude each other"),
    (["--resume"], "resume needs the run_id"),
])
def test_resume_flags_that_cannot_work_are_refused(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        job("benchmark")(["--preset", "demo", *flags])
    assert exit_.value.code == 2  # a usage error, as argparse's own
    assert message in capsys.readouterr().err


def test_a_resume_refused_for_a_changed_dataset_leaves_the_run_as_it_was(ray_session, dataset_copy, tmp_path):
    argv = ["--preset", "demo", "--dataset", str(dataset_copy), "--output", str(tmp_path), "--run-id", "r"]
    open_run(load("benchmark", argv))
    run = tmp_path / "r"
    update_record(str(run), status="interrupted", stage="evaluate")
    before = json.loads((run / "run.json").read_text())
    (dataset_copy / "images" / sorted(os.listdir(dataset_copy / "images"))[0]).unlink()

    with pytest.raises(RunExists, match=f"fingerprint {before['dataset_fingerprint']} -> "):
        open_run(load("benchmark", [*argv, "--resume"]))
    assert json.loads((run / "run.json").read_text()) == before  # not "running", no attempt counted


def rows_in(path: Path) -> int | None:
    """The rows of a Parquet file; None for a file cut short (no footer)."""
    try:
        return pq.read_metadata(path).num_rows
    except pa.ArrowInvalid:
        return None


@pytest.fixture
def small_disk(tmp_path):
    """A 32 KiB file system (a tmpfs this test mounts: 8 pages), grown by `grow` to free space."""
    disk = tmp_path / "small-disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "segray-small-disk", str(disk)], check=True)

    def grow() -> None:
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)

    yield disk, grow
    subprocess.run(["umount", "--lazy", str(disk)], check=True)


@pytest.mark.slow
@needs_root
def test_a_full_disk_fails_the_run_naming_the_path_and_resume_finishes_it(ray_session, synthetic_root, tmp_path,
                                                                           small_disk, capsys):
    disk, grow = small_disk
    checkpoint = untrained_unet(tmp_path / "unet", base_width=8, image_size=64)
    argv = ["--preset", "demo", "--dataset", str(synthetic_root), "--models", "unet", "--checkpoint",
            f"unet={checkpoint}", "--eval-batch-size", "unet=1", "--rows-per-file", "1", "--output", str(disk),
            "--run-id", "d"]  # rows of about 12 KB per file: the second file does not fit
    run = disk / "d"

    assert job("evaluate")(argv) == 2  # as for any output that stops taking writes
    error = capsys.readouterr().err
    assert f"{run / 'predictions'}: cannot write the rows there" in error
    assert "No space left on device" in error
    assert not (run / "summary.json").exists()
    assert json.loads((run / "run.json").read_text())["stage"] == "evaluate"  # whole: writes are all or nothing
    counts = [rows_in(path) for path in sorted((run / "predictions").glob("*.parquet"))]
    assert None in counts  # the file being written when the disk filled was cut short
    before = sum(count for count in counts if count is not None)
    assert before < 48

    grow()
    assert job("evaluate")([*argv, "--resume"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["resumed"]["rows_reused"] == before
    assert_one_row_per_pair(read_rows(str(run / "predictions")), images=48, variants=1)


def test_an_interrupt_before_the_run_has_a_folder_says_so(tmp_path, capsys):
    config = load("benchmark", ["--preset", "demo", "--output", str(tmp_path), "--run-id", "not-yet"])
    mark_interrupted(config, signal.SIGINT)
    error = capsys.readouterr().err
    assert "interrupted by SIGINT; no run.json to mark" in error and "is kept" not in error
    assert not (tmp_path / "not-yet").exists()


def test_an_interrupt_after_the_summary_leaves_the_finished_run_as_it_is(tmp_path, capsys):
    config = load("benchmark", ["--preset", "demo", "--output", str(tmp_path), "--run-id", "done"])
    run = tmp_path / "done"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"status": "complete", "stage": "report"}))
    (run / "summary.json").write_text("{}")
    mark_interrupted(config, signal.SIGTERM)
    error = capsys.readouterr().err
    assert f"after {run} finished" in error and f"python jobs/report.py {run}" in error and "--resume" not in error
    assert json.loads((run / "run.json").read_text())["status"] == "complete"


@pytest.mark.parametrize("record", ['{"status": "runn', json.dumps({"status": "complete", "settings": {}})])
def test_a_run_json_cut_short_or_finished_is_refused_for_resume_with_the_reason(dataset_copy, tmp_path, record):
    run = tmp_path / "r"
    run.mkdir()
    (run / "run.json").write_text(record)
    config = load("benchmark", ["--preset", "demo", "--dataset", str(dataset_copy), "--output", str(tmp_path),
                                "--run-id", "r", "--resume"])
    reason = "no readable run.json" if record.startswith('{"status": "runn') else "finished: nothing to resume"
    with pytest.raises(RunExists, match=reason):
        open_run(config)
    assert (run / "run.json").read_text() == record  # left as it was


def test_trainings_ending_together_each_land_in_training_json(tmp_path):
    trainings = Trainings(load("benchmark", ["--preset", "demo"]), None, str(tmp_path), [])
    outcomes = {f"model{i}": {"model": f"model{i}", "error": "x" * 2000} for i in range(64)}

    def record(names: list[str]) -> None:
        for name in names:
            trainings._record(name, outcomes[name])

    threads = [threading.Thread(target=record, args=([n for n in outcomes if int(n[5:]) % 4 == k],)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert json.loads((tmp_path / "training.json").read_text()) == outcomes
