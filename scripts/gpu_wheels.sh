#!/usr/bin/env bash
# `make gpu-wheels`: wheels of what the lent GPU machines' image lacks, into .whl/.
# That image has Python 3.12 with torch, numpy, scipy, matplotlib, tensorboard, tqdm, pyyaml,
# pytest, numba and scikit-learn, but not hydra-core, omegaconf, antlr4 or soundfile
# (REFERENCE.md section 5), and it cannot reach a package registry. The versions are the ones
# constraints.txt pins; antlr4-python3-runtime is an sdist on PyPI, so its wheel is built here.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
pin() { grep -i "^$1==" constraints.txt | head -n 1; }
mkdir -p .whl
rm -f .whl/*.whl
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl \
    "$(pin hydra-core)" "$(pin omegaconf)" "$(pin soundfile)" "$(pin cffi)" "$(pin pycparser)"
"$PY" -m pip wheel --quiet --no-deps -w .whl "$(pin antlr4-python3-runtime)"
ls -l .whl
du -sh .whl
