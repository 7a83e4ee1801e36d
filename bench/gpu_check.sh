#!/usr/bin/env bash
# The GPU checks in one run, for a machine with a CUDA device and its own torch: the gpu-marked tests,
# the GPU accuracy benchmark (>= 300 iterations per configuration) and the sampling thread's overhead.
# Pure-Python dependencies the machine lacks may be provided as wheels in .whl/.
set -u
cd "$(dirname "$0")/.."
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export MLESTIMATE_CACHE_DIR=$(mktemp -d)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
python3 -m pytest -q -p no:cacheprovider -m gpu tests/engine -rs
python3 bench/accuracy.py --device cuda
python3 bench/monitor_overhead.py --device cuda --architecture fasterrcnn_resnet50_fpn --batch 4 --size 512 \
  --steps-per-arm 400 --block 20
