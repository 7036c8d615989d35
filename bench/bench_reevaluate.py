"""Does the re-evaluation stream? Peak memory and time of jobs/reevaluate.py on 2k vs 20k images.

    uv run python bench/bench_reevaluate.py                          # 2,000 and 20,000 images
    uv run python bench/bench_reevaluate.py --sizes 500,5000         # a quicker look

The largest set is generated once (segray.data.synthetic, ~45 ms per image here) under
--work; each smaller set is hard links to its first N images, i.e. the same dataset
before it grew. For each size, with a fresh results table and a checkpoint store holding one
tiny random UNet, the job runs in a subprocess with its own local Ray, while this script
samples every 0.5 s the memory of the job's whole process tree (driver, GCS, raylet, Ray
workers) from /proc: the sum of RSS (shared pages counted once per process, as asked) and
of PSS (shared pages split between processes: the honest total). Then the job runs again,
which must compute nothing. Printed: wall time, evaluation time (from _COMMITTED.json),
images/s, peak RSS and PSS, the largest/smallest ratios, and the hardware and load.

The job starts its own Ray, so before each job the script waits until no other Ray runs
on the host (a second cluster confuses Ray Train in other processes); --allow-other-ray
skips the wait.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from segray.data.synthetic import sample_name, write_synthetic  # noqa: E402
from segray.models.checkpoint import save_checkpoint  # noqa: E402
from segray.models.networks import build_network  # noqa: E402
from segray.models.store import record_model  # noqa: E402
from segray.report.provenance import hardware  # noqa: E402

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB; (0, 0) once it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            rss = int(f.read().split()[1]) * PAGE_KB
        with open(f"/proc/{pid}/smaps_rollup") as f:
            pss = next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        return rss, pss
    except (OSError, StopIteration, ValueError):
        return 0, 0


class Sampler(threading.Thread):
    """Peak total RSS and PSS of a process tree, sampled every `interval` seconds."""

    def __init__(self, root: int, interval: float = 0.5):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak_rss_kb = self.peak_pss_kb = self.peak_driver_rss_kb = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            samples = [memory_kb(pid) for pid in process_tree(self.root)]
            self.peak_rss_kb = max(self.peak_rss_kb, sum(s[0] for s in samples))
            self.peak_pss_kb = max(self.peak_pss_kb, sum(s[1] for s in samples))
            self.peak_driver_rss_kb = max(self.peak_driver_rss_kb, memory_kb(self.root)[0])


def other_ray_running() -> bool:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == "raylet":
                        return True
            except OSError:
                continue
    return False


def wait_for_no_ray(timeout_s: float) -> bool:
    """Wait until no Ray runs on this host; False if one still runs after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while other_ray_running():
        if time.monotonic() > deadline:
            return False
        time.sleep(2)
    return True


def subset(source: Path, target: Path, n: int) -> Path:
    """The first n images of `source` (and their masks) as hard links under `target`."""
    for folder in ("images", "masks"):
        (target / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            name = sample_name(i)
            if not (target / folder / name).exists():
                os.link(source / folder / name, target / folder / name)
    return target


def register_tiny_unet(registry: Path, work: Path, base_width: int, image_size: int) -> None:
    if (registry / "unet" / "bench" / "record.json").exists():
        return
    params = {"base_width": base_width}
    save_checkpoint(str(work / "checkpoint"), build_network("unet", params),
                    {"model": "unet", "params": params, "image_size": image_size})
    record_model(str(registry), str(work / "checkpoint"), "bench", config={}, metrics={"best_val_iou": None},
                 dataset={"uri": "bench", "fingerprint": None})


def run_job(argv: list[str], log: Path) -> dict:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
           "NO_ALBUMENTATIONS_UPDATE": "1"}
    started = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, str(REPO / "jobs" / "reevaluate.py"), *argv], cwd=REPO, env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
        sampler = Sampler(process.pid)
        sampler.start()
        status = process.wait()
        sampler.stopped.set()
        sampler.join()
    return {"status": status, "wall_s": time.perf_counter() - started, "peak_rss_mib": sampler.peak_rss_kb / 1024,
            "peak_pss_mib": sampler.peak_pss_kb / 1024, "peak_driver_rss_mib": sampler.peak_driver_rss_kb / 1024}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="2000,20000", help="comma-separated dataset sizes")
    p.add_argument("--work", default="/tmp/segray-bench-reevaluate", help="datasets, the checkpoint store and tables go here")
    p.add_argument("--base-width", type=int, default=8, help="the tiny UNet's first-layer width")
    p.add_argument("--image-size", type=int, default=64, help="the tiny UNet's input size")
    p.add_argument("--wait-for-ray", type=float, default=1800, metavar="SECONDS",
                   help="before each job, wait this long at most for other Rays on the host to end")
    p.add_argument("--allow-other-ray", action="store_true", help="run even if another Ray runs on this host")
    args = p.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))

    work = Path(args.work)
    started = time.perf_counter()
    full = write_synthetic(work / f"synthetic-{sizes[-1]}-0", sizes[-1], 0)
    print(f"dataset of {sizes[-1]} images ready in {time.perf_counter() - started:.0f} s")
    registry = work / "registry"
    register_tiny_unet(registry, work, args.base_width, args.image_size)

    results = {}
    for n in sizes:
        dataset = subset(full, work / f"dataset-{n}", n)
        table = work / f"results-{n}-{int(time.time())}"
        argv = ["--preset", "demo", "--dataset", str(dataset), "--results", str(table), "--checkpoint-store", str(registry),
                "--models", "unet", "--run-id", "bench"]
        if not args.allow_other_ray and not wait_for_no_ray(args.wait_for_ray):
            print(f"another Ray still runs on this host after {args.wait_for_ray:g} s: stopping", file=sys.stderr)
            return 2
        load = os.getloadavg()[0]
        first = run_job(argv, work / f"job-{n}.log")
        commit = json.loads((table / "run=bench" / "_COMMITTED.json").read_text()) if first["status"] == 0 else {}
        again = run_job([*argv[:-1], "bench-again"], work / f"job-{n}-again.log")
        nothing = "nothing to compute" in (work / f"job-{n}-again.log").read_text()
        results[n] = {**first, "load_before": load, "eval_s": commit.get("wall_time_s"),
                      "rows": commit.get("rows"), "rerun_s": again["wall_s"], "rerun_computed_nothing": nothing}
        r = results[n]
        print(f"{n:>6} images: exit {r['status']}, wall {r['wall_s']:.0f} s, evaluation {r['eval_s']} s "
              f"({n / r['eval_s']:.1f} img/s), peak RSS {r['peak_rss_mib']:.0f} MiB (driver "
              f"{r['peak_driver_rss_mib']:.0f}), peak PSS {r['peak_pss_mib']:.0f} MiB; rerun {r['rerun_s']:.0f} s, "
              f"computed nothing: {nothing}; load average before {load:.1f}")

    small, large = results[sizes[0]], results[sizes[-1]]
    print(f"\n{sizes[-1]}/{sizes[0]} = {sizes[-1] / sizes[0]:g}x images:")
    for key in ("peak_rss_mib", "peak_pss_mib", "peak_driver_rss_mib", "wall_s", "eval_s", "rerun_s"):
        print(f"  {key:<20} {large[key] / small[key]:.2f}x")
    print("hardware:", json.dumps(hardware()), "load average now:", os.getloadavg())
    (work / "bench_reevaluate.json").write_text(json.dumps({"sizes": results, "hardware": hardware()}, indent=2))
    return 0 if all(r["status"] == 0 and r["rerun_computed_nothing"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
