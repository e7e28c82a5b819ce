#!/usr/bin/env bash
# The GPU check in one command: ensemble evaluation of the DC CIFAR-10 IPC-10 cell (10 runs x 300 epochs), a DDP
# (NCCL) coreset smoke on the Tiny-ImageNet subset, and the speed suite on CUDA; one JSON of results.
# Under 8 minutes on one GPU. Options: --device cpu, --toy (about a minute on a 2-core CPU), --out FILE.json,
# --sections ensemble_eval,ddp_coreset,speed_suite, --workdir DIR, --data-root DIR (see benchmarks/gpu_check.py).
#   benchmarks/gpu_check.sh --out gpu_check.json
#   benchmarks/gpu_check.sh --device cpu --toy --out /tmp/gpu_check.json
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[[ -x "$PY" ]] || PY=python3
exec "$PY" benchmarks/gpu_check.py "$@"
