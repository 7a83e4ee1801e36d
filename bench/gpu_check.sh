#!/usr/bin/env bash
# The GPU checks in one run, for a machine with a CUDA device and its own torch: the environment, the
# gpu-marked tests, then bench/gpu_proof.py (training, inference, capacity and between-process noise against
# plain PyTorch loops). Pure-Python dependencies the machine lacks may be provided as wheels in .whl/.
# Logs and results go to $OUT when it is set (else a temporary folder); no new work starts after BUDGET
# seconds (default 380) from the script's start.
#   bash bench/gpu_check.sh [all|tests|PARTS]   PARTS: gpu_proof.py's --parts, e.g. capacity,noise, and families
#   bash bench/gpu_check.sh all                  # the tests, then training,inference,capacity,noise
#   BUDGET=560 bash bench/gpu_check.sh families  # bench/family_accuracy.py on the GPU (needs timm, transformers):
#                                                # 24 fresh processes; ONLY="hf vit" narrows it to one family
#   BUDGET=560 bash bench/gpu_check.sh dataset   # bench/dataset_accuracy.py's worst batch on the GPU (needs
#                                                # pycocotools): the estimate's peak allocated against a loop's
#   bash bench/gpu_check.sh training,inference   # no tests
#   SMOKE=1 bash bench/gpu_check.sh all          # on a CPU: the script itself, with tiny sizes
set -u
cd "$(dirname "$0")/.."
started=$(date +%s)
budget=${BUDGET:-380}
what=${1:-all}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
export MLESTIMATE_CACHE_DIR=$(mktemp -d)
logs=${OUT:-$(mktemp -d)}
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv
  python3 -c "import sys, torch, torchvision; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'torchvision', torchvision.__version__)"
  nproc
} 2>&1 | tee "$logs/environment.txt"
# the plugin is registered by its entry point where the package is installed; else name it
plugin="-p pytest_mlestimate.plugin"
python3 -c "import sys; from importlib.metadata import entry_points; sys.exit(not entry_points(group='pytest11', name='mlestimate'))" && plugin=
if [ "$what" = all ] || [ "$what" = tests ]; then
  timeout 200 python3 -m pytest -q -p no:cacheprovider $plugin -m gpu tests/engine -rs --durations=0 \
    2>&1 | tee "$logs/gpu-tests.log"
  [ "$what" = tests ] && exit 0
fi
parts=$what
[ "$what" = all ] && parts=training,inference,capacity,noise
device=cuda
[ -n "${SMOKE:-}" ] && device=cpu
# a bench script of its own, run when PARTS names it, within what is left of the budget; its log is NAME.log
bench_part() {
  local part=$1 log=$2
  shift 2
  [[ ",$parts," == *",$part,"* ]] || return 0
  parts=$(echo ",$parts," | sed "s/,$part,/,/; s/^,//; s/,\$//")
  local left=$((budget - ($(date +%s) - started)))
  [ "$left" -lt 10 ] && left=10
  timeout "$left" python3 "$@" --device "$device" 2>&1 | tee "$logs/$log.log"
}
bench_part families family_accuracy bench/family_accuracy.py --repeats 2 ${ONLY:+--only "$ONLY"}
bench_part dataset dataset_accuracy bench/dataset_accuracy.py --only worst
left=$((budget - ($(date +%s) - started)))
[ -n "$parts" ] && python3 bench/gpu_proof.py --out "$logs" --parts "$parts" --deadline "$left" ${ONLY:+--only "$ONLY"} ${SMOKE:+--device cpu --smoke} 2>&1 | tee "$logs/gpu_proof.log"
echo "gpu_check: $(($(date +%s) - started)) s"
