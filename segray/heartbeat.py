"""Heartbeats: a live process says so every few seconds, so that one that died can be told
from one that is still working.

A run's driver writes `OUTPUT/RUN_ID/heartbeat.json` (host, pid, time) every
`RUN_HEARTBEAT_S` while the job runs; `--resume` refuses a run whose driver beat less than
`RUN_STALE_S` ago. It is a file of its own, with one writer, so that it never races the
job's own updates of run.json. A job that ends, however it ends short of being killed,
removes it (`stop_beating`): its run may be resumed at once.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from segray import storage

log = logging.getLogger(__name__)

HEARTBEAT_FILE = "heartbeat.json"
RUN_HEARTBEAT_S = 10.0  # how often a run's driver beats
RUN_STALE_S = 60.0  # a driver silent this long is taken for dead: its run may be resumed


@contextmanager
def periodically(beat: Callable[[], bool | None], every_s: float, name: str) -> Iterator[None]:
    """While in the block, `beat()` runs every `every_s` seconds in a daemon thread; a beat
    that returns False ends the beating. The thread has stopped when the block is left."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            if beat() is False:
                return

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def beat_now(run: str) -> None:
    """Write the run's heartbeat: this host and process, now."""
    beat = {"host": socket.gethostname(), "pid": os.getpid(), "at": datetime.now(UTC).isoformat()}
    storage.write_bytes(storage.join(run, HEARTBEAT_FILE), json.dumps(beat).encode())


@contextmanager
def driver_heartbeat(run: str, every_s: float = RUN_HEARTBEAT_S) -> Iterator[None]:
    """While in the block, the driver of the run at `run` beats (`beat_now`) every `every_s`.
    A beat that cannot be written is logged: the run goes on."""

    def beat() -> None:
        try:
            beat_now(run)
        except OSError as error:
            log.warning("cannot write the heartbeat of %s: %s", run, error)

    beat()
    try:
        with periodically(beat, every_s, "segray-run-heartbeat"):
            yield
    finally:
        stop_beating(run)


def stop_beating(run: str) -> None:
    """Remove the run's heartbeat: its driver no longer works on it. Logged if it cannot."""
    try:
        storage.delete_file(storage.join(run, HEARTBEAT_FILE))
    except OSError as error:
        log.warning("cannot remove the heartbeat of %s: %s", run, error)


def live_driver(run: str, stale_s: float = RUN_STALE_S) -> dict[str, Any] | None:
    """The run's last heartbeat, with its age in seconds (`age_s`), when it is younger than
    `stale_s`: its driver is still running. None when there is none or it is older."""
    try:
        beat = json.loads(storage.read_bytes(storage.join(run, HEARTBEAT_FILE)))
        age = (datetime.now(UTC) - datetime.fromisoformat(beat["at"])).total_seconds()
    except (OSError, ValueError, KeyError):
        return None
    return {**beat, "age_s": age} if age < stale_s else None
