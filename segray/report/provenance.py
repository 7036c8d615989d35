"""What is needed to reproduce or compare a run: dataset fingerprint, package versions,
git commit, checkpoint hashes and the machine writing the report."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from datetime import UTC, datetime
from typing import Any

from segray.models.base import cpu_model
from segray.models.checkpoint import weights_sha256
from segray.run import git_sha

PACKAGES = ["torch", "ray", "transformers", "segmentation_models_pytorch", "numpy", "pyarrow", "scipy", "matplotlib"]


def reproducibility(summary: dict[str, Any], training: dict[str, Any],
                    model_versions: dict[str, str | None]) -> dict[str, Any]:
    """What is needed to reproduce or compare this run; `model_versions` are the rows'."""
    return {
        "run_id": summary.get("run_id"),
        "run_finished_at": summary.get("finished_at"),
        "run_wall_time_s": summary.get("wall_time_s"),
        "report_generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": summary.get("dataset"),
        "dataset_root": summary.get("dataset_root"),
        # the one fingerprint (segray.data.manifest), as the checkpoint store and results table record it
        "dataset_fingerprint": summary.get("dataset_fingerprint"),
        "dataset_images": (summary.get("manifest") or {}).get("images"),
        "model_versions": model_versions,
        "git_sha": git_sha(),  # the code writing the report; run.json has the run's
        "packages": package_versions(),
        "python": platform.python_version(),
        "checkpoints": checkpoint_hashes(training),
        "report_hardware": hardware(),  # the machine that wrote this report; the run records none
        "config": summary.get("config"),
    }


def package_versions(names: list[str] = PACKAGES) -> dict[str, str | None]:
    """Installed versions, read from package metadata (nothing is imported)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def checkpoint_hashes(training: dict[str, Any]) -> dict[str, str | None]:
    """sha256 of each trained checkpoint's weights file (None when it cannot be read)."""
    hashes = {}
    for model, result in sorted(training.items()):
        checkpoint = result.get("checkpoint") if isinstance(result, dict) else None
        if not checkpoint:
            continue
        try:
            hashes[model] = weights_sha256(checkpoint)
        except OSError:
            hashes[model] = None
    return hashes


def hardware() -> dict[str, Any]:
    """The machine writing the report (not necessarily the one that ran the benchmark)."""
    cpu = cpu_model()
    gpus = []
    torch = sys.modules.get("torch")  # only if something else already paid for the import
    if torch is not None and torch.cuda.is_available():
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    else:
        root = "/proc/driver/nvidia/gpus"
        for bus in sorted(os.listdir(root)) if os.path.isdir(root) else []:
            try:
                with open(os.path.join(root, bus, "information")) as f:
                    gpus += [line.split(":", 1)[1].strip() for line in f if line.startswith("Model:")]
            except OSError:
                pass
    return {"cpu": cpu, "cores": os.cpu_count(), "gpus": gpus, "platform": platform.platform()}
