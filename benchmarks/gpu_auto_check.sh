#!/usr/bin/env bash
# The GPU check of the planner, as run on a lent device (the checkout with .whl/ and gpu_data/ carried; see
# ../shared/tools/gpu-wheels.sh): the plan segkit makes for ISBI 2012 on the GPU, then +experiment=auto
# against the hand recipe (trainer=gpu) at equal wall time, final weights on both sides.
set -euo pipefail
minutes=${1:-2}
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD NO_ALBUMENTATIONS_UPDATE=1 SEGKIT_CACHE_DIR=/tmp/segkit-cache
out=${OUT:-outputs/gpu_check}; mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'lightning', pl.__version__)"
python3 -m segkit.plan data=isbi2012 paths.data_dir=gpu_data trainer=gpu "trainer.max_time=00:00:0${minutes}:00" \
  "hydra.run.dir=$out/plan" 2>&1 | grep -v "^\[.*fingerprint\]" | cut -c1-260
python3 benchmarks/auto_vs_recipe.py --dataset isbi2012 --minutes "$minutes" --seeds 42 --data-dir gpu_data \
  -- trainer=gpu 2>&1 | tee "$out/auto_vs_recipe.txt"
for run in outputs/benchmark_*/segkit_*; do
  mkdir -p "$out/$run" && cp "$run"/{metrics.json,train.log} "$out/$run/" && cp "$run"/plan.yaml "$out/$run/" 2>/dev/null || true
done
