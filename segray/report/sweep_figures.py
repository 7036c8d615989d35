"""The sweep section's figures (`segray.report.sweep`): the learning curve, each foundation
model's sensitivity heat maps and the cost-accuracy frontier, as PNG bytes."""

from __future__ import annotations

import numpy as np

from segray.config import Setting
from segray.report.figures import png, pyplot, series_color
from segray.report.sweep import Sweep, sensitivity_figure, swept


def sweep_figures(sweep: Sweep) -> dict[str, bytes]:
    """Every figure of the section that has something to show, by the name `sweep_sections` gives it."""
    drawn = {"learning_curve": figure_learning_curve(sweep), "cost_frontier": figure_cost_frontier(sweep)}
    drawn |= {sensitivity_figure(instance): figure_sensitivity(sweep, instance) for instance in swept(sweep)}
    return {name: figure for name, figure in drawn.items() if figure is not None}


def figure_learning_curve(sweep: Sweep) -> bytes | None:
    """Mean IoU (95% CI) against training images per network; the best foundation model and
    its default configuration as horizontal bands (their CI) with their mean as a line."""
    if not sweep.curves:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    default = sweep.foundations[sweep.best["instance"]]["default"] if sweep.best else None
    for band, label, color in ((sweep.best, "best foundation model", "tab:red"), (default, "its default", "tab:gray")):
        if band is not None and band["mean_iou"] is not None:
            ax.axhline(band["mean_iou"], color=color, linestyle="--", linewidth=1,
                       label=f"{label}: {band['name']} ({band['mean_iou']:.3f})")
            if band["ci"][0] is not None:
                ax.axhspan(band["ci"][0], band["ci"][1], color=color, alpha=0.15)
    for j, (network, points) in enumerate(sweep.curves.items()):
        x = [p["images"] for p in points]
        y = [p["mean_iou"] if p["mean_iou"] is not None else np.nan for p in points]
        low = [y_ - p["ci"][0] if p["ci"][0] is not None else 0 for y_, p in zip(y, points)]
        high = [p["ci"][1] - y_ if p["ci"][1] is not None else 0 for y_, p in zip(y, points)]
        ax.errorbar(x, y, yerr=[low, high], marker="o", capsize=3, color=series_color(j), label=network)
        win = sweep.smallest_win.get(network)
        if win is not None:
            ax.plot([win["images"]], [win["mean_iou"]], marker="*", ms=16, color=series_color(j),
                    markeredgecolor="black", linestyle="none")
    ax.set_xscale("log")
    sizes = sorted({p["images"] for points in sweep.curves.values() for p in points})
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.minorticks_off()
    ax.set_xlabel("training images (log scale)")
    ax.set_ylabel(f"mean IoU ({sweep.held_out_images} held-out images)")
    ax.set_title("Learning curve: ★ = the smallest training set that beats the best foundation model (CI above 0)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    return png(fig)


def figure_sensitivity(sweep: Sweep, instance: str) -> bytes:
    """A heat map per rule of a foundation model instance: mean IoU on the selection half over
    prompt x threshold; its best configuration outlined."""
    found = sweep.foundations[instance]
    plt = pyplot()
    prompts = list(dict.fromkeys(s.prompt for s in found["settings"]))
    thresholds = sorted({s.box_threshold for s in found["settings"]})
    rules = list(found["grid"])
    fig, axes = plt.subplots(1, len(rules), figsize=(max(3.0, 0.9 * len(thresholds) + 1.5) * len(rules),
                                                     0.6 * len(prompts) + 2.0), squeeze=False)
    best = found["best"]
    image = None
    for ax, rule in zip(axes[0], rules):
        values = np.array([[_value(found["grid"][rule], p, t) for t in thresholds] for p in prompts])
        image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for (row, col), value in np.ndenumerate(values):
            if not np.isnan(value):
                ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if value < 0.6 else "black")
            if (rule, Setting(prompts[row], thresholds[col])) == (best["rule"], best["setting"]):
                ax.add_patch(plt.Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
        ax.set_xticks(range(len(thresholds)), [f"{t:g}" for t in thresholds], fontsize=8)
        ax.set_yticks(range(len(prompts)), prompts, fontsize=8)
        ax.set_xlabel("threshold")
        ax.set_title(rule, fontsize=10)
    fig.colorbar(image, ax=list(axes[0]), shrink=0.8, label="mean IoU (selection half)")
    fig.suptitle(f"{instance}'s sensitivity (red: the configuration chosen)", fontsize=11, y=1.04)
    return png(fig)


def figure_cost_frontier(sweep: Sweep) -> bytes | None:
    """Mean IoU against cost per image, and against training time for the trained networks;
    the Pareto-optimal points joined."""
    if not sweep.frontier:
        return None
    plt = pyplot()
    panels = [(sweep.frontier, "cost", sweep.cost_unit)]
    if sweep.training_frontier:
        panels.append((sweep.training_frontier, "train_time_s", "training time (s)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, (points, key, label) in zip(axes[0], panels):
        scored = [p for p in points if p["mean_iou"] is not None]
        for j, p in enumerate(scored):
            ax.scatter(p[key], p["mean_iou"], s=60 if p.get("pareto") else 25, color=series_color(j),
                       edgecolor="black" if p.get("pareto") else "none", zorder=3)
            ax.annotate(p["model"], (p[key], p["mean_iou"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
        optimal = sorted((p[key], p["mean_iou"]) for p in scored if p.get("pareto"))
        if optimal:
            ax.plot(*zip(*optimal), color="black", linewidth=1, drawstyle="steps-post", label="Pareto frontier")
            ax.legend(fontsize=8, loc="lower right")
        ax.set_xlabel(label)
        ax.set_ylabel(f"mean IoU ({sweep.held_out_images} held-out images)")
        ax.grid(alpha=0.3)
    fig.suptitle("Cost and accuracy (bold: Pareto-optimal)", fontsize=11)
    fig.tight_layout()
    return png(fig)


def _value(cells: dict[Setting, float | None], prompt: str, threshold: float) -> float:
    value = cells.get(Setting(prompt, threshold))
    return np.nan if value is None else value
