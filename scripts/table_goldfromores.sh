#!/usr/bin/env bash
# Full-scale reproduction of benchmarks/tables/goldfromores.yaml on a GPU machine (one worker per visible GPU),
# or on a Slurm cluster with EXECUTOR=slurm PARTITION=... . Resumable: re-run to continue.
# Needs the datasets under $DDBENCH_DATA (see harness/data/specs.py for the layouts).
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-runs/tables}
EXECUTOR=${EXECUTOR:-local}
extra=()
if [[ "$EXECUTOR" == slurm ]]; then extra+=(--partition "${PARTITION:?set PARTITION}" --timeout-min "${TIMEOUT_MIN:-1440}"); fi
python -m harness table run benchmarks/tables/goldfromores.yaml --results "$RESULTS" --scale "${SCALE:-full}" \
  --executor "$EXECUTOR" --device "${DEVICE:-cuda}" "${extra[@]}" "$@"
python -m harness table report benchmarks/tables/goldfromores.yaml --results "$RESULTS" --scale "${SCALE:-full}" \
  --out benchmarks/results
