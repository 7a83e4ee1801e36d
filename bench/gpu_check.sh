#!/usr/bin/env bash
# The GPU checks in one run, for a machine with a CUDA device and its own torch: the gpu-marked tests and
# the fake-NVML device tests, the GPU accuracy benchmark (training and inference at the stated detection
# load), then the regression gate's power at +5 % on the GPU. Pure-Python dependencies the machine lacks
# may be provided as wheels in .whl/. Logs go to $OUT when it is set.
# Then capacity: the fit's held-out peak allocated memory and the largest batch on the real device, with the
# energy per step it measured.
#   bash bench/gpu_check.sh [tests|accuracy|power|capacity|all]
set -u
cd "$(dirname "$0")/.."
part=${1:-all}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
export MLESTIMATE_CACHE_DIR=$(mktemp -d)
logs=${OUT:-$(mktemp -d)}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
if [ "$part" = tests ] || [ "$part" = all ]; then
  python3 -m pytest -q -p no:cacheprovider -p pytest_mlestimate.plugin -m gpu tests/engine -rs 2>&1 | tee "$logs/gpu-tests.log"
  python3 -m pytest -q -p no:cacheprovider -p pytest_mlestimate.plugin tests/engine/test_devices.py 2>&1 | tail -3
fi
if [ "$part" = accuracy ] || [ "$part" = all ]; then
  python3 bench/accuracy.py --device cuda 2>&1 | tee "$logs/accuracy.log"
fi
if [ "$part" = power ] || [ "$part" = all ]; then
  python3 bench/regression_power.py --device cuda --tries "${POWER_TRIES:-10}" --sizes 0,5 2>&1 | tee "$logs/power.log"
fi
if [ "$part" = capacity ] || [ "$part" = all ]; then
  python3 bench/capacity_accuracy.py --device cuda:0 2>&1 | tee "$logs/capacity.log"
  python3 -m pytest_mlestimate.cli capacity scenarios/gpu.yaml --scenario fasterrcnn-r50-b4-512 --predict 32 --json 2>&1 | tee "$logs/capacity-table.json" | tail -40
fi
