"""A run's own timeline: what each stage did, where and when, gathered while it runs.

Every stage reports each batch it handled to one named actor per run (`Timeline`):
decode and score tasks, each model's pool, the Parquet write, each training and its
epochs. The actor keeps per stage the rows in and out, the first start, the last end,
the busy seconds (the sum over batches) and the nodes it ran on, so a finished run can
say from its own `summary.json` that each image was decoded once, or that LangSAM's
pool ran while the UNets trained. The driver polls it to print the console's progress.

Reports are fire-and-forget calls, one per batch: a few thousand for a million images.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

TIMELINE_PREFIX = "segray-timeline-"
NAMESPACE = "segray"


class Timeline:
    """The actor (created by `start_timeline`): stages report, the driver reads."""

    def __init__(self):
        self.stages: dict[str, dict[str, Any]] = {}
        self.epochs: list[dict[str, Any]] = []

    def record(self, stage: str, node: str, rows_in: int, rows_out: int, start: float, end: float) -> None:
        entry = self.stages.setdefault(stage, {"rows_in": 0, "rows_out": 0, "batches": 0, "start": start, "end": end,
                                               "busy_s": 0.0, "nodes": []})
        entry["rows_in"] += rows_in
        entry["rows_out"] += rows_out
        entry["batches"] += 1
        entry["start"], entry["end"] = min(entry["start"], start), max(entry["end"], end)
        entry["busy_s"] += end - start
        if node not in entry["nodes"]:
            entry["nodes"].append(node)

    def epoch(self, model: str, metrics: dict[str, Any]) -> None:
        self.epochs.append({"model": model, **metrics})

    def snapshot(self, epochs_from: int = 0) -> dict[str, Any]:
        """Every stage so far, and the epochs reported since `epochs_from`."""
        return {"stages": self.stages, "epochs": self.epochs[epochs_from:], "now": time.time()}


def start_timeline(run_id: str):
    """The run's timeline actor (a second call gets the same one). Like every actor it
    lives while a handle to it does: the driver keeps one for the whole run, then calls
    `stop_timeline`. It lives on the driver's node (`on_driver_node`)."""
    import ray

    return ray.remote(num_cpus=0)(Timeline).options(name=TIMELINE_PREFIX + run_id, namespace=NAMESPACE,
                                                   get_if_exists=True, scheduling_strategy=on_driver_node()).remote()


def on_driver_node():
    """The scheduling strategy of the run's own actors (its timeline, its model gate): on
    the driver's node, which lives as long as the run. On any other node, losing that node
    mid-run would take the actor, and with it the run."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


def stop_timeline(timeline) -> None:
    import ray

    ray.kill(timeline)


def timeline_of(run_id: str):
    """The handle of a running run's timeline, from any process of the cluster; None when
    the run has none (a stage run on its own, e.g. in a benchmark script)."""
    import ray

    try:
        return ray.get_actor(TIMELINE_PREFIX + run_id, namespace=NAMESPACE)
    except ValueError:
        return None


def node_id() -> str:
    """This process's Ray node, as the timeline names it."""
    import ray

    return ray.get_runtime_context().get_node_id()


def timed(stage: str, timeline, fn: Callable[[Any], Any], batch: Any, rows_in: int,
          rows_out: Callable[[Any], int]) -> Any:
    """`fn(batch)`, reported to `timeline` (when there is one) as one batch of `stage`."""
    start = time.time()
    out = fn(batch)
    if timeline is not None:
        timeline.record.remote(stage, node_id(), rows_in, rows_out(out), start, time.time())
    return out


def summarize(snapshot: dict[str, Any], origin: float) -> dict[str, Any]:
    """The timeline as `summary.json` records it: times in seconds from `origin` (the
    run's start, wall clock), busy time rounded, nodes listed."""
    stages = {}
    for name, entry in sorted(snapshot["stages"].items(), key=lambda item: item[1]["start"]):
        stages[name] = {**entry, "start": round(entry["start"] - origin, 2), "end": round(entry["end"] - origin, 2),
                        "busy_s": round(entry["busy_s"], 2)}
    return {"stages": stages}


class Progress:
    """The console's view of a run, printed from the driver while it runs: one line per
    training epoch per model, and every `every_s` seconds while evaluation moves, one line
    of images decoded and images/s per model. Used as a context manager around the work;
    on exit, one line per stage."""

    def __init__(self, timeline, images: int, models: list[str], epochs: Callable[[str], int] | None = None,
                 every_s: float = 10.0):
        import threading

        self.timeline, self.images, self.models, self.epochs, self.every_s = timeline, images, models, epochs, every_s
        self.started = time.time()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="segray-progress", daemon=True)
        self.epochs_seen, self.last_line = 0, ""

    def __enter__(self) -> Progress:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self._show(self._snapshot(), final=True)

    def _snapshot(self) -> dict[str, Any]:
        import ray

        return ray.get(self.timeline.snapshot.remote(self.epochs_seen))

    def _watch(self) -> None:
        while not self.stop.wait(self.every_s):
            try:
                self._show(self._snapshot())
            except Exception:  # the console must never take the run down
                return

    def _show(self, snapshot: dict[str, Any], final: bool = False) -> None:
        for epoch in snapshot["epochs"]:
            self.epochs_seen += 1
            total = self.epochs(epoch["model"]) if self.epochs else "?"
            print(f"{epoch['model']} epoch {epoch['epoch']}/{total}: train loss {epoch['train_loss']:.4f}, "
                  f"val IoU {epoch['val_iou']:.4f}, {epoch['epoch_time_s']:.1f} s", flush=True)
        stages = snapshot["stages"]
        if final:
            for line in stage_lines(summarize(snapshot, self.started)):
                print(line, flush=True)
            return
        if "decode" not in stages:
            return
        line = f"evaluate: {stages['decode']['rows_in']}/{self.images} images decoded"
        others = [name[6:] for name in stages if name.startswith("model:") and name[6:] not in self.models]
        for model in [*self.models, *others]:
            entry = stages.get("model:" + model)
            if entry is None:
                line += f"; {model} not started"
            else:
                rate = entry["rows_in"] / entry["busy_s"] if entry["busy_s"] else 0.0
                line += f"; {model} {entry['rows_in']} ({rate:.1f} img/s)"
        if line != self.last_line:
            print(line, flush=True)
            self.last_line = line


def stage_lines(timeline: dict[str, Any]) -> list[str]:
    """One line per stage of a summarized timeline: rows, when, busy time and rate, nodes."""
    lines = []
    for name, entry in timeline["stages"].items():
        rate = f", {entry['rows_in'] / entry['busy_s']:.1f} rows/s busy" if entry["busy_s"] and entry["rows_in"] else ""
        nodes = len(entry["nodes"])
        lines.append(f"{name}: {entry['rows_in']} in, {entry['rows_out']} out, {entry['start']:.0f}-{entry['end']:.0f} s "
                     f"(busy {entry['busy_s']:.1f} s{rate}) on {nodes} node{'s' if nodes != 1 else ''}")
    return lines
