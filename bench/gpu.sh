#!/usr/bin/env bash
# MAE step, DDP scaling and the data loader on CUDA in bf16, for a machine with one or more GPUs;
# prints samples/s per GPU.
#
#   bench/gpu.sh                          # every visible GPU, batch 128 per GPU (MedCoSS's), demo data
#   NGPU=4 BATCH=64 PRESET=base DATA=/data/xray bench/gpu.sh
#
# Environment: NGPU (default: all visible), BATCH (per GPU, default 128), PRESET for the DDP run
# (default base), DATA (the xray folder for the DDP run; default: medkit's built-in demo data),
# STEPS (SHORT,LONG run lengths for the DDP difference, default 5,25), THREADS (CPU threads per
# process, default 4), OUT (results folder, default bench/results), COMPILE=1 adds --compile to the
# step bench, LOADER_WORKERS (DataLoader workers feeding one GPU from prepared data, default auto),
# LOADER_N / LOADER_SIZE (generated X-ray PNGs to prepare, default 512 of 2048²), LOADER_STEPS
# (default 50), SKIP_LOADER=1 leaves the loader out. Results: $OUT/mae_step_gpu.json,
# $OUT/ddp_scaling_gpu.json and $OUT/loader_gpu.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
NGPU=${NGPU:-$("$PY" -c "import torch; print(torch.cuda.device_count())")}
BATCH=${BATCH:-128}
PRESET=${PRESET:-base}
STEPS=${STEPS:-5,25}
THREADS=${THREADS:-4}
OUT=${OUT:-bench/results}
if [ "$NGPU" -lt 1 ]; then
  echo "gpu.sh: no CUDA device visible (torch.cuda.device_count() == 0)" >&2
  exit 1
fi
mkdir -p "$OUT"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, '|', torch.cuda.get_device_name(0), 'x', torch.cuda.device_count())"

# 1. one MAE step per case on one GPU: fwd + bwd + fused AdamW, bf16 autocast, vs the bf16 matmul ceiling
COMPILE_FLAG=()
if [ "${COMPILE:-0}" = "1" ]; then COMPILE_FLAG=(--compile); fi
"$PY" bench/mae_step.py --device cuda --amp ${COMPILE_FLAG[@]+"${COMPILE_FLAG[@]}"} --batch "$BATCH" --reps 10 --warmup 3 \
  --ceiling-n 8192 --out "$OUT/mae_step_gpu.json"

# 2. 1 GPU vs 2, 4 ... NGPU GPUs on the same global batch (BATCH per GPU at NGPU), through medkit run
PROCS=1
n=2
while [ "$n" -le "$NGPU" ]; do PROCS="$PROCS,$n"; n=$((n * 2)); done
case ",$PROCS," in *",$NGPU,"*) ;; *) PROCS="$PROCS,$NGPU" ;; esac
DATA_FLAG=()
if [ -n "${DATA:-}" ]; then DATA_FLAG=(--data "$DATA"); fi
"$PY" bench/ddp_scaling.py --device cuda --amp --threads "$THREADS" --procs "$PROCS" --preset "$PRESET" \
  --modality xray ${DATA_FLAG[@]+"${DATA_FLAG[@]}"} --global-batch $((BATCH * NGPU)) --steps "$STEPS" \
  --out "$OUT/ddp_scaling_gpu.json"

# 3. the loader: prepared X-ray shards, LOADER_WORKERS DataLoader workers, the bf16 MAE step on one GPU;
#    samples/s per GPU, the GPU's busy share and the share of time spent waiting for data
if [ "${SKIP_LOADER:-0}" != "1" ]; then
  "$PY" bench/loader_gpu.py --device cuda --workers "${LOADER_WORKERS:-auto}" --batch "$BATCH" \
    --n "${LOADER_N:-512}" --size "${LOADER_SIZE:-2048}" --steps "${LOADER_STEPS:-50}" --preset "$PRESET" \
    --out "$OUT/loader_gpu.json"
fi

# 4. the summary: samples/s per GPU
"$PY" - "$OUT/mae_step_gpu.json" "$OUT/ddp_scaling_gpu.json" <<'PYEOF'
import json, sys
step, ddp = (json.load(open(p)) for p in sys.argv[1:3])
print("\nsamples/s per GPU")
for r in step["results"]:
    if "error" in r:
        print(f"  MAE step {r['case']}: failed: {r['error']}")
    else:
        m = r["median"]
        print(f"  MAE step {r['case']} (batch {r['batch']}, 1 GPU): {m['samples_per_s']:.1f} "
              f"({m['pct_of_ceiling']:.0f}% of the bf16 matmul ceiling)")
for r in ddp["results"]:
    if "error" in r:
        print(f"  medkit run, {r['nproc']} GPU(s): failed: {r['error']}")
    else:
        print(f"  medkit run, {r['nproc']} GPU(s): {r['samples_per_s_per_device']:.1f} "
              f"(speed-up {r.get('speedup', float('nan')):.2f}, efficiency {r.get('efficiency', float('nan')):.2f})")
PYEOF
