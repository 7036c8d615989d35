"""The one scoring rule: the console table, summary.json and the report give the same
per-model n and mean IoU, on a partial run (a model errors on some images, another lacks
a row), and that n and mean are the rule's: every model on the same images."""

from __future__ import annotations

import json
import re
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from segray.data.manifest import build_manifest
from segray.models.checkpoint import save_checkpoint
from segray.models.networks import build_network
from segray.pipeline import Run, print_summary, write_summary
from segray.report import write_report
from segray.schema import ROW_SCHEMA
from segray.settings import load
from tests.conftest import job


def table_rows(text: str, first_cell: str) -> dict[str, list[str]]:
    """Markdown table rows by their first cell, from the table whose header starts with `first_cell`."""
    lines = text.split(f"| {first_cell} |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines)}


def test_console_summary_and_report_agree_on_a_partial_run(ray_session, synthetic_root, tiny_weights, tmp_path,
                                                           capsys):
    torch.manual_seed(0)
    checkpoint = tmp_path / "unet"
    save_checkpoint(str(checkpoint), build_network("unet", {"base_width": 4}),
                    {"model": "unet", "params": {"base_width": 4}, "image_size": 32, "run_id": "t"})
    detector, sam = tiny_weights
    runs = tmp_path / "runs"
    assert job("evaluate")(["--preset", "demo", "--dataset", str(synthetic_root), "--output", str(runs),
                            "--run-id", "partial", "--models", "unet,langsam", "--checkpoint", f"unet={checkpoint}",
                            "--langsam-detector", str(detector), "--langsam-sam", str(sam),
                            "--langsam-box-threshold", "0"]) == 0
    run = runs / "partial"
    # No model here was trained on this dataset (the checkpoint names none): every image counts,
    # and the latencies say what they were measured on.
    scored = json.loads((run / "summary.json").read_text())
    assert scored["split"] == "all" and scored["models"]["unet"]["scored_images"] == 48
    assert all(s["device"].startswith("CPU: ") for s in scored["models"].values())
    cost = table_rows((run / "report" / "report.md").read_text(), "model | measured on")
    assert cost["unet"][0].startswith("CPU: ") and cost["unet"][-1] == "–"  # CPU, not priced without a price
    assert "every image (48 images)" in (run / "report" / "report.md").read_text()
    rows = pq.read_table(run / "predictions").to_pandas()
    val = sorted(rows.loc[rows["split"] == "val", "image_id"].unique())
    assert len(val) > 5

    # unet fails on two validation images; langsam/union has no row for a third.
    failed = (rows["model"] == "unet") & rows["image_id"].isin(val[:2])
    rows.loc[failed, ["status", "error"]] = ["error", "RuntimeError: injected"]
    rows.loc[failed, "iou"] = None
    rows = rows[~((rows["model"] == "langsam/union") & (rows["image_id"] == val[2]))]
    shutil.rmtree(run / "predictions")
    (run / "predictions").mkdir()
    pq.write_table(pa.Table.from_pandas(rows, schema=ROW_SCHEMA, preserve_index=False),
                   run / "predictions" / "part-0.parquet")

    config = load("benchmark", ["--preset", "demo", "--dataset", str(synthetic_root), "--output", str(runs),
                                "--run-id", "partial", "--models", "unet"])
    manifest = build_manifest(str(synthetic_root))
    summary = write_summary(Run(config, manifest), len(manifest.table) * 6, {}, {})
    capsys.readouterr()
    print_summary(summary)
    console = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[3:]
               if line.startswith(("unet", "langsam/"))}
    write_report(str(run))
    report = table_rows((run / "report" / "report.md").read_text(), "model")

    assert summary["status"] == "partial" and summary["rows"]["errors_by_model"] == {"unet": 2}
    assert json.loads((run / "summary.json").read_text())["models"] == summary["models"]
    common = set(val[3:])  # every model has a row and none is an error
    assert sorted(summary["models"]) == sorted(console) == sorted(report)
    for model, scores in summary["models"].items():
        expected = rows.loc[(rows["model"] == model) & rows["image_id"].isin(common), "iou"].mean()
        assert scores["scored_images"] == len(common)
        assert scores["mean_iou"] == pytest.approx(expected)
        images, errors, _, scored, mean, _ = console[model]
        assert (int(scored), mean) == (len(common), f"{expected:.4f}")
        # report: rows, errors, no detection, scored images, mean IoU (strict), ...
        assert (int(report[model][3]), report[model][4]) == (len(common), f"{expected:.3f}")
        assert int(images) == int(report[model][0]) == scores["images"]
    assert console["unet"][1] == "2" and report["unet"][1] == "2"
    assert re.search(rf"same {len(common)} images of the val split", (run / "report" / "report.md").read_text())
