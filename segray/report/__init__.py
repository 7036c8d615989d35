"""The comparison report: a pure function of a finished run's directory.

Inputs (all through `segray.storage`, so a run on s3:// works the same):
  predictions/    the Parquet rows (`segray.schema.ROW_SCHEMA`, read by `segray.results.read`);
                  `mask_png` is read only for the rows shown in the worst-N galleries
  summary.json    config, dataset_root, training results (a run without it is incomplete)
  training.json   per trained model: history, train_time_s, best_epoch, checkpoint

Outputs, in RUN_URI/report/: report.md, a self-contained report.html (figures embedded as
base64 PNG), the figures as PNG files, and report.json: the split, each model variant's
headline numbers (`analysis.tracked_metrics`, what `segray.tracking` logs) and the
reproducibility section.

Statistics, on one split (validation by default), every model on the same images, by the
one rule of `segray.results.scoring` (so n and mean IoU are summary.json's):
  - strict mean IoU (a no-detection is scored against an empty prediction: IoU 0 on a
    non-empty ground truth), the mean IoU over detections only (no-detections left out,
    as the article's notebook scored), median and pooled IoU (sum of intersections / sum
    of unions), mean Dice, boundary IoU, precision and recall;
  - a 95% percentile bootstrap CI of the strict mean IoU (2000 resamples of the images,
    the run's seed); the same resamples serve every model, so pair differences are paired;
  - per pair of models: mean IoU difference with its bootstrap CI, win/tie/loss rates and
    the Wilcoxon signed-rank p-value (zero differences dropped; all zero -> p = 1);
  - latency p50/p95 per image, throughput and cost per 1,000 images at $/GPU-hour.

No Ray, and no torch: `import segray.report` stays light; matplotlib is imported (Agg)
only when figures are drawn.

The package, in the order its modules import one another (each only from those above it):
  analysis.py    the statistics above (`analyze` -> `Analysis`)
  formats.py     how numbers and file names are written
  variants.py    which variants are foundation models, their instance, rule and setting, the run's own settings
  sweep.py       a sweep's answer: learning curve, each foundation model's sensitivity, cost frontier, verdict
  provenance.py  reproducibility: dataset fingerprint, model versions, packages, git, checkpoints, hardware
  figures.py     the PNG figures and the worst-image galleries
  sweep_figures.py  the sweep section's figures
  render.py      the tables, report.md and report.html
  __init__.py    `write_report`, the entry point
"""

from __future__ import annotations

import json
import posixpath
import time
from typing import Any

from segray import storage
from segray.config import DEFAULT_MAX_PIXELS
from segray.errors import IncompleteRun
from segray.report.analysis import analyze, tracked_metrics
from segray.report.figures import (
    figure_categories,
    figure_ecdf,
    figure_gallery,
    figure_histograms,
    figure_timeline,
    figure_training,
    gallery_items,
)
from segray.report.formats import figure_name
from segray.report.provenance import reproducibility
from segray.report.render import render_html, render_markdown
from segray.report.sweep import analyze_sweep
from segray.report.sweep_figures import sweep_figures
from segray.report.variants import other_sweep_settings, run_settings
from segray.results.read import read_rows

REPORT_JSON = "report.json"


def write_report(
    run_uri: str,
    split: str | None = None,
    gpu_hour_usd: float = 2.0,
    worst_n: int = 6,
    resamples: int = 2000,
    seed: int | None = None,
    timings: dict[str, float] | None = None,
    cpu_hour_usd: float | None = None,
) -> dict[str, str]:
    """Write RUN_URI/report/ (report.md, report.html, figures) from the run directory alone;
    return {name: URI} of the files written. Raises IncompleteRun without summary.json.
    `split` and `seed` default to the run's own (summary.json: the split it scored, its
    --seed). `timings`, if given, receives seconds per stage."""
    clock = time.perf_counter()
    timings = timings if timings is not None else {}

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = now - clock
        clock = now

    summary = read_json(storage.join(run_uri, "summary.json"))
    if summary is None:
        raise IncompleteRun(f"incomplete run: {storage.join(run_uri, 'summary.json')} does not exist")
    training = read_json(storage.join(run_uri, "training.json")) or summary.get("training") or {}
    rows = read_rows(storage.join(run_uri, "predictions"), positions=True)
    lap("read")
    if seed is None:  # the run's own seed (--seed)
        seed = int((summary.get("config") or {}).get("seed", 0))
    split = split or summary.get("split") or "val"
    # A sweep's settings other than the run's own are shown in the sweep's section only.
    defaults = run_settings(summary.get("config") or {})
    analysis = analyze(rows, split, training, gpu_hour_usd, resamples, seed, cpu_hour_usd,
                       hidden=other_sweep_settings(rows["model"].astype(str).unique(), defaults))
    analysis.unavailable = summary.get("unavailable") or {}
    analysis.timeline = (summary.get("timeline") or {}).get("stages") or {}
    lap("statistics")
    repro = reproducibility(summary, training, {m: p["model_version"] for m, p in analysis.per_model.items()})
    lap("reproducibility")

    pngs: dict[str, bytes] = {}
    if analysis.models:
        pngs["histograms"] = figure_histograms(analysis)
        pngs["ecdf"] = figure_ecdf(analysis)
        if analysis.per_category:
            pngs["categories"] = figure_categories(analysis)
    curves = figure_training(analysis)
    if curves is not None:
        pngs["training"] = curves
    timeline = figure_timeline(analysis)
    if timeline is not None:
        pngs["timeline"] = timeline
    sweep = analyze_sweep(analysis, defaults)
    if sweep is not None:
        pngs |= sweep_figures(sweep)
    lap("figures")
    data = (summary.get("config") or {}).get("data") or {}  # read the images as the run did
    for model, items in gallery_items(rows, analysis, summary.get("dataset_root"), worst_n,
                                      mask_person_values=data.get("mask_person_values"),
                                      max_pixels=data.get("max_pixels", DEFAULT_MAX_PIXELS)).items():
        if items:
            pngs[f"worst_{figure_name(model)}"] = figure_gallery(model, items)
    lap("galleries")

    out = storage.join(run_uri, "report")
    written = {}
    for name, png in pngs.items():
        uri = storage.join(out, f"{name}.png")
        storage.write_bytes(uri, png)
        written[name] = uri
    title = f"segray report: run {summary.get('run_id', posixpath.basename(run_uri.rstrip('/')))}"
    markdown = render_markdown(analysis, repro, {name: f"{name}.png" for name in pngs}, title, sweep)
    storage.write_bytes(storage.join(out, "report.md"), markdown.encode())
    written["report.md"] = storage.join(out, "report.md")
    numbers = {"split": analysis.split, "settings": analysis.settings, "models": tracked_metrics(analysis),
               "reproducibility": repro}
    storage.write_bytes(storage.join(out, REPORT_JSON), json.dumps(numbers, indent=2, default=str).encode())
    written[REPORT_JSON] = storage.join(out, REPORT_JSON)
    page = render_html(analysis, repro, pngs, title, sweep)
    storage.write_bytes(storage.join(out, "report.html"), page.encode())
    written["report.html"] = storage.join(out, "report.html")
    lap("write")
    return written


def read_json(uri: str) -> dict[str, Any] | None:
    return json.loads(storage.read_bytes(uri)) if storage.exists(uri) else None
