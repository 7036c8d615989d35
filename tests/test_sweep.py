"""The data/tuning sweep: trainings on nested subsets of the train split beside a
LangSAM prompt x threshold sweep, and the report section that answers the article's question."""

import html
import re

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from segray.cli import job_config, trained_models
from segray.config import variant_parts
from segray.errors import SettingsError
from segray.models.checkpoint import read_meta
from segray.models.langsam_rules import DEFAULT_SETTING, Setting
from segray.pipeline import print_summary
from segray.report.analysis import analyze
from segray.report.sweep import analyze_sweep, halves, pareto, sweep_sections
from segray.report.sweep_figures import sweep_figures
from segray.report.variants import is_foundation, other_sweep_settings, run_settings
from segray.settings import load
from segray.train import passes_per_epoch, training_rows
from tests.conftest import job
from tests.test_report import crafted_rows


def manifest_of(n: int) -> pd.DataFrame:
    """A manifest of n pairs (no files: `training_rows` only orders and cuts rows)."""
    ids = [f"img{i:03d}" for i in range(n)]
    return pd.DataFrame({"image_id": ids, "image_uri": [f"/d/images/{i}.png" for i in ids],
                         "mask_uri": [f"/d/masks/{i}.png" for i in ids],
                         "split": ["val" if i % 5 == 0 else "train" for i in range(n)]})


def test_training_subsets_are_nested_and_the_same_on_every_rerun():
    manifest = manifest_of(100)
    fractions = [0.05, 0.1, 0.25, 0.5, 1.0]
    subsets = [list(training_rows(manifest, seed=3, fraction=f)["train"]["image_id"]) for f in fractions]
    assert [len(s) for s in subsets] == [4, 8, 20, 40, 80]
    for smaller, larger in zip(subsets, subsets[1:]):
        assert larger[:len(smaller)] == smaller  # nested: each subset is a prefix of the larger
    assert subsets == [list(training_rows(manifest, seed=3, fraction=f)["train"]["image_id"]) for f in fractions]
    assert list(training_rows(manifest, seed=4, fraction=0.25)["train"]["image_id"]) != subsets[2]
    # Every fraction validates on the same images; fraction 1 is the plain training's split.
    vals = {tuple(training_rows(manifest, seed=3, fraction=f)["val"]["image_id"]) for f in [*fractions, None]}
    assert len(vals) == 1 and len(next(iter(vals))) == 20
    assert list(training_rows(manifest, seed=3)["train"]["image_id"]) == subsets[-1]
    assert len(training_rows(manifest, seed=3, fraction=0.001)["train"]) == 1  # never empty


def test_a_subset_trains_as_many_steps_as_the_whole_split():
    assert [passes_per_epoch(f) for f in (None, 1.0, 0.5, 0.25, 0.3, 0.05)] == [1, 1, 2, 4, 3, 20]


def test_each_fraction_is_its_own_model_in_the_rows_the_training_and_the_store(shared_run, tmp_path):
    """The shared run trains each network on the whole train split and on half of it."""
    out = shared_run.out
    assert shared_run.status == 0
    summary = shared_run.read("summary.json")
    assert summary["status"] == "complete"
    train = summary["manifest"]["train"]
    names = {"unet": (train, 1), "unet[frac=0.5]": (train // 2, 2),
             "resnet34_unet": (train, 1), "resnet34_unet[frac=0.5]": (train // 2, 2)}
    training = shared_run.read("training.json")
    assert set(training) == set(names)
    for name, (images, passes) in names.items():
        assert (training[name]["train_images"], training[name]["passes_per_epoch"]) == (images, passes)
        assert training[name]["version"] == f"{name}@shared"
        assert summary["models"][name]["model_version"] == f"{name}@shared"
        assert (out / "store" / name / "shared" / "record.json").exists()
    assert read_meta(training["unet[frac=0.5]"]["checkpoint"])["train_fraction"] == 0.5
    rows = pq.read_table(shared_run.run / "predictions").to_pandas()
    assert rows.groupby("model")["image_id"].nunique().eq(20).all()

    # The store's subset version evaluates again under its own name, with the same rows.
    again = tmp_path / "again"
    assert job("evaluate")([*shared_run.dataset_options(), "--output", str(again), "--run-id", "frac",
                            "--models", "unet[frac=0.5]", "--checkpoint-store", str(out / "store")]) == 0
    evaluated = pq.read_table(again / "frac" / "predictions").to_pandas()
    assert set(evaluated["model"]) == {"unet[frac=0.5]"}
    assert set(evaluated["model_version"]) == {"unet[frac=0.5]@shared"}
    mine = rows[rows["model"] == "unet[frac=0.5]"].set_index("image_id")["iou"].sort_index()
    assert evaluated.set_index("image_id")["iou"].sort_index().to_numpy() == pytest.approx(mine.to_numpy())


RUN_SETTINGS = {"langsam": DEFAULT_SETTING, "sam3": Setting("person", 0.5)}  # the run's own settings


def crafted_sweep(trained: dict[str, list[float]], foundation: dict[str, list[float]], images: dict[str, int]):
    """The sweep analysis of crafted rows: trained models with their training images, and
    foundation model variants (the run's own settings are person.@0.3 and SAM 3's person@0.5)."""
    rows = crafted_rows({**trained, **foundation})
    training = {name: {"train_images": images[name], "train_time_s": 60.0 * images[name], "history": []}
                for name in trained}
    return analyze_sweep(analyze(rows, training=training, resamples=500), RUN_SETTINGS)


def test_langsams_best_is_chosen_on_one_half_and_reported_on_the_other():
    selection, held = halves(40, seed=0)
    assert len(selection) == 20 and len(held) == 20 and not set(selection) & set(held)
    assert sorted([*selection, *held]) == list(range(40))
    assert (halves(40, seed=0)[0] == selection).all() and not (halves(40, seed=1)[0] == selection).all()
    # "a" is better on the selection half only, "b" on the held-out half only: "a" is chosen,
    # and reported with its held-out score.
    a, b = np.full(40, 0.5), np.full(40, 0.5)
    a[selection], b[held] = 0.9, 0.8
    sweep = crafted_sweep({}, {"langsam/sam_score[person.@0.3]": list(b),
                               "langsam/sam_score[human.@0.3]": list(a)}, {})
    assert sweep.selection_images == sweep.held_out_images == 20
    assert sweep.best["name"] == "langsam/sam_score[human.@0.3]"
    assert sweep.best["selection_iou"] == pytest.approx(0.9) and sweep.best["mean_iou"] == pytest.approx(0.5)
    langsam = sweep.foundations["langsam"]
    assert langsam["best"] == sweep.best
    assert langsam["default"]["name"] == "langsam/sam_score[person.@0.3]"
    assert langsam["default"]["gap"] == pytest.approx(-0.3)  # the default is better where it counts
    assert langsam["grid"]["sam_score"] == {Setting("person.", 0.3): pytest.approx(0.5),
                                            Setting("human.", 0.3): pytest.approx(0.9)}


def test_the_learning_curve_finds_the_smallest_training_set_that_beats_langsam():
    base = np.random.default_rng(0).uniform(0.4, 0.8, 40)
    langsam = {"langsam/sam_score[person.@0.3]": list(base), "langsam/union[person.@0.3]": list(base - 0.2)}
    trained = {"unet[frac=0.25]": list(base - 0.1), "unet[frac=0.5]": list(base + 0.05), "unet": list(base + 0.1)}
    sweep = crafted_sweep(trained, langsam, {"unet[frac=0.25]": 25, "unet[frac=0.5]": 50, "unet": 100})
    assert [p["images"] for p in sweep.curves["unet"]] == [25, 50, 100]
    assert [p["beats"] for p in sweep.curves["unet"]] == [False, True, True]
    assert sweep.smallest_win["unet"]["name"] == "unet[frac=0.5]"
    assert sweep.curves["unet"][1]["diff"] == pytest.approx(0.05)
    assert sweep.verdict.startswith("Against the best foundation model, langsam/sam_score[person.@0.3]")
    assert "unet beats it from 50 training images (50% of the train split" in sweep.verdict
    # Cost: every point priced on a GPU; the best network and LangSAM share a cost here, so
    # only the more accurate is Pareto-optimal.
    assert sweep.cost_unit == "$ per 1,000 images"
    assert {p["model"] for p in sweep.frontier if p.get("pareto")} == {"unet"}

    short = crafted_sweep({"unet[frac=0.5]": list(base - 0.1), "unet": list(base - 0.01)}, langsam,
                          {"unet[frac=0.5]": 50, "unet": 100})
    assert short.smallest_win == {"unet": None}
    assert short.verdict.startswith("No trained network beats the best foundation model")
    assert "with up to 100 training images (not reached): the closest, unet, is -0.010 IoU" in short.verdict


def test_the_band_to_beat_is_the_best_foundation_model_of_langsam_its_pairings_and_sam3():
    """SAM 3 swept like LangSAM: each instance gets its grid, its best chosen on the selection
    half and its default's gap; the best of all is the learning curve's band."""
    selection, held = halves(40, seed=0)
    base = np.full(40, 0.5)
    sam3_best = base.copy()
    sam3_best[selection], sam3_best[held] = 0.95, 0.7
    foundation = {"langsam/sam_score": list(base), "langsam/union": list(base - 0.1),
                  "langsam[a+b]/sam_score": list(base + 0.1), "langsam[a+b]/union": list(base),
                  "sam3/semantic[person@0.5]": list(base + 0.05), "sam3/best[person@0.5]": list(base),
                  "sam3/semantic[human@0.5]": list(base), "sam3/best[human@0.5]": list(sam3_best)}
    sweep = crafted_sweep({"unet[frac=0.5]": list(base + 0.1), "unet": list(base + 0.3)}, foundation,
                          {"unet[frac=0.5]": 50, "unet": 100})
    assert list(sweep.foundations) == ["langsam", "langsam[a+b]", "sam3"]
    assert sweep.best["name"] == "sam3/best[human@0.5]" and sweep.best["instance"] == "sam3"
    assert sweep.best["selection_iou"] == pytest.approx(0.95) and sweep.best["mean_iou"] == pytest.approx(0.7)
    sam3 = sweep.foundations["sam3"]
    assert sam3["settings"] == [Setting("person", 0.5), Setting("human", 0.5)]  # the run's own prompt first
    assert sam3["grid"]["best"] == {Setting("person", 0.5): pytest.approx(0.5), Setting("human", 0.5): pytest.approx(0.95)}
    assert sam3["default"]["name"] == "sam3/semantic[person@0.5]"  # SAM 3's semantic map at the run's setting
    assert sam3["default"]["gap"] == pytest.approx(0.7 - 0.55)
    assert sweep.foundations["langsam[a+b]"]["best"]["name"] == "langsam[a+b]/sam_score"
    assert sweep.foundations["langsam[a+b]"]["default"]["gap"] == 0  # a pairing's default is langsam's rule
    # The curve is measured against SAM 3's best: unet[frac=0.5] is 0.1 below it, unet 0.1 above.
    assert [p["beats"] for p in sweep.curves["unet"]] == [False, True]
    assert sweep.verdict.startswith("Against the best foundation model, sam3/best[human@0.5] (0.700 mean IoU on the "
                                    "20 held-out images), unet beats it from 100 training images")
    parts = {heading: (table, figure) for heading, _, table, figure in sweep_sections(sweep)}
    # Only SAM 3 swept its settings: LangSAM and its pairing, one setting each, have no sensitivity.
    assert [h for h in parts if "sensitivity" in h] == ["sam3's sensitivity to prompt, threshold and rule"]
    table, figure = parts["sam3's sensitivity to prompt, threshold and rule"]
    assert figure == "sam3_sensitivity"
    assert table == (["prompt", "threshold", "best", "semantic"],
                     [["person", "0.5", "0.500", "0.550"], ["human", "0.5", "0.950 ★", "0.500"]])
    assert parts["How much labelled data does a trained network need?"][0][0][6] == "− sam3/best[human@0.5]"
    frontier = {p["model"] for p in sweep.frontier}
    assert {"sam3/best[human@0.5]", "sam3/semantic[person@0.5]", "langsam[a+b]/sam_score"} <= frontier
    drawn = sweep_figures(sweep)
    assert set(drawn) == {"learning_curve", "cost_frontier", "sam3_sensitivity"}
    assert all(png[:8] == b"\x89PNG\r\n\x1a\n" for png in drawn.values())


def test_a_sam3_sweep_alone_is_a_sweep_and_its_other_settings_are_hidden():
    base = list(np.linspace(0.3, 0.9, 10))
    foundation = {"sam3/semantic[person@0.5]": base, "sam3/semantic[person@0.7]": base, "langsam/sam_score": base}
    sweep = crafted_sweep({"unet": base}, foundation, {"unet": 100})
    assert sweep is not None and sweep.foundations["sam3"]["settings"] == [Setting("person", 0.5), Setting("person", 0.7)]
    assert sweep.verdict.startswith("No trained network beats the best foundation model")
    models = ["unet", "unet[frac=0.5]", "langsam/union", "langsam/union[person.@0.3]", "langsam/union[human.@0.3]",
              "langsam[a+b]/union[person.@0.3]", "langsam[a+b]/union[person.@0.2]", "sam3/best", "sam3/best[person@0.5]",
              "sam3/best[person@0.7]", "sam3/semantic[human@0.5]"]
    assert other_sweep_settings(models, RUN_SETTINGS) == [
        "langsam/union[human.@0.3]", "langsam[a+b]/union[person.@0.2]", "sam3/best[person@0.7]", "sam3/semantic[human@0.5]"]


def test_the_runs_own_settings_and_the_parts_of_a_variant_name():
    assert run_settings({}) == {"langsam": DEFAULT_SETTING, "sam3": Setting("person", 0.5)}
    config = {"langsam": {"prompt": "Human", "box_threshold": 0.2, "prompts": ["person."]},
              "sam3": {"prompt": " A Person. ", "threshold": 0.4, "thresholds": [0.6], "weights": "x"}}
    assert run_settings(config) == {"langsam": Setting("human.", 0.2), "sam3": Setting("a person", 0.4)}
    assert variant_parts("sam3/best[a person@0.4]") == ("sam3", "best", Setting("a person", 0.4))
    assert variant_parts("langsam[gdino-tiny+sam2.1-hiera-tiny]/union") == ("langsam[gdino-tiny+sam2.1-hiera-tiny]",
                                                                           "union", None)
    assert variant_parts("langsam/sam_score[a@b.@0.25]") == ("langsam", "sam_score", Setting("a@b.", 0.25))
    assert variant_parts("unet[frac=0.25]") == ("unet[frac=0.25]", "", None)
    assert [is_foundation(m) for m in ("langsam/union", "langsam[a+b]/best", "sam3/best", "unet", "resnet34_unet[frac=0.5]")] \
        == [True, True, True, False, False]


def test_a_run_without_a_sweep_has_no_sweep_section():
    base = list(np.linspace(0.3, 0.9, 10))
    assert crafted_sweep({"unet": base}, {"langsam/sam_score": base, "langsam/union": base}, {"unet": 100}) is None
    assert crafted_sweep({"unet": base}, {"sam3/best": base, "langsam[a+b]/union": base}, {"unet": 100}) is None


def test_pareto_keeps_what_nothing_else_beats_on_both_cost_and_accuracy():
    assert pareto([(1, 0.5), (2, 0.7), (3, 0.6), (2, 0.7), (0.5, 0.1)]) == [True, True, False, True, True]


def test_the_sweeps_report_answers_with_three_figures_and_a_verdict(shared_run):
    assert shared_run.status == 0
    report = shared_run.run / "report"
    page = (report / "report.html").read_text()
    for figure in ("learning_curve", "langsam_sensitivity", "cost_frontier"):
        assert f"<img alt='{figure}' src='data:image/png;base64," in page
        assert (report / f"{figure}.png").stat().st_size > 1000
    text = html.unescape(page)
    verdict = re.search(r"<b>Verdict:</b> (.*?) On the val split", text).group(1)
    assert verdict.startswith(("Against the best foundation model, langsam/", "No trained network beats the best"))
    val = shared_run.read("summary.json")["manifest"]["val"]
    assert f"on the {val - val // 2} held-out images" in verdict and "unet" in verdict
    assert f"each foundation model's best configuration was chosen on the other {val // 2}" in text
    assert "<h2>Foundation models ranked, with speed and cost</h2>" in page
    # The sweep's other settings are in its own section, not in every table and gallery.
    assert "alt='worst_langsam-sam_score-person.-0.0-'" in page and "alt='worst_langsam-sam_score-human" not in page
    accuracy = text.split("<h2>Accuracy per model</h2>")[1].split("<h2>")[0]
    assert "langsam/union[person.@0.0]" in accuracy and "langsam/union[human.@0.999]" not in accuracy


def test_the_console_leaves_the_other_sweep_settings_to_the_report(capsys):
    scores = {"images": 4, "errors": 0, "no_detection": 0, "scored_images": 4, "mean_iou": 0.5, "mean_iou_detected": 0.5}
    names = ["langsam/union[human.@0.3]", "langsam/union[person.@0.2]", "langsam/union[person.@0.3]", "unet",
             "unet[frac=0.5]"]
    print_summary({"config": {"langsam": {"prompt": "Person", "box_threshold": 0.3}},
                   "models": {name: scores for name in names}, "split": "val", "unavailable": {},
                   "masks": {"ambiguous": {"count": 0, "files": []}},
                   "rows": {"written": 20, "expected": 20, "errors": 0}, "status": "complete"})
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[3:6]] == ["langsam/union[person.@0.3]", "unet", "unet[frac=0.5]"]
    assert lines[6] == "(and 2 variants of other sweep settings: in summary.json and the report)"


def test_a_training_name_is_one_model_name_in_every_option(tmp_path):
    config = load("evaluate", ["--checkpoint-store", str(tmp_path), "--version", "unet[frac=0.25]=latest",
                               "--checkpoint", "unet[frac=0.5]=/ckpt/a=b"])
    trained = trained_models(config, "all")
    assert trained.selectors == {"unet[frac=0.25]": "latest"}
    assert trained.checkpoints == {"unet[frac=0.5]": "/ckpt/a=b"}
    assert load("benchmark", ["--train-fractions", "0.1,1"]).train.fractions == [0.1, 1.0]
    with pytest.raises(SettingsError):  # a name keeps 6 significant digits: 0.1234567 would train as 0.123457
        load("benchmark", ["--train-fractions", "0.1234567"])
    with pytest.raises(SettingsError):
        load("benchmark", ["--train-fractions", "0,0.5"])
    for name, why in (("langsam[frac=0.5]", "langsam is not trained, so it has no training on a share of a train split"),
                      ("unet[frac=x]", "'unet[frac=x]' is not a training name: expected MODEL or MODEL[frac=F]")):
        with pytest.raises(SettingsError, match=re.escape(why)):
            load("evaluate", ["--models", name])


def test_a_relative_dataset_or_weights_folder_reaches_the_workers_as_an_absolute_path(tmp_path, monkeypatch):
    """Under `ray job submit --working-dir`, Ray's workers run in a copy of the job's directory
    without its ignored files: a folder named relative to it must reach them absolute."""
    for folder in ("weights/tiny/grounding-dino", "weights/tiny/sam2", "mads"):
        (tmp_path / folder).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    config = job_config("benchmark", ["--dataset", "mads", "--langsam-detector", "weights/tiny/grounding-dino",
                                      "--langsam-sam", "weights/tiny/sam2"])
    assert config.data.dataset == str(tmp_path / "mads")
    langsam = config.params("langsam")
    assert (langsam["detector"], langsam["sam"]) == (str(tmp_path / "weights/tiny/grounding-dino"),
                                                     str(tmp_path / "weights/tiny/sam2"))
    hub = job_config("benchmark", ["--langsam-sam", "facebook/sam2.1-hiera-small"])
    assert hub.langsam.sam == "facebook/sam2.1-hiera-small"
    assert hub.data.dataset == "kaggle:tapakah68/segmentation-full-body-mads-dataset"
