"""The report as Markdown and as a self-contained HTML page (figures embedded as base64 PNG)."""

from __future__ import annotations

import base64
import html
import json
from typing import Any

from segray.report.analysis import Analysis
from segray.report.formats import fmt, fmt_ci, fmt_minutes, fmt_p, fmt_pct, md_text
from segray.report.sweep import Sweep, sweep_sections
from segray.report.variants import is_foundation
from segray.results.scoring import split_label


def tables(analysis: Analysis) -> dict[str, tuple[list[str], list[list[str]]]]:
    """The report's tables as (header, rows) of strings."""
    s = analysis.settings
    out = {}
    out["models"] = (
        ["model", "rows", "errors", "no detection", "scored images", "mean IoU (strict)", "95% CI",
         "mean IoU (detections only)", "median IoU", "pooled IoU", "Dice", "boundary IoU", "precision", "recall"],
        [[m, fmt(p["images"]), fmt(p["errors"]), fmt(p["no_detection"]), fmt(p["scored_images"]), fmt(p["mean_iou"]),
          fmt_ci(p["mean_iou_ci"]), fmt(p["mean_iou_detected"]), fmt(p["median_iou"]), fmt(p["pooled_iou"]),
          fmt(p["mean_dice"]), fmt(p["mean_boundary_iou"]), fmt(p["mean_precision"]), fmt(p["mean_recall"])]
         for m, p in ranked(analysis)],
    )
    price = f"$ per 1,000 images (${s['gpu_hour_usd']:g}/GPU-hour; " + (
        f"${s['cpu_hour_usd']:g}/CPU actor-hour)" if s.get("cpu_hour_usd") is not None else "CPU: not priced)")
    out["foundation"] = (
        ["rank", "foundation model", "mean IoU (strict)", "95% CI", "images/s per device", "latency p50 (ms)", price],
        [[str(rank), m, fmt(p["mean_iou"]), fmt_ci(p["mean_iou_ci"]), fmt(analysis.latency[m]["images_per_s"], 1),
          fmt(analysis.latency[m]["p50_ms"], 1), fmt(analysis.latency[m]["usd_per_1000"], 4)]
         for rank, (m, p) in enumerate([(m, p) for m, p in ranked(analysis) if is_foundation(m)], 1)],
    )
    cats = list(analysis.per_category)
    out["categories"] = (
        ["model", *[f"{c} ({analysis.per_category[c]['images']})" for c in cats]],
        [[m, *[fmt(analysis.per_category[c][m]) for c in cats]] for m in analysis.shown],
    )
    out["pairs"] = (
        ["A", "B", "images", "mean IoU A − B", "95% CI", "A wins", "ties", "B wins", "Wilcoxon p"],
        [[p["a"], p["b"], fmt(p["images"]), fmt(p["mean_diff"], 4), fmt_ci(p["ci"]), fmt_pct(p["win_rate"]),
          fmt_pct(p["tie_rate"]), fmt_pct(p["loss_rate"]), fmt_p(p["wilcoxon_p"])] for p in analysis.pairs],
    )
    out["cost"] = (
        ["model", "measured on", "images timed", "latency p50 (ms)", "latency p95 (ms)", "images/s per device", price],
        [[m, v["device"] or "unknown", fmt(v["images"]), fmt(v["p50_ms"], 1), fmt(v["p95_ms"], 1),
          fmt(v["images_per_s"], 1), fmt(v["usd_per_1000"], 4)] for m, v in shown(analysis, analysis.latency)],
    )
    out["training"] = (
        ["model", "epochs", "best epoch", "best val IoU (training size)", "time to train", "checkpoint / error"],
        [[m, fmt(t["epochs"]), fmt(t["best_epoch"]), fmt(t["best_val_iou"]),
          fmt_minutes(t.get("train_time_s")),
          t["error"] or t["checkpoint"] or "–"] for m, t in analysis.training.items()],
    )
    out["timeline"] = (
        ["stage", "rows in", "rows out", "start (s)", "end (s)", "busy (s)", "nodes"],
        [[name, fmt(t["rows_in"]), fmt(t["rows_out"]), f"{t['start']:.1f}", f"{t['end']:.1f}", f"{t['busy_s']:.1f}",
          fmt(len(t["nodes"]))] for name, t in analysis.timeline.items()],
    )
    return out


def shown(analysis: Analysis, per_model: dict[str, Any]) -> list[tuple[str, Any]]:
    """The items of a per-model table that the report shows (`Analysis.shown`)."""
    return [(model, value) for model, value in per_model.items() if model in analysis.shown]


def ranked(analysis: Analysis) -> list[tuple[str, dict[str, Any]]]:
    """The shown models with their scores, best strict mean IoU first (unscored last)."""
    return sorted(shown(analysis, analysis.per_model), key=lambda kv: -(kv[1]["mean_iou"] or -1))


NOTES = {
    "models": (
        "Every model is scored on the same {n} images of {split}: those where every model has a row and "
        "none is an error ({excluded} left out). *Strict* mean IoU scores a no-detection against an empty "
        "prediction (IoU 0); the *detections-only* mean leaves no-detections out, as the article's notebook did. "
        "*Pooled* IoU is the sum of intersections over the sum of unions (large masks weigh more). "
        "The 95% CI is a percentile bootstrap of the strict mean ({resamples} resamples of the images, seed {seed}). "
        "Boundary IoU (Cheng et al. 2021) compares only bands of width 2% of the image diagonal along the mask "
        "edges. A metric whose denominator is empty counts as 1 (e.g. precision when nothing is predicted)."
    ),
    "foundation": (
        "Every foundation model variant (LangSAM's, its pairings', SAM 3's) at the run's own prompt and threshold "
        "(a sweep's other settings are in its sections above), ranked by strict mean IoU on the same {n} images, "
        "with its 95% CI; speed and cost as measured in *Speed and cost* below. The variants of one model share "
        "its inference, so they share its speed and cost."
    ),
    "pairs": (
        "Paired comparisons on the same images: A − B is the mean per-image IoU difference (positive: A better), "
        "its CI a paired bootstrap; *A wins* is the share of images where A's IoU is higher. The Wilcoxon "
        "signed-rank test drops ties; p = 1 when the two models agree on every image."
    ),
    "cost": (
        "Latency is the model call's wall time per image (batch time / batch size) on the device its actor "
        "reported (*measured on*), decode and scoring excluded. Throughput = 1000 / mean latency (ms); cost "
        "per 1,000 images = 1,000 × mean latency (s) × $/hour / 3600, at the GPU price for a GPU and the "
        "price of one CPU actor-hour for a CPU (`--cpu-hour-usd`; unpriced without it). A foundation model's "
        "variants share one inference, so they share its latency."
    ),
    "training": (
        "*Best val IoU* is what training chose its checkpoint by: the mean per-image IoU on the validation "
        "split at the training input size (`train.image_size`, masks resized to it). The tables above score "
        "the same checkpoint's prediction resized back to each mask's own size, so the two differ by what "
        "resizing costs, most at thin limbs and edges."
    ),
    "timeline": (
        "What each stage of the run did, from its own timeline (summary.json): rows in and out, first start "
        "and last end in seconds from the run's start, busy time summed over its batches (parallel work can "
        "exceed the span), and the Ray nodes it ran on. `decode` reads each image once for every model; "
        "`wait:MODEL` is a pool waiting for its model's training; `train:MODEL` counts epochs as batches."
    ),
}


# The report's sections, in order: heading, table key, figures shown under the table.
SECTIONS = [
    ("Accuracy per model", "models", ["histograms", "ecdf"]),
    ("Foundation models ranked, with speed and cost", "foundation", []),
    ("Per category (mean strict IoU)", "categories", ["categories"]),
    ("Pairwise comparisons", "pairs", []),
    ("Speed and cost", "cost", []),
    ("Training", "training", ["training"]),
    ("Run timeline", "timeline", ["timeline"]),
]


def sections(t: dict[str, tuple[list[str], list[list[str]]]]) -> list[tuple[str, str, list[str]]]:
    """The SECTIONS whose table has rows: a run without foundation models, say, has no ranking of them."""
    return [section for section in SECTIONS if t[section[1]][1]]


def render_markdown(analysis: Analysis, repro: dict[str, Any], figures: dict[str, str], title: str,
                    sweep: Sweep | None = None) -> str:
    t = tables(analysis)
    notes = _notes(analysis)
    lines = [f"# {title}", "", _headline(analysis, sweep), ""]
    if analysis.unavailable:
        lines += [NOT_EVALUATED, "", *[f"- **{md_text(model)}**: {md_text(why)}" for model, why in not_evaluated(analysis)],
                  ""]
    for heading, note, table, name in sweep_sections(sweep) if sweep else []:
        lines += [f"## {heading}", "", note, "", *md_table(*table), ""]
        if name in figures:
            lines += [f"![{name}]({figures[name]})", ""]
    for heading, key, figs in sections(t):
        lines += [f"## {heading}", ""]
        if key in notes:
            lines += [notes[key], ""]
        lines += md_table(*t[key]) + [""]
        for name in figs:
            if name in figures:
                lines += [f"![{name}]({figures[name]})", ""]
    galleries = [n for n in figures if n.startswith("worst_")]
    if galleries:
        lines += ["## Worst images per model", ""]
        lines += [f"![{n}]({figures[n]})" for n in galleries] + [""]
    lines += ["## Reproducibility", "", "```json", json.dumps(repro, indent=2, default=str), "```", ""]
    return "\n".join(lines)


def _notes(analysis: Analysis) -> dict[str, str]:
    s = analysis.settings
    return {k: v.format(n=len(analysis.iou), split=split_label(analysis.split), excluded=analysis.excluded_images,
                        resamples=s["resamples"], seed=s["seed"]) for k, v in NOTES.items()}


NOT_EVALUATED = "**Not evaluated** (the full reasons are in summary.json, under `unavailable`):"
REASON_CHARS = 160


def not_evaluated(analysis: Analysis) -> list[tuple[str, str]]:
    """Each model that could not run, with the first line of its reason, cut to REASON_CHARS."""
    out = []
    for model, reason in analysis.unavailable.items():
        line = (reason.strip().splitlines() or ["no reason recorded"])[0]
        out.append((model, line if len(line) <= REASON_CHARS else line[:REASON_CHARS - 1] + "…"))
    return out


def _headline(analysis: Analysis, sweep: Sweep | None = None) -> str:
    compared = [model for model, _ in shown(analysis, analysis.per_model)]
    text = f"Compared: {', '.join(compared)}. " if compared else ""
    return text + (f"**Verdict:** {sweep.verdict} " if sweep else "") + _ranking(analysis) + _who_wins(analysis)


def _who_wins(analysis: Analysis) -> str:
    """The question itself: the best foundation model against the best trained network, by
    mean IoU, with their paired difference."""
    scored = [(m, p["mean_iou"]) for m, p in shown(analysis, analysis.per_model) if p["mean_iou"] is not None]
    networks = [(m, v) for m, v in scored if not is_foundation(m)]
    foundation = [(m, v) for m, v in scored if is_foundation(m)]
    if not networks or not foundation:
        return ""
    net, net_iou = max(networks, key=lambda kv: kv[1])
    fm, fm_iou = max(foundation, key=lambda kv: kv[1])
    pair = next((p for p in analysis.pairs if {p["a"], p["b"]} == {net, fm}), None)
    if pair is None:
        return ""
    sign = 1 if pair["a"] == net else -1
    low, high = sorted((sign * pair["ci"][0], sign * pair["ci"][1]))
    winner = "the trained network wins" if low > 0 else "the foundation model wins" if high < 0 else "no clear winner"
    return (f" **Foundation model or trained network:** the best trained network, **{net}** ({net_iou:.3f}), against "
            f"the best foundation model, **{fm}** ({fm_iou:.3f}): {sign * pair['mean_diff']:+.3f} IoU "
            f"(95% CI [{low:.3f}, {high:.3f}]): {winner}.")


def _ranking(analysis: Analysis) -> str:
    order = ranked(analysis)
    if not order or order[0][1]["mean_iou"] is None:
        return f"No model was scored on {split_label(analysis.split)}."
    best, stats = order[0]
    text = (f"On {split_label(analysis.split)} ({len(analysis.iou)} images), the best mean IoU is **{best}**: "
            f"{stats['mean_iou']:.3f} (95% CI {fmt_ci(stats['mean_iou_ci'])}).")
    if len(order) > 1:
        second = order[1][0]
        pair = next(p for p in analysis.pairs if {p["a"], p["b"]} == {best, second})
        sign = 1 if pair["a"] == best else -1
        low, high = (sign * pair["ci"][0], sign * pair["ci"][1]) if sign == 1 else (-pair["ci"][1], -pair["ci"][0])
        verdict = "a difference the bootstrap CI separates from zero" if low > 0 else "not separable from zero"
        text += (f" Next is {second}: {best} is ahead by {sign * pair['mean_diff']:.3f} IoU "
                 f"(95% CI [{low:.3f}, {high:.3f}], {verdict}).")
    return text


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table whose cells are literal text (`md_text`)."""
    return ["| " + " | ".join(map(md_text, header)) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(map(md_text, r)) + " |" for r in rows
    ]


HTML_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, td:nth-child(2) { text-align: left; }
img { max-width: 100%; display: block; margin: 1em 0; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.85em; }
.note { color: #555; max-width: 60em; }
"""


def render_html(analysis: Analysis, repro: dict[str, Any], pngs: dict[str, bytes], title: str,
                sweep: Sweep | None = None) -> str:
    t = tables(analysis)
    notes = _notes(analysis)
    parts = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
             f"<style>{HTML_STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             f"<p>{_bold_html(_headline(analysis, sweep))}</p>"]
    if analysis.unavailable:
        items = "".join(f"<li><b>{html.escape(model)}</b>: {html.escape(why)}</li>" for model, why in not_evaluated(analysis))
        parts += [f"<p>{_bold_html(NOT_EVALUATED)}</p>", f"<ul>{items}</ul>"]
    for heading, note, table, name in sweep_sections(sweep) if sweep else []:
        parts += [f"<h2>{html.escape(heading)}</h2>", f"<p class='note'>{_bold_html(note)}</p>", html_table(*table)]
        if name in pngs:
            parts.append(html_img(name, pngs[name]))
    for heading, key, figs in sections(t):
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if key in notes:
            parts.append(f"<p class='note'>{_bold_html(notes[key])}</p>")
        parts.append(html_table(*t[key]))
        parts += [html_img(name, pngs[name]) for name in figs if name in pngs]
    galleries = [n for n in pngs if n.startswith("worst_")]
    if galleries:
        parts.append("<h2>Worst images per model</h2>")
        parts += [html_img(n, pngs[n]) for n in galleries]
    parts += ["<h2>Reproducibility</h2>", f"<pre>{html.escape(json.dumps(repro, indent=2, default=str))}</pre>",
              "</body></html>"]
    return "\n".join(parts)


def _bold_html(text: str) -> str:
    """The markdown emphasis the notes use, as HTML: **bold** and *italic*."""
    pieces = html.escape(text).split("**")
    text = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(pieces))
    pieces = text.split("*")
    return "".join(f"<i>{p}</i>" if i % 2 else p for i, p in enumerate(pieces))


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_img(name: str, png: bytes) -> str:
    return f"<img alt='{html.escape(name)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
