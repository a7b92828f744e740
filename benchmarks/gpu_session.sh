#!/usr/bin/env bash
# One prepared GPU session (a lent H200 has 15 device-minutes): CUDA tests, grouping and
# training-step benchmarks in float32 and bf16, the aggregate-posterior benchmark, and the demo
# trained on the GPU with bf16-mixed precision. Everything goes to $OUT (default ./gpu_out).
#
#   OUT=/tmp/gpu bash benchmarks/gpu_session.sh
#
# Uses the machine's python3 (its own torch); the pure-Python CLI dependencies may travel in
# .gpu_site (PYTHONPATH), since nothing can be installed there.
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD/tests:$PWD/.gpu_site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PY:-python3}
step() { echo; echo "=== $* ($(date +%T))"; }
{
step environment
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
$PY -c "import torch, lightning, torchmetrics; print('torch', torch.__version__, 'lightning', lightning.__version__, 'torchmetrics', torchmetrics.__version__, torch.cuda.get_device_name())"

step CUDA tests
timeout 240 $PY -m pytest -q -m cuda tests/gpu -p no:cacheprovider

step grouping fp32, paper CLEVR grid
timeout 120 $PY benchmarks/bench_grouping.py --device cuda --dtype fp32 --repeats 20
step grouping bf16
timeout 120 $PY benchmarks/bench_grouping.py --device cuda --dtype bf16 --repeats 20
step grouping bf16, 64x64 tokens, batch 64, 11 slots
timeout 120 $PY benchmarks/bench_grouping.py --device cuda --dtype bf16 --batch 64 --tokens 4096 --slots 11 --repeats 10 --cases sa,psa,em_step,em_dense

step training step fp32, 64x64, batch 64
timeout 150 $PY benchmarks/bench_train_step.py --device cuda --dtype fp32 --batch 64 --image-size 64 --steps 30
step training step bf16, 64x64, batch 64
timeout 150 $PY benchmarks/bench_train_step.py --device cuda --dtype bf16 --batch 64 --image-size 64 --steps 30
step training step bf16, 128x128, batch 64
timeout 150 $PY benchmarks/bench_train_step.py --device cuda --dtype bf16 --batch 64 --image-size 128 --steps 15

step aggregate posterior
timeout 150 $PY benchmarks/bench_posterior.py --device cuda --no-progress

step demo on the GPU, bf16-mixed
timeout 270 $PY -m probslot.cli demo --out /tmp/demo_gpu --no_progress \
  trainer.accelerator=gpu trainer.precision=bf16-mixed trainer.max_minutes=2
cp /tmp/demo_gpu/metrics.json "$OUT/demo_metrics.json" 2>/dev/null
cp /tmp/demo_gpu/eval.json "$OUT/demo_eval.json" 2>/dev/null
cp /tmp/demo_gpu/samples.png "$OUT/demo_samples.png" 2>/dev/null
cp /tmp/demo_gpu/pruning/sweep.md "$OUT/demo_pruning.md" 2>/dev/null
step done
} 2>&1 | tee "$OUT/gpu_session.log"
echo "outputs: $OUT"
