"""Images/s and peak memory of each foundation pipeline at its real architecture size.

Each model is built here from a config that mirrors a real checkpoint, with random weights
(nothing is downloaded; throughput does not depend on the values), written with
`save_pretrained` into a temp folder deleted at the end, and run as segray runs it:
`LangSAMSegmenter` (a detector + a mask model, `box_threshold` 0, so every image sends its
boxes, up to `max_boxes`, to the mask model: what a real detection costs) or `Sam3Segmenter`
(`threshold` 0). Each pipeline (PIPELINES) is a row, and a ratio to today's default LangSAM.

  component     mirrors                                                                        parameters
  gdino-b       IDEA-Research/grounding-dino-base: Swin-B (128, [2,2,18,2], window 12) + BERT-base   232.3 M
  gdino-t       IDEA-Research/grounding-dino-tiny: Swin-T (96, [2,2,6,2], window 7) + BERT-base      172.3 M
  mmgdino-t     openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det: Swin-T + BERT-base   172.3 M
  owlv2-b16     google/owlv2-base-patch16-ensemble: ViT-B/16 at 960 px + CLIP text (12 layers)      155.0 M
  sam2.1-s      facebook/sam2.1-hiera-small: Hiera-S (96, [1,2,11,2])                                38.5 M
  sam2.1-l      facebook/sam2.1-hiera-large: Hiera-L (144, [2,6,36,4])                              216.9 M
  sam3-tracker  facebook/sam3's tracker (Sam3TrackerModel): SAM 3's ViT-L/14 at 1008 px + SAM heads  458.3 M
  sam3          facebook/sam3 (Sam3Model): ViT-L/14 at 1008 px + CLIP text (24 layers) + DETR heads  840.4 M

Swin and Hiera sizes as transformers' conversion scripts set them, the rest the config classes'
defaults, which are these checkpoints' (SAM2.1's 46 M and 224 M on the hub include ~7.5 M of
video memory modules that Sam2Model does not load). Processors at the checkpoints' settings:
GroundingDINO 800 / 1333, SAM2 1024, SAM 3 1008, OWLv2 960. Tokenizers are offline stand-ins
(segray.models.tiny_langsam); the text encoders keep their real vocabularies and sizes.

Each pipeline runs in its own process, one after the other, so its peak memory is its own:
the process's max RSS on the CPU (torch and transformers included), torch's
max_memory_allocated on CUDA. A warm-up batch is not timed. A pipeline that fails to build or
run is a row with its error's first line, and the others go on. The best of `--repeats` timed
passes is kept.

    python bench/bench_foundation.py --images 2 --batch-size 1 --threads 2        # all, CPU
    python bench/bench_foundation.py --images 1 --only langsam,sam3 --size small  # quick
    python bench/bench_foundation.py --images 16 --batch-size 4 --device cuda --bf16 --markdown out.md

`--size small` halves every input side (images, processors, configs) with the same layers and
widths (OWLv2 loses 1.3 % of its parameters, position embeddings). `--timeout`: per process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cv2
import torch
import transformers as t  # a lazy module: each class is imported when first used

from segray.data.synthetic import render_sample
from segray.models.base import ModelSpec, resolve_device
from segray.models.langsam import LangSAMSegmenter
from segray.models.sam3 import Sam3Segmenter
from segray.models.tiny_langsam import bert_tokenizer, clip_tokenizer
from segray.report.provenance import hardware, package_versions

BASE = "langsam"
# name: (description, components); a LangSAM pipeline is (detector, mask model).
PIPELINES: dict[str, tuple[str, list[str]]] = {
    "langsam": ("GroundingDINO-B + SAM2.1-S (LangSAM's default)", ["gdino-b", "sam2.1-s"]),
    "gdino-t": ("GroundingDINO-T + SAM2.1-S", ["gdino-t", "sam2.1-s"]),
    "mmgdino-t": ("MM-GroundingDINO-T + SAM2.1-S", ["mmgdino-t", "sam2.1-s"]),
    "owlv2": ("OWLv2-B/16 + SAM2.1-S", ["owlv2-b16", "sam2.1-s"]),
    "sam2.1-l": ("GroundingDINO-B + SAM2.1-L", ["gdino-b", "sam2.1-l"]),
    "sam3-tracker": ("GroundingDINO-B + SAM 3 tracker", ["gdino-b", "sam3-tracker"]),
    "sam3": ("SAM 3", ["sam3"]),
}
SWIN_T = {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "window_size": 7, "image_size": 224}
SWIN_B = {"embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32], "window_size": 12, "image_size": 384}
HIERA_S = {"blocks_per_stage": [1, 2, 11, 2], "global_attention_blocks": [7, 10, 13]}
HIERA_L = {"hidden_size": 144, "embed_dim_per_stage": [144, 288, 576, 1152], "num_attention_heads_per_stage": [2, 4, 8, 16],
           "blocks_per_stage": [2, 6, 36, 4], "global_attention_blocks": [23, 33, 43],
           "window_positional_embedding_background_size": [7, 7], "window_size_per_stage": [8, 4, 16, 8]}


def grounding_dino(swin: dict, scale: float, mm: bool = False) -> tuple[Any, Any]:
    """GroundingDINO (or MM-GroundingDINO): Swin + BERT-base (the config's default text model)."""
    config_class, model_class = ((t.MMGroundingDinoConfig, t.MMGroundingDinoForObjectDetection) if mm
                                 else (t.GroundingDinoConfig, t.GroundingDinoForObjectDetection))
    config = config_class(backbone_config=t.SwinConfig(**swin, out_indices=[2, 3, 4]), text_config=t.BertConfig())
    size = {"shortest_edge": round(800 * scale), "longest_edge": round(1333 * scale)}
    processor = t.GroundingDinoProcessor(t.GroundingDinoImageProcessor(size=size), bert_tokenizer())
    return model_class(config), processor


def token_ids(tokenizer: Any) -> dict[str, int]:
    return {f"{k}_token_id": getattr(tokenizer, f"{k}_token_id") for k in ("bos", "eos", "pad")}


def owlv2(scale: float) -> tuple[Any, Any]:
    """OWLv2 base patch16: the config's defaults but a 960 px vision input (as the hub's)."""
    tokenizer, side = clip_tokenizer(), round(960 * scale)
    config = t.Owlv2Config(text_config=token_ids(tokenizer), vision_config={"image_size": side})
    processor = t.Owlv2Processor(t.Owlv2ImageProcessor(size={"height": side, "width": side}), tokenizer)
    return t.Owlv2ForObjectDetection(config), processor


def sam2(hiera: dict, channels: list[int], scale: float) -> tuple[Any, Any]:
    """SAM2.1 (image model), Hiera sizes as transformers' conversion script sets them."""
    s = round(1024 * scale)
    vision = t.Sam2VisionConfig(backbone_config=t.Sam2HieraDetConfig(image_size=[s, s], **hiera),
                                backbone_channel_list=channels,
                                backbone_feature_sizes=[[s // 4] * 2, [s // 8] * 2, [s // 16] * 2])
    config = t.Sam2Config(vision_config=vision, prompt_encoder_config=t.Sam2PromptEncoderConfig(image_size=s))
    image_processor = t.Sam2ImageProcessor(size={"height": s, "width": s}, mask_size={"height": s // 4, "width": s // 4})
    return t.Sam2Model(config), t.Sam2Processor(image_processor=image_processor)


def sam3(scale: float, tracker: bool = False) -> tuple[Any, Any]:
    """SAM 3 (Sam3Model), or its tracker; the config classes' defaults are facebook/sam3's."""
    s = round(1008 * scale)
    grid = s // 14  # ViT-L/14
    vision = t.Sam3VisionConfig(backbone_config=t.Sam3ViTConfig(image_size=s),
                                backbone_feature_sizes=[[grid * 4] * 2, [grid * 2] * 2, [grid] * 2])
    images = t.Sam3ImageProcessor(size={"height": s, "width": s}, mask_size={"height": grid * 4, "width": grid * 4})
    if tracker:
        config = t.Sam3TrackerConfig(vision_config=vision,
                                     prompt_encoder_config=t.Sam3TrackerPromptEncoderConfig(image_size=s))
        return t.Sam3TrackerModel(config), t.Sam3TrackerProcessor(image_processor=images)
    tokenizer = clip_tokenizer()
    # SAM 3's text encoder (Sam3Config's default: CLIP, 1024 wide, 24 layers), the tokenizer's ids.
    text = {**t.Sam3Config().text_config.to_dict(), **token_ids(tokenizer)}
    config = t.Sam3Config(vision_config=vision, text_config=text)
    return t.Sam3Model(config), t.Sam3Processor(image_processor=images, tokenizer=tokenizer)


BUILDERS = {
    "gdino-b": lambda scale: grounding_dino(SWIN_B, scale),
    "gdino-t": lambda scale: grounding_dino(SWIN_T, scale),
    "mmgdino-t": lambda scale: grounding_dino(SWIN_T, scale, mm=True),
    "owlv2-b16": owlv2,
    "sam2.1-s": lambda scale: sam2(HIERA_S, [768, 384, 192, 96], scale),
    "sam2.1-l": lambda scale: sam2(HIERA_L, [1152, 576, 288, 144], scale),
    "sam3-tracker": lambda scale: sam3(scale, tracker=True),
    "sam3": sam3,
}


def write_components(names: list[str], root: str, scale: float) -> dict[str, dict]:
    """Child process: build each random model and its processor, save them under `root`."""
    results: dict[str, dict] = {}
    for name in names:
        try:
            torch.manual_seed(0)
            model, processor = BUILDERS[name](scale)
            model.eval().save_pretrained(Path(root) / name)
            processor.save_pretrained(Path(root) / name)
            results[name] = {"params": sum(p.numel() for p in model.parameters())}
            del model
        except Exception as e:  # noqa: BLE001 - reported as the pipelines' rows
            results[name] = {"error": first_line(e)}
    return results


def first_line(error: Exception) -> str:
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"


def run_pipeline(name: str, dirs: dict[str, str], args: argparse.Namespace) -> dict:
    """Child process: build the pipeline as segray does, time `--images` after a warm-up batch."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    components = PIPELINES[name][1]
    started = time.perf_counter()
    if name == "sam3":
        params = {"weights": dirs["sam3"], "threshold": 0.0, "bf16": args.bf16}
        model: Any = Sam3Segmenter(ModelSpec("sam3", params=params, device=device))
    else:
        params = {"detector": dirs[components[0]], "sam": dirs[components[1]], "box_threshold": 0.0, "bf16": args.bf16}
        model = LangSAMSegmenter(ModelSpec("langsam", params=params, device=device))
    load_s = time.perf_counter() - started
    size, batch = (round(1024 * args.scale), round(768 * args.scale)), args.batch_size  # generated scenes, resized
    images = [cv2.resize(render_sample(i)[0], size, interpolation=cv2.INTER_LINEAR) for i in range(args.images)]

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    model.predict(images[:batch])  # warm-up, not timed
    seconds = float("inf")
    for _ in range(args.repeats):  # the best pass: the machine may be shared
        sync()
        started = time.perf_counter()
        for i in range(0, len(images), batch):
            model.predict(images[i:i + batch])
        sync()
        seconds = min(seconds, time.perf_counter() - started)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    return {"images_s": len(images) / seconds, "peak_bytes": peak, "load_s": load_s,
            "threads": torch.get_num_threads(), "device": device}


def child(args: argparse.Namespace) -> None:
    """Run one child step, print its result (or its error's first line) as one JSON line."""
    try:
        if args.child_write:
            result = write_components(args.child_write.split(","), args.out, args.scale)
        else:
            result = run_pipeline(args.child_run, json.loads(args.dirs), args)
    except Exception as e:  # noqa: BLE001 - reported as the pipeline's row
        result = {"error": first_line(e)}
    print("RESULT " + json.dumps(result), flush=True)


def in_child(argv: list[str], timeout: float) -> dict:
    """Run this script with `argv` in a new process; its RESULT line, or why there is none."""
    try:
        proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"process exited {proc.returncode}: {last}"}


def child_options(args: argparse.Namespace) -> list[str]:
    options = ["--images", str(args.images), "--batch-size", str(args.batch_size), "--size", args.size,
               "--repeats", str(args.repeats)]
    options += ["--device", args.device] if args.device else []
    options += ["--threads", str(args.threads)] if args.threads else []
    return options + (["--bf16"] if args.bf16 else [])


def measure(names: list[str], args: argparse.Namespace, root: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """Write every component once (one process), then run each pipeline in its own process;
    a component's folder is deleted once no later pipeline needs it."""
    components = list(dict.fromkeys(c for name in names for c in PIPELINES[name][1]))
    started = time.perf_counter()
    wrote = in_child(["--child-write", ",".join(components), "--out", str(root), *child_options(args)], args.timeout)
    written = {c: wrote.get(c, wrote) for c in components}  # a crashed writer's error goes to each
    print(f"wrote {', '.join(components)} in {time.perf_counter() - started:.0f} s", flush=True)
    results: dict[str, dict] = {}
    for k, name in enumerate(names):
        parts = PIPELINES[name][1]
        errors = [f"{c}: {written[c]['error']}" for c in parts if "error" in written[c]]
        params = sum(written[c].get("params", 0) for c in parts)
        started = time.perf_counter()
        if errors:
            results[name] = {"error": "; ".join(errors), "params": params}
        else:
            dirs = json.dumps({c: str(root / c) for c in parts})
            results[name] = {**in_child(["--child-run", name, "--dirs", dirs, *child_options(args)], args.timeout),
                             "params": params, "wall_s": time.perf_counter() - started}
        print(f"{name}: {json.dumps(results[name])}", flush=True)
        for component in set(parts) - {c for n in names[k + 1:] for c in PIPELINES[n][1]}:
            shutil.rmtree(root / component, ignore_errors=True)
    return results, written


def table(results: dict[str, dict], written: dict[str, dict], args: argparse.Namespace) -> str:
    hw, versions = hardware(), package_versions(["torch", "transformers"])
    threads = next((r["threads"] for r in results.values() if "threads" in r), "?")
    devices = sorted({r["device"] for r in results.values() if "device" in r}) or [args.device or "?"]
    side = (round(1024 * args.scale), round(768 * args.scale))
    lines = [
        f"date: {datetime.now().strftime('%Y-%m-%d %H:%M')}; command: "
        f"python bench/bench_foundation.py {shlex.join(sys.argv[1:])}",
        f"hardware: {hw['cpu']}, {hw['cores']} cores, torch threads {threads}; GPUs: {', '.join(hw['gpus']) or 'none'}; "
        f"device: {', '.join(devices)}{' (bf16)' if args.bf16 else ''}; torch {versions['torch']}, "
        f"transformers {versions['transformers']}",
        f"images: {args.images} generated {side[0]}x{side[1]} RGB, batch {args.batch_size}, best of {args.repeats} "
        f"passes after a warm-up batch; "
        f"random weights, real architectures{' (inputs halved: --size small)' if args.scale != 1 else ''}; "
        f"peak memory: {'torch max_memory_allocated' if 'cuda' in devices[0] else 'max RSS of its process'}",
        "",
        "| pipeline | parameters (M) | images/s | peak memory (GiB) | images/s vs langsam | memory vs langsam |",
        "|---|---|---|---|---|---|",
    ]
    base = results.get(BASE, {})
    for name, result in results.items():
        label, params = f"{name}: {PIPELINES[name][0]}", f"{result['params'] / 1e6:.1f}"
        if "error" in result:
            lines.append(f"| {label} | {params} | failed: {result['error'].replace('|', '/')} | | | |")
            continue
        gib = result["peak_bytes"] / 2**30
        speed = f"{result['images_s'] / base['images_s']:.2f}" if "images_s" in base else "n/a"
        memory = f"{result['peak_bytes'] / base['peak_bytes']:.2f}" if "peak_bytes" in base else "n/a"
        lines.append(f"| {label} | {params} | {result['images_s']:.3f} | {gib:.2f} | {speed} | {memory} |")
    counts = ", ".join(f"{c} {w['params'] / 1e6:.1f} M" for c, w in written.items() if "params" in w)
    return "\n".join([*lines, "", f"components: {counts}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4, help="timed images per pipeline (default 4)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per predict call (default 1)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes, the best kept (default 2)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--only", help=f"comma-separated pipelines, of: {','.join(PIPELINES)}")
    parser.add_argument("--size", choices=["real", "small"], default="real",
                        help="real: 1024x768 images, the checkpoints' input sizes; small: every side halved")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per process (default 3600)")
    parser.add_argument("--markdown", help="also write the table to this Markdown file")
    for hidden in ("--child-write", "--child-run", "--out", "--dirs"):  # a child process's own
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.scale = 0.5 if args.size == "small" else 1.0
    if args.child_write or args.child_run:
        return child(args)

    names = [n.strip() for n in (args.only or ",".join(PIPELINES)).split(",") if n.strip()]
    unknown = [n for n in names if n not in PIPELINES]
    if unknown:
        raise SystemExit(f"unknown pipelines {unknown}; choose from {list(PIPELINES)}")
    with tempfile.TemporaryDirectory(prefix="bench-foundation-") as tmp:
        results, written = measure(names, args, Path(tmp))
    text = table(results, written, args)
    print("\n" + text)
    if args.markdown:
        Path(args.markdown).write_text("## Foundation pipelines (bench/bench_foundation.py)\n\n" + text + "\n")


if __name__ == "__main__":
    main()
