#!/usr/bin/env bash
# The GPU check, one prepared command (under 8 minutes on one GPU):
#   1. the demo-sized benchmark on CUDA: AMP training of both UNets, GPU actor pools,
#      LangSAM and SAM 3 with tiny weights in bf16, both evaluated while the UNets train;
#   2. images/s of each model alone at the article's size (256 px, batch 32) with GPU
#      utilisation (bench/bench_models.py);
#   3. images/s and peak GPU memory of each foundation pipeline at its real architecture
#      size, random weights, bf16, each as a ratio to LangSAM's default (bench/bench_foundation.py);
# and writes them as Markdown to $OUT/gpu_check.md (OUT defaults to ./gpu-check).
#
#   bash bench/gpu_check.sh             # on a GPU machine
#   bash bench/gpu_check.sh --dry-run   # the same steps on the CPU, CI-sized (about 5 minutes here)
#
# PYTHON picks the interpreter [default: `uv run python` when uv is installed, else python3].
set -euo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
[[ "${1:-}" == "--dry-run" ]] && DRY_RUN=1
OUT="${OUT:-gpu-check}"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
if [[ -z "${PYTHON:-}" ]]; then
    if command -v uv >/dev/null 2>&1; then PYTHON="uv run python"; else PYTHON=python3; fi
fi
export NO_ALBUMENTATIONS_UPDATE=1 RAY_AUTH_MODE=disabled PYTHONUNBUFFERED=1

$PYTHON -m segray.models.tiny_langsam "$WORK/tiny" >/dev/null
LANGSAM=(--langsam-detector "$WORK/tiny/grounding-dino" --langsam-sam "$WORK/tiny/sam2")

if [[ $DRY_RUN == 1 ]]; then
    DEMO=(--dataset synthetic:16 --image-size 64 --unet-epochs 1 --resnet-epochs 1 --no-gpu)
    MODELS=(--size 64 --batch 2 --batches 1 --unet-base-width 8 --device cpu)
    # LangSAM's default and SAM 3 only, one image at half the input size: real architectures
    FOUNDATION=(--only langsam,sam3 --images 1 --batch-size 1 --repeats 1 --size small --device cpu)
else
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    DEMO=(--gpu --langsam-bf16)
    MODELS=(--size 256 --batch 32 --batches 8 --device cuda --bf16)
    FOUNDATION=(--images 16 --batch-size 4 --repeats 1 --device cuda --bf16 --timeout 300)
fi

started=$(date +%s)
$PYTHON jobs/benchmark.py --preset demo --output "$WORK/runs" --run-id gpu-check --cache-dir "$WORK/cache" \
    "${LANGSAM[@]}" --langsam-box-threshold 0 --sam3.weights "$WORK/tiny/sam3" "${DEMO[@]}" 2>&1 | tee "$OUT/benchmark.log"
demo_s=$(( $(date +%s) - started ))

$PYTHON bench/bench_models.py "${MODELS[@]}" "${LANGSAM[@]}" --markdown "$WORK/models.md"
$PYTHON bench/bench_foundation.py "${FOUNDATION[@]}" --markdown "$WORK/foundation.md"

$PYTHON - "$WORK/runs/gpu-check/summary.json" "$WORK/models.md" "$demo_s" "$DRY_RUN" >"$OUT/gpu_check.md" <<'EOF'
import json, sys
summary, models, demo_s, dry = json.load(open(sys.argv[1])), open(sys.argv[2]).read(), sys.argv[3], sys.argv[4] == "1"
print(f"# GPU check{' (dry run, CPU)' if dry else ''}\n")
print(f"## Demo benchmark: {demo_s} s wall, status {summary['status']}, "
      f"{summary['rows']['written']} of {summary['rows']['expected']} rows\n")
print("| model | scored images | mean IoU | mean latency ms | device |\n|---|---|---|---|---|")
fmt = lambda value, spec: format(value, spec) if value is not None else "n/a"
for name, model in summary["models"].items():
    print(f"| {name} | {model['scored_images']} | {fmt(model['mean_iou'], '.3f')} | "
          f"{fmt(model['mean_latency_ms'], '.1f')} | {model['device'] or ''} |")
print("\n| stage | rows in | start s | end s | busy s |\n|---|---|---|---|---|")
for name, stage in summary["timeline"]["stages"].items():
    print(f"| {name} | {stage['rows_in']} | {stage['start']} | {stage['end']} | {stage['busy_s']} |")
print("\n## Each model alone\n\n" + models)
EOF
cat "$WORK/foundation.md" >>"$OUT/gpu_check.md"
cat "$OUT/gpu_check.md"
