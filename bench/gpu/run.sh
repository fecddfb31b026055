#!/usr/bin/env bash
# The device check, offline, under 8 minutes on one H200 (bench/gpu/bench_gpu.py says what it
# measures). Run from anywhere:  bash bench/gpu/run.sh [bench_gpu.py arguments]
# Python packages the machine lacks come from .whl/ at the repository root, made beforehand on
# a machine with internet by `bash bench/gpu/wheels.sh` (the GPU machine may have none).
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-8} TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
if ! "$PY" -c "import deepspeed, hydra, omegaconf" 2>/dev/null; then
    if ! ls .whl/*.whl >/dev/null 2>&1; then
        echo "run.sh: deepspeed/hydra missing and no wheels in .whl/ (bash bench/gpu/wheels.sh)"; exit 2
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
"$PY" -c "import torch, deepspeed; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| deepspeed', deepspeed.__version__)"
exec "$PY" bench/gpu/bench_gpu.py "$@"
