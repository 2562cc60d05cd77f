#!/usr/bin/env bash
# Every GPU benchmark in one run on one GPU, inside a fixed wall-clock budget (default 560 s):
#   1. bench.gpu_generate  reference setting vs ours, where the time goes, the generation stage,
#                          the full Ray pipeline with inspection (docs/performance.md)
#   2. bench.gpu_rfnet     the paper-preset RFNet: scoring, training step, reward (docs/rfnet.md)
#   3. bench.gpu_rfft      RFFT reward step and full step at per-GPU batch 4 (docs/rfft.md)
# Each writes its JSON and log into OUT_DIR; a step stopped by its deadline still leaves its log.
#
#   bench/gpu_all.sh [OUT_DIR] [TOTAL_SECONDS]       # on the GPU machine
#   SMOKE=1 bench/gpu_all.sh /tmp/gpu-smoke           # same steps on CPU with tiny models
set -u
out=${1:-bench/results}
total=${2:-560}
mkdir -p "$out"
start=$(date +%s)
left() { echo $((total - ($(date +%s) - start))); }
smoke=()
[ "${SMOKE:-0}" = 1 ] && smoke=(--smoke)
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  "$py" -c "import torch, diffusers, transformers, ray; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'ray', ray.__version__)"
} > "$out/env.txt" 2>&1
cat "$out/env.txt"

# Measured in one run on an H200 (565 s given): generation 379 s with compilation (peak, reference,
# eager variant and profile ~75 s, compiled stage ~100 s, pipeline with its own compile ~176 s),
# rfnet 87 s, rfft 71 s. Generation gets what the other two need; each step is stopped at its
# share, and the generation step keeps what it measured.
gen_budget=$(($(left) - 150))
timeout -s TERM -k 20 $((gen_budget + 15)) "$py" -m bench.gpu_generate "${smoke[@]}" --budget-s "$gen_budget" \
    --out "$out/gpu_generate.json" > "$out/gpu_generate.log" 2>&1
echo "gpu_generate: exit $? at $(($(date +%s) - start)) s"

rfnet_s=$(($(left) - 60))
[ "$rfnet_s" -gt 100 ] && rfnet_s=100
timeout -k 10 "$rfnet_s" "$py" -m bench.gpu_rfnet "${smoke[@]}" --iters 3 --warmup 1 \
    --out "$out/rfnet_gpu.json" > "$out/gpu_rfnet.log" 2>&1
echo "gpu_rfnet: exit $? at $(($(date +%s) - start)) s"

timeout -k 10 $(($(left) - 5)) "$py" -m bench.gpu_rfft "${smoke[@]}" --repeats 2 \
    --out "$out/gpu_rfft.json" > "$out/gpu_rfft.log" 2>&1
echo "gpu_rfft: exit $? at $(($(date +%s) - start)) s"

for f in gpu_generate gpu_rfnet gpu_rfft; do
    echo "== $f (last lines)"
    grep -v -e "logging_progress" -e "streaming_executor" -e "^\s*$" "$out/$f.log" | tail -n 25
done
