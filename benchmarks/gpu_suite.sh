#!/usr/bin/env bash
# Every GPU check of the project in one command, sized for a short lease on a CUDA machine:
#   1. smoke: the GPU Table 1 sweep for 2 short epochs per run (catches a broken CUDA path in
#      about a minute, and measures the sweep's images/s with its four runs sharing the GPU);
#   2. the throughput benchmark: Spikformer-4-384 CIFAR (both tokenizers) and Spikingformer-4-384,
#      B=64, T=4, reference mode (fp16 autocast, per-timestep LIF loop) against the fast path
#      (bf16, fused LIF, replayed CUDA graph), with MFU; and the fast path without the graph;
#   3. the CUDA tests (pytest -m gpu);
#   4. the GPU Table 1 study (ablations/conf/experiment/repro_table1_gpu.yaml), its epochs sized
#      from the smoke's images/s to end before the deadline.
# Usage (from the repository root, with $GRADPROBE_DATA/cifar10-jpeg in place; to carry it over:
# `tar czf cifar10-jpeg.tar.gz -C ../shared/data cifar10-jpeg` here,
# `tar xzf cifar10-jpeg.tar.gz -C "$GRADPROBE_DATA"` there):
#   benchmarks/gpu_suite.sh OUT_DIR [TOTAL_SECONDS]
#   GPU_SUITE_STAGES="tests bench" benchmarks/gpu_suite.sh OUT_DIR 300   # these stages, in order
# (stages: smoke, bench, bench_spikformer (its first part), tests, study)
# Two files land in OUT_DIR: gpu_suite_logs.tar.gz (one log per stage, the benchmarks' CSVs) and
# gpu_study.tar.gz (the study's results store, run logs and metrics, no checkpoints).
set -u
out=${1:?usage: benchmarks/gpu_suite.sh OUT_DIR [TOTAL_SECONDS]}
total=${2:-540}
start=$(date +%s)
left() { echo $((total - ($(date +%s) - start))); }
mkdir -p "$out" && out=$(cd "$out" && pwd)
export PYTHONUNBUFFERED=1
work=${TMPDIR:-/tmp}/gradprobe-gpu-suite
logs=$work/logs
rm -rf "$work"  # a fresh start: an earlier suite's smoke runs would be skipped as finished
mkdir -p "$logs"
# one archive of every log and CSV, written however the suite ends
trap 'tar czf "$out/gpu_suite_logs.tar.gz" -C "$work" logs' EXIT

nvidia-smi >"$logs/nvidia-smi.txt" 2>&1
python3 -c "import torch, spikingjelly, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, torch.cuda.get_device_name())" 2>&1 | tee "$logs/versions.txt"

ips=0

stage_smoke() {
echo "== 1. smoke sweep ($(left) s left)"
GRADPROBE_SWEEPS=$work/smoke timeout 150 python3 -m ablations.train -m experiment=repro_table1_gpu \
  trainer.epochs=2 trainer.max_steps_per_epoch=100 dataset.limit_test=2000 probe.every=50 \
  >"$logs/smoke.log" 2>&1
smoke_rc=$?
ips=$(python3 - "$work/smoke/repro_table1_gpu/results" <<'EOF'
import json, sys
from pathlib import Path
rates = []
for f in Path(sys.argv[1]).glob("*.json"):
    doc = json.loads(f.read_text())
    if doc.get("status") == "finished" and len(doc["history"]) == 2:
        rates.append(doc["history"][-1]["images_per_s"])  # epoch 2: kernels already built
print(f"{min(rates):.0f}" if len(rates) == 4 else 0)
EOF
)
echo "smoke rc=$smoke_rc, slowest of four concurrent runs: $ips img/s" | tee -a "$logs/smoke.log"
tail -n 5 "$logs/smoke.log"
}

bench="python3 -m benchmarks.throughput --device cuda --batch-size 64 --T 4 --repeats 10 --warmup 3"
bench_model() {  # MODEL VARIANT...: the benchmark for one model, side by side
  timeout 150 $bench --models "$1" --downsample "${@:2}" --csv "$logs/throughput_$1.csv" \
    >"$logs/throughput_$1.log" 2>&1
  echo "throughput $1 rc=$?"
  grep -v Warning "$logs/throughput_$1.log" | tail -n 6
}

stage_bench_spikformer() {
echo "== 2. throughput benchmark, Spikformer-4-384 ($(left) s left)"
bench_model spikformer_4_384_cifar lif_maxpool maxpool_lif
}

stage_bench() {
stage_bench_spikformer
bench_model spikingformer_4_384_cifar lif_maxpool
timeout 120 $bench --models spikformer_4_384_cifar --downsample lif_maxpool --cuda-graph off \
  --memory none --csv "$logs/throughput_nograph.csv" >"$logs/throughput_nograph.log" 2>&1
echo "throughput without the CUDA graph rc=$?"
grep -v Warning "$logs/throughput_nograph.log" | tail -n 4
}

stage_tests() {
echo "== 3. CUDA tests ($(left) s left)"
timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_fast.py tests/test_train.py \
  >"$logs/pytest_gpu.log" 2>&1
echo "pytest rc=$?"
tail -n 15 "$logs/pytest_gpu.log"
}

stage_study() {
echo "== 4. study ($(left) s left)"
budget=$(( $(left) - 45 ))
if [ "$ips" -gt 0 ] && [ "$budget" -gt 90 ]; then
  # the cosine's length: epochs of 50,000 images (+15% for evaluation) after ~60 s of start-up
  epochs=$(python3 -c "print(max(1, int(($budget - 60) * $ips / 50000 / 1.15)))")
  echo "study: $epochs epochs per run in a budget of $budget s" | tee "$logs/study.log"
  GRADPROBE_SWEEPS=$work/study timeout "$budget" python3 -m ablations.train -m \
    experiment=repro_table1_gpu trainer.epochs="$epochs" >>"$logs/study.log" 2>&1
  echo "study rc=$? (124: stopped at the deadline; finished epochs are in the store)" | tee -a "$logs/study.log"
  grep -h "finished, test\|epoch .*/.* train loss" "$logs/study.log" | tail -n 12
  (cd "$work/study" && tar czf "$out/gpu_study.tar.gz" --exclude='*.pt' --exclude='checkpoints' repro_table1_gpu)
else
  echo "study skipped: smoke img/s $ips, budget $budget s" | tee "$logs/study.log"
fi
}

for stage in ${GPU_SUITE_STAGES:-smoke bench tests study}; do
  "stage_$stage"
done
echo "suite done in $(( $(date +%s) - start )) s"
