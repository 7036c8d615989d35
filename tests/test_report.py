"""The comparison report: statistics on crafted tables with known answers, and a small
end-to-end run directory (PNGs, Parquet rows with ROW_SCHEMA, summary.json, training.json).
No Ray."""

import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from segray.data.decode import encode_mask
from segray.data.manifest import manifest_fingerprint, read_folder
from segray.metrics import score_masks
from segray.report import IncompleteRun, write_report
from segray.report.analysis import analyze, bootstrap_means, wilcoxon_p
from segray.report.figures import png, pyplot
from segray.report.formats import figure_name, fmt_ci
from segray.report.render import REASON_CHARS, md_table, render_markdown, tables
from segray.schema import ROW_SCHEMA
from tests.conftest import job

REPO = Path(__file__).resolve().parents[1]


def crafted_rows(values: dict[str, list[float]], split="val", statuses=None, categories=None,
                 device="GPU: NVIDIA test") -> pd.DataFrame:
    """A rows table: one row per (image, model) with the given IoUs."""
    n = len(next(iter(values.values())))
    records = []
    for model, ious in values.items():
        for i, value in enumerate(ious):
            status = (statuses or {}).get((model, i), "ok")
            records.append({
                "image_id": f"img{i:03d}.png", "split": split, "category": (categories or ["Jazz"] * n)[i],
                "model": model, "model_version": f"{model}@test", "device": device, "status": status,
                "latency_ms": 10.0 + i, "iou": None if status == "error" else value,
                "dice": value, "precision": value, "recall": value, "boundary_iou": value,
                "intersection": round(100 * value), "union": 100,
            })
    return pd.DataFrame(records)


def test_known_means_and_a_model_that_always_wins():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.7, 40)
    rows = crafted_rows({"good": list(base + 0.2), "bad": list(base)})
    result = analyze(rows, resamples=500)
    assert result.models == ["bad", "good"]
    assert result.per_model["good"]["mean_iou"] == pytest.approx(base.mean() + 0.2)
    assert result.per_model["bad"]["median_iou"] == pytest.approx(np.median(base))
    assert result.per_model["good"]["pooled_iou"] == pytest.approx(np.round(100 * (base + 0.2)).sum() / 4000)
    low, high = result.per_model["bad"]["mean_iou_ci"]
    assert low < base.mean() < high
    (pair,) = result.pairs
    assert (pair["a"], pair["b"]) == ("bad", "good")
    assert pair["mean_diff"] == pytest.approx(-0.2)
    assert pair["win_rate"] == 0.0 and pair["loss_rate"] == 1.0
    assert pair["ci"][1] < 0  # the CI of bad - good excludes 0
    assert pair["ci"][0] == pytest.approx(-0.2) and pair["ci"][1] == pytest.approx(-0.2)
    assert pair["wilcoxon_p"] < 1e-6
    lat = result.latency["good"]
    assert lat["p50_ms"] == pytest.approx(np.percentile(10.0 + np.arange(40), 50))
    assert lat["usd_per_1000"] == pytest.approx(lat["mean_ms"] * 2.0 / 3600) and lat["device"] == "GPU: NVIDIA test"


def test_cpu_latencies_are_priced_per_cpu_hour_or_not_at_all():
    rows = crafted_rows({"a": [0.5, 0.6]}, device="CPU: AMD EPYC (2 threads)")
    assert analyze(rows, resamples=10).latency["a"]["usd_per_1000"] is None
    priced = analyze(rows, resamples=10, cpu_hour_usd=0.1).latency["a"]
    assert priced["usd_per_1000"] == pytest.approx(priced["mean_ms"] * 0.1 / 3600)
    assert priced["device"] == "CPU: AMD EPYC (2 threads)"


def test_every_split_is_scored_when_asked():
    rows = pd.concat([crafted_rows({"a": [0.2, 0.4]}), crafted_rows({"a": [0.6, 0.8]}, split="train")])
    rows["image_id"] = [f"img{i}" for i in range(len(rows))]
    result = analyze(rows, split="all", resamples=10)
    assert result.per_model["a"]["scored_images"] == 4 and result.per_model["a"]["mean_iou"] == pytest.approx(0.5)


def test_conventions_errors_and_no_detections():
    rows = crafted_rows(
        {"a": [0.5, 0.9, 0.0, 0.7], "b": [0.4, 0.1, 0.3, 0.2]},
        statuses={("a", 2): "no_detection", ("b", 3): "error"},
        categories=["Kata", "Kata", "Jazz", "Jazz"],
    )
    result = analyze(rows, resamples=200)
    a = result.per_model["a"]
    assert result.excluded_images == 1  # image 3: b errored, so nobody is scored on it
    assert a["scored_images"] == 3 and a["no_detection"] == 1
    assert a["mean_iou"] == pytest.approx((0.5 + 0.9 + 0.0) / 3)  # strict: no-detection counts as 0
    assert a["mean_iou_detected"] == pytest.approx((0.5 + 0.9) / 2)  # the article's way: left out
    assert result.per_model["b"]["errors"] == 1
    assert result.per_category["Kata"]["a"] == pytest.approx(0.7)
    assert result.per_category["Jazz"]["images"] == 1


def test_other_split_is_ignored_and_identical_models_tie():
    rows = pd.concat([crafted_rows({"a": [0.3, 0.6], "b": [0.3, 0.6]}),
                      crafted_rows({"a": [1.0, 1.0], "b": [0.0, 0.0]}, split="train")])
    (pair,) = analyze(rows, resamples=100).pairs
    assert pair["mean_diff"] == 0 and pair["tie_rate"] == 1.0 and pair["wilcoxon_p"] == 1.0


def test_bootstrap_is_paired_seeded_and_matches_a_loop():
    rng = np.random.default_rng(3)
    values = rng.random((50, 3))
    boot = bootstrap_means(values, resamples=300, seed=5)
    assert np.array_equal(boot, bootstrap_means(values, resamples=300, seed=5))
    assert boot.shape == (300, 3)
    # the same resample for every column: a constant offset column moves in lockstep
    shifted = bootstrap_means(np.c_[values[:, 0], values[:, 0] + 1], resamples=100, seed=1)
    assert np.allclose(shifted[:, 1] - shifted[:, 0], 1.0)
    # the spread matches the textbook standard error of the mean
    assert boot[:, 0].std() == pytest.approx(values[:, 0].std() / np.sqrt(50), rel=0.2)


def test_wilcoxon_handles_zero_differences():
    assert wilcoxon_p(np.zeros(10)) == 1.0
    assert wilcoxon_p(np.r_[np.zeros(5), np.full(20, 0.1)]) < 0.001


def test_the_foundation_models_are_ranked_together_with_their_speed_and_cost():
    base = np.linspace(0.3, 0.7, 20)
    rows = crafted_rows({"unet": list(base + 0.2), "langsam/sam_score": list(base), "langsam[a+b]/union": list(base + 0.1),
                         "sam3/semantic": list(base + 0.15), "sam3/best[human@0.3]": list(base + 0.3)})
    rows.loc[rows["model"] == "langsam/sam_score", "latency_ms"] *= 2
    analysis = analyze(rows, resamples=200, hidden=["sam3/best[human@0.3]"])  # a sweep's other setting
    header, table = tables(analysis)["foundation"]
    assert [row[:2] for row in table] == [["1", "sam3/semantic"], ["2", "langsam[a+b]/union"], ["3", "langsam/sam_score"]]
    assert header[2:] == ["mean IoU (strict)", "95% CI", "images/s per device", "latency p50 (ms)",
                          "$ per 1,000 images ($2/GPU-hour; CPU: not priced)"]
    sam3, slow = analysis.latency["sam3/semantic"], analysis.latency["langsam/sam_score"]
    assert table[0][2:] == ["0.650", fmt_ci(analysis.per_model["sam3/semantic"]["mean_iou_ci"]),
                            f"{sam3['images_per_s']:.1f}", f"{sam3['p50_ms']:.1f}", f"{sam3['usd_per_1000']:.4f}"]
    assert table[2][4:] == [f"{slow['images_per_s']:.1f}", f"{slow['p50_ms']:.1f}", f"{slow['usd_per_1000']:.4f}"]
    assert slow["images_per_s"] == pytest.approx(sam3["images_per_s"] / 2)
    md = render_markdown(analysis, {}, {}, "t")
    assert "## Foundation models ranked, with speed and cost" in md and "sam3/best[human@0.3]" not in md
    # The verdict: the best trained network against the best foundation model, whichever model that is.
    assert ("the best trained network, **unet** (0.700), against the best foundation model, **sam3/semantic** (0.650): "
            "+0.050 IoU (95% CI [0.050, 0.050]): the trained network wins.") in md


# ----------------------------------------------------------------------------- end to end

MODELS = ["langsam/sam_score", "resnet34_unet", "unet"]


def fake_run(root: Path, n_images=12, models=MODELS) -> Path:
    """A run directory as run_benchmark leaves it, with a tiny dataset of ellipse 'people'."""
    dataset, run = root / "dataset", root / "runs" / "r1"
    (dataset / "images").mkdir(parents=True)
    (dataset / "masks").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    categories = ["HipHop", "Jazz", "Kata", "Sports", "Taichi"]
    for i in range(n_images):
        name = f"{categories[i % 5]}_{categories[i % 5]}1_C0_{i:05d}.png"
        truth = np.zeros((48, 64), bool)
        cv2.ellipse(truth.view(np.uint8), (32, 24), (10, 20), 0, 0, 360, 1, -1)
        image = (rng.random((48, 64, 3)) * 80).astype(np.uint8)
        image[truth] = (200, 150, 120)
        cv2.imwrite(str(dataset / "images" / name), image[..., ::-1])
        cv2.imwrite(str(dataset / "masks" / name.replace(".png", ".jpg.png")), truth.astype(np.uint8) * 255)
        (dataset / "masks" / name).write_bytes(encode_mask(truth))
        for j, model in enumerate(models):
            status = "no_detection" if (model.startswith("langsam") and i == 3) else "ok"
            status = "error" if (model == "unet" and i == 5) else status
            pred = np.roll(truth, 2 * j + i % 3, axis=1) if status == "ok" else np.zeros_like(truth)
            scores = score_masks(pred, truth) if status != "error" else {}
            rows.append({
                "run_id": "r1", "image_id": name, "split": "val" if i < 10 else "train",
                "category": categories[i % 5], "model": model, **scores, "status": status,
                "error": "RuntimeError: boom" if status == "error" else None,
                "latency_ms": 5.0 * (j + 1), "box_score": None, "mask_score": None, "num_detections": None,
                "mask_png": encode_mask(pred) if status == "ok" else None, "model_version": f"{model}@r1",
            })
    (run / "predictions").mkdir(parents=True)
    table = pa.Table.from_pylist(rows, schema=ROW_SCHEMA)
    pq.write_table(table.slice(0, 20), run / "predictions" / "part-0.parquet", row_group_size=7)
    pq.write_table(table.slice(20), run / "predictions" / "part-1.parquet", row_group_size=7)
    checkpoint = run / "train" / "unet" / "checkpoint_000001"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(b"weights")
    history = [{"epoch": e, "train_loss": 1 / e, "val_iou": 0.5 + 0.05 * e, "epoch_time_s": 3.0} for e in range(1, 5)]
    training = {
        "unet": {"model": "unet", "checkpoint": str(checkpoint), "best_epoch": 4, "best_val_iou": 0.7,
                 "history": history, "train_time_s": 12.5},
        "resnet34_unet": {"model": "resnet34_unet", "error": "RuntimeError: no weights"},
    }
    (run / "training.json").write_text(json.dumps(training))
    summary = {"run_id": "r1", "status": "complete", "dataset": str(dataset), "dataset_root": str(dataset),
               "dataset_fingerprint": manifest_fingerprint(read_folder(str(dataset)).table),
               "manifest": {"images": n_images},
               "finished_at": "2026-11-23T00:00:00+00:00", "training": training,
               "unavailable": {"langsam": "LangSAM GroundingDINO weights unavailable: offline\nFix one of: ..."},
               "config": {"dataset": str(dataset), "models": models},
               "timeline": {"stages": {
                   "train:unet": {"rows_in": 4, "rows_out": 4, "batches": 4, "start": 1.0, "end": 13.5, "busy_s": 12.0,
                                  "nodes": ["n1"]},
                   "decode": {"rows_in": n_images, "rows_out": n_images, "batches": 2, "start": 2.0, "end": 3.0,
                              "busy_s": 0.8, "nodes": ["n1", "n2"]}}}}
    (run / "summary.json").write_text(json.dumps(summary))
    return run


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tables, self.headings, self._in = [], 0, [], None

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        self.tables += tag == "table"
        self._in = tag

    def handle_data(self, data):
        if self._in in ("h1", "h2"):
            self.headings.append(data)


def test_end_to_end_report(tmp_path):
    run = fake_run(tmp_path)
    written = write_report(str(run), worst_n=3)
    report = run / "report"
    figures = ["histograms", "ecdf", "categories", "training", "timeline"] + [f"worst_{figure_name(m)}" for m in MODELS]
    for name in figures:
        assert (report / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert written[name] == str(report / f"{name}.png")
    assert written["report.md"] == str(report / "report.md")

    page = Page()
    page.feed((report / "report.html").read_text())
    page.close()
    alts = [i["alt"] for i in page.images]
    assert sorted(alts) == sorted(figures)
    assert all(i["src"].startswith("data:image/png;base64,") for i in page.images)  # offline: nothing linked
    assert page.tables == 7
    assert "Reproducibility" in page.headings and "Run timeline" in page.headings

    md = (report / "report.md").read_text()
    for name in figures:
        assert f"]({name}.png)" in md
    for model in MODELS:
        assert f"| {model} |" in md
    assert "| 1 | langsam/sam_score |" in md  # the one foundation model, ranked with its speed and cost
    assert "HipHop" in md and "Taichi" in md
    assert "| decode | 12 | 12 | 2.0 | 3.0 | 0.8 | 2 |" in md  # the run's own timeline, a row per stage
    # The headline names what was compared; a model that could not run gets one line of its own.
    assert md.split("\n")[2].startswith("Compared: langsam/sam_score, resnet34_unet, unet. ")
    assert "- **langsam**: LangSAM GroundingDINO weights unavailable: offline\n" in md
    # The question itself: the best trained network against the best foundation model, paired.
    assert re.search(r"\*\*Foundation model or trained network:\*\* the best trained network, \*\*(unet|resnet34_unet)\*\* "
                     r"\(\d\.\d{3}\), against the best foundation model, \*\*langsam/sam_score\*\* \(\d\.\d{3}\): "
                     r"[+-]\d\.\d{3} IoU \(95% CI \[-?\d\.\d{3}, -?\d\.\d{3}\]\): "
                     r"(the trained network wins|the foundation model wins|no clear winner)\.", md.split("\n")[2])
    assert "Fix one of" not in md
    assert "<li><b>langsam</b>: LangSAM GroundingDINO weights unavailable: offline</li>" in (
        report / "report.html").read_text()
    # image 5 is an error for unet: 9 common val images
    assert "same 9 images" in md
    repro = json.loads(re.search(r"```json\n(.*?)\n```", md, re.S).group(1))
    # The one fingerprint, as summary.json records it (and the checkpoint store and results table).
    assert repro["dataset_fingerprint"] == manifest_fingerprint(read_folder(str(tmp_path / "dataset")).table)
    assert repro["dataset_images"] == 12 and repro["model_versions"]["unet"] == "unet@r1"
    assert len(repro["checkpoints"]["unet"]) == 64
    assert repro["packages"]["numpy"] == np.__version__
    assert repro["config"]["models"] == MODELS


def test_a_sam3_sweep_has_its_own_section_and_its_other_settings_stay_out_of_the_general_tables(tmp_path):
    models = ["langsam/sam_score", "sam3/semantic[person@0.5]", "sam3/semantic[person@0.7]", "unet"]
    written = write_report(str(fake_run(tmp_path, models=models)))
    assert "sam3_sensitivity" in written
    md = (tmp_path / "runs" / "r1" / "report" / "report.md").read_text()
    assert md.split("\n")[2].startswith("Compared: langsam/sam_score, sam3/semantic[person@0.5], unet. **Verdict:** "
                                         "The best foundation model is ")
    assert "## sam3's sensitivity to prompt, threshold and rule" in md
    assert "| person | 0.7 |" in md  # the sweep's other setting, in its own section
    general = md.split("## Accuracy per model")[1].split("## Worst images per model")[0]
    assert "sam3/semantic[person@0.5]" in general and "sam3/semantic[person@0.7]" not in general
    assert "worst_sam3-semantic-person-0.5-" in written and "worst_sam3-semantic-person-0.7-" not in written


def test_a_long_reason_is_cut_to_one_line_in_the_report_and_kept_whole_in_the_summary(tmp_path):
    run = fake_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    reason = "LangSAM SAM2 weights unavailable: " + "x" * 300 + "\nCause: gaierror"
    summary["unavailable"] = {"langsam": reason}
    (run / "summary.json").write_text(json.dumps(summary))
    write_report(str(run))
    line = next(line for line in (run / "report" / "report.md").read_text().splitlines() if "**langsam**" in line)
    assert line == "- **langsam**: " + reason[:REASON_CHARS - 1] + "…"
    assert json.loads((run / "summary.json").read_text())["unavailable"]["langsam"] == reason


def test_text_from_the_data_is_literal_in_markdown_and_plain_in_figures():
    """A category, prompt or error is data: Markdown shows it as written, and a figure draws
    `$\\x$` as text rather than failing to parse it as math."""
    (header, rule, row) = md_table(["model", "a|b"], [["unet", "<b>x</b> *y* $\\x$ [l](u)\nnext"]])
    assert header == "| model | a\\|b |"
    assert row == "| unet | &lt;b&gt;x&lt;/b&gt; \\*y\\* \\$\\\\x\\$ [l\\](u) next |"
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.bar(["$\\x$", "a_b^c"], [1, 2])
    ax.set_title("$\\x$ {unclosed")
    assert png(fig)[:8] == b"\x89PNG\r\n\x1a\n"


def test_job_regenerates_and_refuses_an_incomplete_run(tmp_path, capsys):
    run = fake_run(tmp_path)
    assert job("report")([str(run), "--gpu-hour-usd", "3"]) == 0
    assert str(run / "report" / "report.html") in capsys.readouterr().out
    assert "$3/GPU-hour" in (run / "report" / "report.md").read_text()

    (run / "summary.json").unlink()
    with pytest.raises(IncompleteRun):
        write_report(str(run))
    assert job("report")([str(run)]) == 1
    assert "incomplete run" in capsys.readouterr().err


def test_import_stays_light():
    heavy = ("matplotlib", "scipy", "torch", "ray")
    code = f"import sys, segray.report; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.stdout.strip() == "[]", done.stderr


def test_report_of_a_run_on_s3(tmp_path, s3_endpoint):
    """The same run uploaded to S3 (moto on loopback), dataset included: every read and
    write goes through segray.storage."""
    import boto3
    import pyarrow.fs as pafs

    from segray import storage

    boto3.client("s3").create_bucket(Bucket="segray-report")
    run = fake_run(tmp_path)
    base = "s3://segray-report"
    for name in ("summary.json", "training.json"):
        text = (run / name).read_text().replace(str(tmp_path / "dataset"), f"{base}/dataset")
        (run / name).write_text(text.replace(str(run), f"{base}/runs/r1"))
    for local, remote in ((tmp_path / "dataset", "dataset"), (run, "runs/r1")):
        fs, path = storage.resolve(f"{base}/{remote}")
        pafs.copy_files(str(local), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)

    written = write_report(f"{base}/runs/r1", worst_n=2)
    assert written["report.html"] == f"{base}/runs/r1/report/report.html"
    assert f"worst_{figure_name(MODELS[0])}" in written  # images, masks and Parquet row groups read from S3
    md = storage.read_bytes(written["report.md"]).decode()
    repro = json.loads(re.search(r"```json\n(.*?)\n```", md, re.S).group(1))
    assert len(repro["checkpoints"]["unet"]) == 64


def test_the_gallery_finds_subfolders_and_decodes_pairs_as_the_run_did(tmp_path):
    """Images in subfolders, one stored turned with an EXIF tag (its mask drawn on the
    image as shown), label-map masks whose person is 3: the gallery reads them all as the
    run did (`decode_pair` with the run's --mask-person-values)."""
    import io

    from PIL import Image

    from segray.report.figures import gallery_items
    from segray.results.read import read_rows

    dataset = tmp_path / "dataset"
    truth = np.zeros((48, 64), bool)
    truth[8:40, 4:28] = True
    labels = np.where(truth, 3, 0).astype(np.uint8)
    labels[:4] = 9  # another class: not the person
    shown = np.zeros((48, 64, 3), np.uint8)
    shown[truth] = (200, 150, 120)
    exif = Image.Exif()
    exif[0x0112] = 8  # stored turned: viewers turn it 90 degrees counter-clockwise
    files = {"day1/Jazz_a.jpg": None, "day2/deep/Kata_b.png": cv2.imencode(".png", shown[..., ::-1])[1].tobytes()}
    buffer = io.BytesIO()
    Image.fromarray(np.rot90(shown, -1).copy()).save(buffer, "JPEG", exif=exif, quality=95)
    files["day1/Jazz_a.jpg"] = buffer.getvalue()
    rows = []
    for image_id, data in files.items():
        mask_path = dataset / "masks" / (image_id.rsplit(".", 1)[0] + ".png")
        for path, content in ((dataset / "images" / image_id, data), (mask_path, cv2.imencode(".png", labels)[1].tobytes())):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        rows.append({"run_id": "r", "image_id": image_id, "split": "val", "category": "c", "model": "unet",
                     **score_masks(truth, truth), "status": "ok", "mask_png": encode_mask(truth)})
    (tmp_path / "predictions").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=ROW_SCHEMA), tmp_path / "predictions" / "part-0.parquet")
    read = read_rows(str(tmp_path / "predictions"), positions=True)

    analysis = analyze(read, resamples=10)
    items = gallery_items(read, analysis, str(dataset), 2, max_side=64, mask_person_values=[3])
    assert sorted(item["image_id"] for item in items["unet"]) == sorted(files)
    for item in items["unet"]:
        np.testing.assert_array_equal(item["truth"], truth)  # the person, not class 9
        assert item["image"].shape == (48, 64, 3)  # turned as its mask is
        assert np.abs(item["image"][truth].astype(int) - (200, 150, 120)).mean() < 10
    # Without the run's person values, {0, 3, 9} has no person.
    assert not any(item["truth"].any() for item in gallery_items(read, analysis, str(dataset), 2, max_side=64)["unet"])


def test_rows_sort_by_name_whatever_order_their_files_met_the_models_in(tmp_path):
    """Two runs that wrote the same rows in another order sort to equal frames: the rows'
    categorical columns list their categories by name, not by first appearance (a
    benchmark on S3 and its local re-evaluation once compared unequal for that alone)."""
    from segray.results.read import read_rows

    rows = [{"run_id": "r", "image_id": image, "split": "val", "category": "c", "model": model, "status": "ok",
             "iou": 0.5} for image in ("a.png", "b.png") for model in ("unet", "langsam/box_score")]
    read = []
    for name, order in (("first", rows), ("second", rows[::-1])):
        (tmp_path / name).mkdir()
        pq.write_table(pa.Table.from_pylist(order, schema=ROW_SCHEMA), tmp_path / name / "part-0.parquet")
        read.append(read_rows(str(tmp_path / name)).sort_values(["image_id", "model"]).reset_index(drop=True))
    assert list(read[0]["model"]) == ["langsam/box_score", "unet"] * 2
    assert read[0][["image_id", "model", "iou"]].equals(read[1][["image_id", "model", "iou"]])
