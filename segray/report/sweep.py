"""The report's answer to the article's question when a run sweeps (`train.fractions`, a
foundation model's prompts and thresholds: `langsam.prompts`, `langsam.box_thresholds`,
`sam3.prompts`, `sam3.thresholds`): how many labelled images a trained network needs to
beat the best foundation model, and how much each foundation model gains from tuning.

- **Held-out choice.** Each foundation model instance's best configuration (rule, prompt,
  threshold), and the best of them all, is chosen on one half of the scored images (the
  *selection* half, drawn by the run's seed) and the learning curve and the frontier are
  measured on the other half (*held out*), so that the choice does not flatter it; the
  sensitivity maps show the selection half, where the choice is made. A run without a
  foundation model holds out every image.
- **The learning curve.** Each trained network's mean IoU (95% bootstrap CI) against its
  number of training images, the best foundation model and its default configuration as
  bands, and the smallest size at which a network beats the best with a paired CI above zero.
- **Sensitivity.** Per foundation model instance (`langsam`, a pairing, `sam3`), mean IoU
  over prompt x threshold for each rule (selection half), and its default against its best.
- **The cost-accuracy frontier.** Mean IoU against $ per 1,000 images (ms per image when
  the device is not priced), and the trained networks' against their training time; the
  Pareto-optimal points (nothing else is both cheaper and better) marked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segray.config import Setting, model_of, split_training_name, variant_parts
from segray.report.analysis import Analysis, bootstrap_means, mean_of, percentile_ci
from segray.report.formats import figure_name, fmt, fmt_ci, fmt_minutes
from segray.report.variants import DEFAULT_RULES, is_foundation, run_setting_of


@dataclass
class Sweep:
    selection_images: int  # the half each foundation model's best configuration is chosen on (0: none held apart)
    held_out_images: int  # the images every number below is measured on
    curves: dict[str, list[dict[str, Any]]]  # network -> its trainings by training images
    smallest_win: dict[str, dict[str, Any] | None]  # network -> its first point that beats the best foundation model
    best: dict[str, Any] | None  # the best foundation model: name, instance, rule, setting, selection_iou, mean_iou, ci
    # instance -> its best (as `best`), its default (name, mean_iou, ci, and gap = best - default with its ci),
    # its grid (rule -> setting -> mean IoU on the selection half) and its settings
    foundations: dict[str, dict[str, Any]]
    frontier: list[dict[str, Any]]  # model, cost, mean_iou, pareto
    cost_unit: str
    training_frontier: list[dict[str, Any]] = field(default_factory=list)  # model, train_time_s, mean_iou, pareto
    verdict: str = ""


def halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of n images, drawn by `seed`: (selection, held out), each sorted.
    With fewer than 2 images, nothing can be held apart: both are every image."""
    if n < 2:
        every = np.arange(n)
        return every, every
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2:])


def pareto(points: list[tuple[float, float]]) -> list[bool]:
    """For each (cost, IoU): True when no other point is at most as costly and at least as
    good, and better in one of the two."""
    return [not any(c <= cost and i >= iou and (c < cost or i > iou) for c, i in points) for cost, iou in points]


def analyze_sweep(analysis: Analysis, defaults: dict[str, Setting]) -> Sweep | None:
    """The section's numbers, or None when the run swept nothing (one training per network
    and one setting per foundation model). `defaults` are the run's own settings (`run_settings`)."""
    if not len(analysis.iou):  # no image scored by every model: nothing to compare
        return None
    foundation = {}  # variant -> (instance, rule, setting) of the foundation models with a run setting
    for model in analysis.models:
        instance, rule, setting = variant_parts(model)
        if is_foundation(model) and rule and run_setting_of(instance, defaults) is not None:
            foundation[model] = (instance, rule, setting or run_setting_of(instance, defaults))
    settings: dict[str, list[Setting]] = {}
    for instance, _, setting in foundation.values():
        settings.setdefault(instance, []).append(setting)
    for instance, found in settings.items():
        first = run_setting_of(instance, defaults).prompt  # the run's own prompt first
        settings[instance] = sorted(set(found), key=lambda s: (s.prompt != first, s.prompt, s.box_threshold))
    trained = [m for m in analysis.models if (analysis.training.get(m) or {}).get("train_images")]
    networks = [split_training_name(m)[0] for m in trained]
    if all(len(s) < 2 for s in settings.values()) and all(networks.count(n) < 2 for n in networks):
        return None
    column = {m: j for j, m in enumerate(analysis.models)}
    seed, resamples = analysis.settings.get("seed", 0), analysis.settings.get("resamples", 2000)
    selection, held = halves(len(analysis.iou), seed) if foundation else (np.arange(0), np.arange(len(analysis.iou)))
    iou = analysis.iou[held]
    boot = bootstrap_means(iou, resamples, seed)

    def measured(model: str) -> dict[str, Any]:
        j = column[model]
        return {"name": model, "mean_iou": mean_of(iou[:, j]), "ci": percentile_ci(boot[:, j]) if len(iou) else (None, None)}

    def versus(a: str, b: str) -> dict[str, Any]:
        diff = iou[:, column[a]] - iou[:, column[b]]
        ci = percentile_ci(boot[:, column[a]] - boot[:, column[b]]) if len(diff) else (None, None)
        return {"diff": mean_of(diff), "diff_ci": ci}

    chosen_on = analysis.iou[selection]
    on_selection = {m: mean_of(chosen_on[:, column[m]]) for m in foundation}
    foundations = {}
    for instance in settings:
        models = [m for m, parts in foundation.items() if parts[0] == instance]
        grid: dict[str, dict[Setting, float | None]] = {}
        for model in models:
            grid.setdefault(foundation[model][1], {})[foundation[model][2]] = on_selection[model]
        name = max(models, key=lambda m: (on_selection[m] if on_selection[m] is not None else -1, m))
        best = measured(name) | {"selection_iou": on_selection[name], "instance": instance, "rule": foundation[name][1],
                                 "setting": foundation[name][2]}
        own = (instance, DEFAULT_RULES.get(model_of(instance)), run_setting_of(instance, defaults))
        default_name = next((m for m in models if foundation[m] == own), None)
        default = None
        if default_name is not None:
            gap = versus(name, default_name)
            default = measured(default_name) | {"gap": gap["diff"], "gap_ci": gap["diff_ci"]}
        foundations[instance] = {"best": best, "default": default, "grid": grid, "settings": settings[instance]}
    best = max((f["best"] for f in foundations.values()), default=None,
               key=lambda b: (b["selection_iou"] if b["selection_iou"] is not None else -1, b["name"]))

    curves: dict[str, list[dict[str, Any]]] = {}
    for model, network in zip(trained, networks):
        fraction = split_training_name(model)[1] or 1.0
        point = measured(model) | {"images": int(analysis.training[model]["train_images"]), "fraction": fraction,
                                   "train_time_s": analysis.training[model].get("train_time_s")}
        if best is not None:
            point |= versus(model, best["name"])
            point["beats"] = point["diff_ci"][0] is not None and point["diff_ci"][0] > 0
        curves.setdefault(network, []).append(point)
    for points in curves.values():
        points.sort(key=lambda p: p["images"])
    smallest_win = {n: next((p for p in points if p.get("beats")), None) for n, points in curves.items()}

    candidates = [*trained, *[m["name"] for f in foundations.values() for m in (f["best"], f["default"]) if m is not None]]
    candidates = list(dict.fromkeys(candidates))
    priced = all(analysis.latency[m]["usd_per_1000"] is not None for m in candidates)
    unit = "$ per 1,000 images" if priced else "ms per image (the device is not priced)"
    costs = [analysis.latency[m]["usd_per_1000" if priced else "mean_ms"] for m in candidates]
    frontier = [{"model": m, "cost": c, "mean_iou": measured(m)["mean_iou"]}
                for m, c in zip(candidates, costs) if c is not None]
    _mark_pareto(frontier, "cost")
    training_frontier = [{"model": p["name"], "train_time_s": p["train_time_s"], "mean_iou": p["mean_iou"]}
                         for points in curves.values() for p in points if p["train_time_s"] is not None]
    _mark_pareto(training_frontier, "train_time_s")
    sweep = Sweep(len(selection) if len(selection) < len(analysis.iou) else 0, len(held), curves, smallest_win,
                  best, foundations, frontier, unit, training_frontier)
    sweep.verdict = verdict(sweep)
    return sweep


def _mark_pareto(points: list[dict[str, Any]], cost: str) -> None:
    scored = [p for p in points if p["mean_iou"] is not None]
    for point, optimal in zip(scored, pareto([(p[cost], p["mean_iou"]) for p in scored])):
        point["pareto"] = optimal


def verdict(sweep: Sweep) -> str:
    """The section's answer in one sentence, with its numbers."""
    held = f"{sweep.held_out_images} held-out images"
    best = sweep.best
    if best is not None and sweep.curves:
        against = f"the best foundation model, {best['name']} ({fmt(best['mean_iou'])} mean IoU on the {held})"
        wins = [f"{network} beats it from {p['images']} training images ({p['fraction']:.0%} of the train split: "
                f"{fmt(p['mean_iou'])}, {p['diff']:+.3f} IoU, 95% CI {fmt_ci(p['diff_ci'])})"
                for network, p in sweep.smallest_win.items() if p is not None]
        most = {network: points[-1]["images"] for network, points in sweep.curves.items()}
        if wins:
            short = [f"{network} does not with up to {most[network]} (not reached)"
                     for network, p in sweep.smallest_win.items() if p is None]
            return f"Against {against}, " + "; ".join(wins + short) + "."
        closest = max((p for points in sweep.curves.values() for p in points), key=lambda p: p["diff"] or -9)
        return (f"No trained network beats {against} with up to {max(most.values())} training images (not reached): "
                f"the closest, {closest['name']}, is {closest['diff']:+.3f} IoU (95% CI {fmt_ci(closest['diff_ci'])}).")
    if best is not None:
        default = sweep.foundations[best["instance"]]["default"]
        gap = "" if default is None else ", its default configuration" if default["name"] == best["name"] else (
            f", {default['gap']:+.3f} IoU (95% CI {fmt_ci(default['gap_ci'])}) against its default {default['name']}")
        return f"The best foundation model is {best['name']}: {fmt(best['mean_iou'])} mean IoU on the {held}{gap}."
    return "; ".join(f"{network}'s mean IoU goes from {fmt(points[0]['mean_iou'])} with {points[0]['images']} training "
                     f"images to {fmt(points[-1]['mean_iou'])} with {points[-1]['images']}"
                     for network, points in sweep.curves.items()) + f" ({held})."


def swept(sweep: Sweep) -> dict[str, dict[str, Any]]:
    """The foundation models that swept prompts or thresholds: each gets its sensitivity."""
    return {instance: found for instance, found in sweep.foundations.items() if len(found["settings"]) > 1}


def sensitivity_figure(instance: str) -> str:
    """The name of an instance's sensitivity figure: `langsam_sensitivity`, `sam3_sensitivity`."""
    return f"{figure_name(instance)}_sensitivity"


def sweep_sections(sweep: Sweep) -> list[tuple[str, str, tuple[list[str], list[list[str]]], str]]:
    """The section's parts that have something to show: (heading, note, table, figure name)."""
    held = (f"Measured on {sweep.held_out_images} held-out images: each foundation model's best configuration was "
            f"chosen on the other {sweep.selection_images} (a seeded half of the scored images), so the choice does "
            "not flatter it." if sweep.selection_images else f"Measured on all {sweep.held_out_images} scored images.")
    best = (sweep.best or {}).get("name", "the best foundation model")
    curve = (["network", "training", "training images", "share of train split", "mean IoU", "95% CI",
              f"− {best}", "95% CI", "beats it"],
             [[network, p["name"], str(p["images"]), f"{p['fraction']:.0%}", fmt(p["mean_iou"]), fmt_ci(p["ci"]),
               fmt(p.get("diff")), fmt_ci(p.get("diff_ci", (None, None))), {True: "yes", False: "no"}.get(p.get("beats"), "–")]
              for network, points in sweep.curves.items() for p in points])
    frontier = (["model", sweep.cost_unit, "training time", "mean IoU", "Pareto-optimal"],
                [[p["model"], fmt(p["cost"], 4), fmt_minutes(_train_time(sweep, p["model"])), fmt(p["mean_iou"]),
                  "yes" if p.get("pareto") else ""] for p in sweep.frontier])
    parts = [
        ("How much labelled data does a trained network need?",
         f"{held} The band to beat is the best foundation model, {best}, chosen among every foundation model's "
         "rules and settings. Each training on a share of the train split uses a nested, seeded "
         "subset (each smaller one inside the larger ones) and goes over it round(1/share) times per epoch, so every "
         "training takes about as many steps. *Beats it* means the paired 95% bootstrap CI of the difference is "
         "above zero, each size tested on its own (no correction for testing several); the first size that does is "
         "named, whether or not every larger one does too. Each network's checkpoint (its best epoch) was chosen "
         "on the whole validation split, as the article did, so that choice has seen the held-out half.",
         curve, "learning_curve"),
        *[(f"{instance}'s sensitivity to prompt, threshold and rule", _sensitivity_note(found),
           _sensitivity_table(found), sensitivity_figure(instance)) for instance, found in swept(sweep).items()],
        ("Cost and accuracy", f"{held} Cost is {sweep.cost_unit}, measured as in *Speed and cost*; in a sweep "
         "it is the sweep's (every setting of a model shares its forwards), more than one configuration alone costs. "
         "Each foundation model's best and default configurations are shown. "
         "Pareto-optimal: no other model is both cheaper and more accurate.", frontier, "cost_frontier"),
    ]
    return [part for part in parts if part[2][1]]


def _sensitivity_table(found: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Mean IoU on the selection half: a row per setting, a column per rule; ★ at the best."""
    rules, best = list(found["grid"]), found["best"]
    return (["prompt", "threshold", *rules],
            [[s.prompt, f"{s.box_threshold:g}",
              *[fmt(found["grid"][r].get(s)) + (" ★" if (r, s) == (best["rule"], best["setting"]) else "") for r in rules]]
             for s in found["settings"]])


def _sensitivity_note(found: dict[str, Any]) -> str:
    best, default = found["best"], found["default"]
    text = (f"Mean IoU on the selection half per rule (columns) and prompt × threshold (rows); ★ marks the best "
            f"configuration, {best['name']}")
    if default is None:
        return text + "."
    if default["name"] == best["name"]:
        return text + f", its default: on the held-out half {fmt(best['mean_iou'])}."
    return text + (f": on the held-out half {fmt(best['mean_iou'])}, and the default {default['name']} "
                   f"{fmt(default['mean_iou'])} ({default['gap']:+.3f} IoU from the best, 95% CI "
                   f"{fmt_ci(default['gap_ci'])}).")


def _train_time(sweep: Sweep, model: str) -> float | None:
    return next((p["train_time_s"] for p in sweep.training_frontier if p["model"] == model), None)
