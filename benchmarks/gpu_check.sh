#!/usr/bin/env bash
# The prepared GPU check: one call of at most ~9 minutes on one GPU (sized for an H200).
#
#   OUT=/tmp/out bash benchmarks/gpu_check.sh          # from the repository root
#   GPU_TRAIN=0 OUT=/tmp/out bash benchmarks/gpu_check.sh   # the checks alone, bench.py included
#
# 1. the CUDA op tests: separable_conv, deformable_separable_conv and flowsep_synthesis
#    (CUDA against CPU, gradcheck, autocast), i.e. every test with "cuda" in its name;
# 2. each model's CUDA path end to end: `sepconv interpolate --device cuda` on a short
#    synthetic clip (flowsep with its shipped weights, sepconv/dsepconv randomly initialised:
#    speed and correctness of the path do not depend on the weights);
# 3. `bench.py --device cuda` for flowsep, sepconv and dsepconv at 720p and 1080p, fp32
#    and bf16 (minterpolate once, with flowsep fp32), while nvidia-smi samples the GPU's
#    utilisation: flowsep's DIS prior runs on the CPU, and this shows how busy it leaves the GPU.
#    Skipped when training follows (GPU_TRAIN=1, the default) unless GPU_CHECK_BENCH=1;
# 4. (GPU_TRAIN=1) benchmarks/gpu_train.py: `sepconv train` for sepconv, then dsepconv, for
#    GPU_TRAIN_SECONDS each (default 150, less when the checks leave less before the end of
#    GPU_TOTAL_BUDGET_S, default 540 s), then fp16 (or int8) weights, their held-out PSNR in
#    gpu_train.json and the runs' logs in train_logs.tar.gz. Its settings (GPU_TRAIN_PHOTOS,
#    GPU_TRAIN_CACHE, ...: `python benchmarks/gpu_train.py --help`) are checked before step 1,
#    so bad ones fail in seconds (exit 2) rather than after the checks.
#
# $OUT receives gpu_check.json (one object: steps with their exit codes and seconds, bench
# figures per model and precision, GPU utilisation per bench run) and logs.tar.gz, plus
# gpu_train.py's files (at most 8 in all: the device tool returns no more). Check steps
# share a budget (GPU_CHECK_BUDGET_S, default 180 s when training follows, else 520 s):
# one that would overrun gets the time left, or is skipped under 20 s.
# Without a CUDA GPU the CUDA steps are skipped (recorded as such), training is skipped
# unless GPU_TRAIN_DRY_RUN=1 (then it runs on the CPU: tests/test_gpu_script.py), and the
# script exits with gpu_train.py's status (0 when nothing was to be trained).
#
# The GPU machine has PyTorch with CUDA and nvcc but no PyAV: wheels carried in the
# ignored folder .carry/wheels are installed into /tmp/site first (see docs/performance.md
# for how they were downloaded). Its own opencv-python-headless has DIS (cv2.video).
set -u
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
FINAL=$OUT
OUT=$(mktemp -d)  # the work folder; only the JSON and a log archive go to $FINAL
TRAIN=${GPU_TRAIN:-1}
TOTAL=${GPU_TOTAL_BUDGET_S:-540}
if [ "$TRAIN" = 1 ]; then BUDGET=${GPU_CHECK_BUDGET_S:-180}; BENCH=${GPU_CHECK_BENCH:-0}
else BUDGET=${GPU_CHECK_BUDGET_S:-520}; BENCH=${GPU_CHECK_BENCH:-1}; fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/tmp/sepconv-ext}
STEPS="$OUT/steps.jsonl"
: >"$STEPS"
START=$(date +%s)

# step NAME TIMEOUT COMMAND...: run, log to $OUT/NAME.log, record rc and seconds.
step() {
  local name=$1 limit=$2
  shift 2
  local t0=$(date +%s)
  local left=$((BUDGET - (t0 - START)))
  if [ "$left" -lt 20 ]; then skip "$name" "out of budget"; return 0; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit}s)" >&2
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  local t1=$(date +%s)
  echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((t1 - t0))}" >>"$STEPS"
  echo "   rc=$rc in $((t1 - t0))s" >&2
  tail -n 3 "$OUT/$name.log" >&2
  return 0
}
skip() { echo "{\"step\": \"$1\", \"rc\": null, \"skipped\": \"$2\"}" >>"$STEPS"; echo "== $1 skipped: $2" >&2; }

# -- packages ---------------------------------------------------------------------------
if ! $PY -c "import av" 2>/dev/null; then
  if ls .carry/wheels/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .carry/wheels/*.whl \
      >"$OUT/pip.log" 2>&1 || echo "pip install of the carried wheels failed (see pip.log)" >&2
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
  else
    echo "PyAV missing and no wheels in .carry/wheels" >&2
  fi
fi
export PYTHONPATH=$ROOT:${PYTHONPATH:-}
$PY -c "import av, cv2; cv2.DISOpticalFlow_create(1)" 2>"$OUT/imports.log" || echo "PyAV or OpenCV's DIS does not import (imports.log)" >&2

# Training's settings first: a missing photo folder should cost seconds, not the checks' minutes.
if [ "$TRAIN" = 1 ]; then
  $PY benchmarks/gpu_train.py --check --out "$FINAL" --reserve-files 2 || exit 2
fi

CUDA=$($PY -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
$PY - >"$OUT/environment.json" <<'EOF'
import json, platform, torch
info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
print(json.dumps(info))
EOF

if [ "$CUDA" = 1 ]; then
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$($PY -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")}
  # Build the three CUDA extensions in parallel first (about a minute each, one core each).
  for module in separable_conv deformable_separable_conv flowsep_synthesis; do
    $PY -c "
import torch
from sepconv_cli.ext import $module as m
from sepconv_cli.ext.separable_conv import select_extension
assert select_extension(m.KERNELS, torch.device('cuda')) is not None, 'CUDA build of $module failed'
" >"$OUT/build_$module.log" 2>&1 &
  done
  step build 300 bash -c "wait; grep -l 'failed\|Error' $OUT/build_*.log && exit 1 || exit 0"
  step op_tests 180 $PY -m pytest -q -x -k cuda tests/test_separable_conv.py tests/test_deformable_separable_conv.py tests/test_flowsep_synthesis.py

  # -- each model end to end on a short clip ---------------------------------------------
  WEIGHTS_DIR=$(mktemp -d)
  CLIP=$WEIGHTS_DIR/clip.mp4
  $PY -c "from tests.media import make_video; make_video('$CLIP', frames=12, width=640, height=360)" >"$OUT/clip.log" 2>&1
  $PY -c "
from sepconv_cli.models.registry import build_model, save_weights
for name in ('sepconv', 'dsepconv'):
    save_weights(build_model(name), '$WEIGHTS_DIR/' + name + '.pt')
" >"$OUT/weights.log" 2>&1
  for model in flowsep sepconv dsepconv; do
    weights=()
    [ "$model" != flowsep ] && weights=(--weights "$WEIGHTS_DIR/$model.pt")
    step "e2e_${model}" 90 $PY -m sepconv_cli interpolate "$CLIP" --out "$WEIGHTS_DIR/${model}.mp4" \
      --model "$model" "${weights[@]}" --device cuda --overwrite
  done

  # -- bench.py ---------------------------------------------------------------------------
  if [ "$BENCH" = 1 ]; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 250 \
      >"$OUT/utilisation.csv" 2>/dev/null &
    SMI=$!
    for model in flowsep sepconv dsepconv; do
      weights=()
      [ "$model" = flowsep ] && weights=(--weights weights/flowsep.pt)
      [ "$model" != flowsep ] && weights=(--weights "$WEIGHTS_DIR/$model.pt")
      for precision in fp32 bf16; do
        ffmpeg=(--no-ffmpeg)
        [ "$model" = flowsep ] && [ "$precision" = fp32 ] && ffmpeg=()
        echo "$(date +%s.%N) $model $precision start" >>"$OUT/bench_marks.txt"
        step "bench_${model}_${precision}" 150 $PY benchmarks/bench.py --model "$model" "${weights[@]}" --device cuda \
          --precision "$precision" --sizes 720p,1080p --frames 720p=8,1080p=5 "${ffmpeg[@]}" \
          --json "$OUT/bench_${model}_${precision}.json"
        echo "$(date +%s.%N) $model $precision end" >>"$OUT/bench_marks.txt"
      done
    done
    kill "$SMI" 2>/dev/null
  else
    skip bench "training follows (GPU_TRAIN=0 or GPU_CHECK_BENCH=1 runs bench.py)"
  fi
else
  for name in build op_tests e2e_flowsep e2e_sepconv e2e_dsepconv bench; do skip "$name" "no CUDA GPU visible to PyTorch"; done
fi

# -- one JSON ---------------------------------------------------------------------------
$PY - "$OUT" "$(( $(date +%s) - START ))" <<'EOF'
import json, sys
from pathlib import Path

out, seconds = Path(sys.argv[1]), int(sys.argv[2])
report = {"seconds": seconds, "environment": json.loads((out / "environment.json").read_text() or "{}"),
          "steps": [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines() if line.strip()],
          "bench": {}, "utilisation": {}}
for path in sorted(out.glob("bench_*.json")):
    report["bench"][path.stem.removeprefix("bench_")] = json.loads(path.read_text())
marks = out / "bench_marks.txt"
samples = out / "utilisation.csv"
if marks.exists() and samples.exists():
    import datetime
    rows = []
    for line in samples.read_text().splitlines():
        try:
            stamp, util, memory = (v.strip() for v in line.split(","))
            when = datetime.datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f").timestamp()
            rows.append((when, float(util), float(memory)))
        except ValueError:
            continue
    opened = {}
    for line in marks.read_text().splitlines():
        when, model, precision, what = line.split()
        if what == "start":
            opened[(model, precision)] = float(when)
        else:
            begin, end = opened.pop((model, precision)), float(when)
            inside = [u for t, u, _ in rows if begin <= t <= end]
            report["utilisation"][f"{model}_{precision}"] = {
                "samples": len(inside), "mean_gpu_util_pct": sum(inside) / len(inside) if inside else None,
                "note": "whole bench.py run: FLOPs count, network-only, end to end (and minterpolate for flowsep fp32)",
            }
(out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
failed = [s["step"] for s in report["steps"] if s.get("rc") not in (0, None)]
print(f"gpu_check: {seconds}s, steps failed: {failed or 'none'}")
EOF
cp "$OUT/gpu_check.json" "$FINAL/gpu_check.json"
tar -czf "$FINAL/logs.tar.gz" -C "$OUT" --exclude=gpu_check.json . 2>/dev/null
echo "wrote $FINAL/gpu_check.json and $FINAL/logs.tar.gz" >&2

# -- training (benchmarks/gpu_train.py) -----------------------------------------------------
TRAIN_RC=0
if [ "$TRAIN" = 1 ]; then
  echo "== train (until $((TOTAL - ($(date +%s) - START)))s from now)" >&2
  GPU_TRAIN_DEADLINE=$((START + TOTAL)) $PY benchmarks/gpu_train.py --out "$FINAL"
  TRAIN_RC=$?
fi
exit $TRAIN_RC
