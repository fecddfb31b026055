#!/usr/bin/env bash
# Wheels for bench/gpu/run.sh on a GPU machine without internet, written to .whl/ at the
# repository root (git-ignored): the packages the trainer needs beyond PyTorch, NumPy, PyArrow
# and the usual scientific stack. Run here, on a machine with PyPI:  bash bench/gpu/wheels.sh
# PYVER (default 3.12) is the GPU machine's Python.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYVER=${PYVER:-3.12}
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    hydra-core==1.3.8 omegaconf==2.3.1 pydantic==2.13.4 pydantic-core==2.46.4 annotated-types typing-inspection hjson
# Published as source only: built here (pure Python; DeepSpeed compiles its ops at first use).
python3 -m pip wheel -q --no-deps -w .whl deepspeed==0.19.8 antlr4-python3-runtime==4.9.3
ls -la .whl
