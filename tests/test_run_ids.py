"""A run id names one folder under the output and is claimed once: it cannot reach outside
the output folder, two jobs given one id do not share it, default ids differ, and a run
whose driver still beats is not resumed by another job."""

from __future__ import annotations

import functools
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from segray import storage
from segray.errors import RunExists
from segray.heartbeat import HEARTBEAT_FILE, RUN_STALE_S, beat_now, driver_heartbeat
from segray.run import RUN_FILE, new_run_id, prepare_run_dir
from tests.conftest import job
from tests.test_faults import wait_for

SETTINGS = {"seed": 0}


@pytest.fixture(params=["local", "s3"])
def output(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "runs")
    import boto3

    bucket = f"runs-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=request.getfixturevalue("s3_endpoint")).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/runs"


@pytest.mark.parametrize("run_id", [".", "..", "../elsewhere", "nightly/2026-05-01", "/tmp/x", "a b", ""])
def test_a_run_id_that_is_not_one_folder_name_exits_2_before_anything_is_touched(run_id, tmp_path, capsys):
    keep = tmp_path / "runs" / "keep"
    keep.mkdir(parents=True)
    with pytest.raises(SystemExit) as exit_:
        job("benchmark")(["--preset", "demo", "--output", str(tmp_path / "runs"), "--run-id", run_id, "--overwrite"])
    assert exit_.value.code == 2
    assert "output.run_id" in capsys.readouterr().err
    assert keep.is_dir()


def test_of_jobs_claiming_one_run_id_at_once_exactly_one_gets_it(tmp_path):
    for round_ in range(20):
        uri = str(tmp_path / f"run{round_}")
        start = threading.Barrier(6)
        with ThreadPoolExecutor(6) as pool:
            outcomes = list(pool.map(functools.partial(claim, uri, start), range(6)))
        assert outcomes.count("claimed") == 1, outcomes
        assert all(outcome == "claimed" or "claimed by another job" in outcome or "already exists" in outcome
                   for outcome in outcomes)


def claim(uri: str, start: threading.Barrier, _: int) -> str:
    start.wait()
    try:
        prepare_run_dir(uri, overwrite=False, config=SETTINGS)
        return "claimed"
    except RunExists as error:
        return str(error)


def test_a_claimed_run_id_is_refused_to_the_second_job(output):
    """The claim is an exclusive create of run.json: a conditional PUT on S3."""
    uri = storage.join(output, "r")
    prepare_run_dir(uri, overwrite=False, config=SETTINGS)
    with pytest.raises(RunExists, match="already exists"):
        prepare_run_dir(uri, overwrite=False, config=SETTINGS)
    with pytest.raises(FileExistsError):
        storage.write_new(storage.join(uri, RUN_FILE), b"{}")


def test_default_run_ids_made_in_one_second_differ():
    ids = [new_run_id() for _ in range(200)]
    assert len(set(ids)) == len(ids)
    assert len({run_id[:15] for run_id in ids}) <= 2  # the same second, or the next


def test_a_run_whose_driver_beats_is_not_resumed_and_one_silent_long_enough_is(output):
    uri = storage.join(output, "r")
    prepare_run_dir(uri, overwrite=False, config=SETTINGS)
    beat_now(uri)
    with pytest.raises(RunExists, match=r"is still running: its driver on .* \(pid \d+\) beat \d+ s ago"):
        prepare_run_dir(uri, overwrite=False, resume=True, config=SETTINGS)
    assert json.loads(storage.read_bytes(storage.join(uri, RUN_FILE)))["attempts"] == 1  # left as it was

    beat = json.loads(storage.read_bytes(storage.join(uri, HEARTBEAT_FILE)))
    silent = datetime.now(UTC) - timedelta(seconds=RUN_STALE_S + 1)
    storage.write_bytes(storage.join(uri, HEARTBEAT_FILE), json.dumps({**beat, "at": silent.isoformat()}).encode())
    prepare_run_dir(uri, overwrite=False, resume=True, config=SETTINGS)  # a driver that died: resumed
    assert json.loads(storage.read_bytes(storage.join(uri, RUN_FILE)))["attempts"] == 2


def test_an_interrupted_run_is_resumed_at_once_whatever_its_heartbeat(tmp_path):
    uri = str(tmp_path / "r")
    prepare_run_dir(uri, overwrite=False, config=SETTINGS)
    beat_now(uri)
    record = json.loads((tmp_path / "r" / RUN_FILE).read_text())
    (tmp_path / "r" / RUN_FILE).write_text(json.dumps({**record, "status": "interrupted"}))
    prepare_run_dir(uri, overwrite=False, resume=True, config=SETTINGS)


def test_the_driver_beats_while_the_job_runs_and_a_job_that_failed_can_be_resumed_at_once(tmp_path):
    """A job that ends, even by an error (a full disk leaves run.json saying `running`),
    takes its heartbeat with it."""
    uri = str(tmp_path / "r")
    prepare_run_dir(uri, overwrite=False, config=SETTINGS)
    beat = tmp_path / "r" / HEARTBEAT_FILE
    with pytest.raises(OSError), driver_heartbeat(uri, every_s=0.05):
        first = json.loads(beat.read_text())["at"]
        wait_for("a second beat", lambda: json.loads(beat.read_text())["at"] != first)
        raise OSError("No space left on device")
    assert not beat.exists()
    prepare_run_dir(uri, overwrite=False, resume=True, config=SETTINGS)
