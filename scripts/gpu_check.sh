#!/usr/bin/env bash
# `make gpu-check` on a lent GPU machine (through the device tool), after `make gpu-wheels`
# here: installs the carried wheels into /tmp/site and runs scripts/gpu_check.py, which
# writes gpu-check.json, gpu-check.log and bench-cuda.json to $OUT.
#   device run: command "bash scripts/gpu_check.sh", carry [".whl"]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [[ " $* " != *" --smoke "* ]] && compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
exec "$PY" scripts/gpu_check.py --out "${OUT:-gpu-check-out}" "$@"
