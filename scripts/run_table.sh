#!/usr/bin/env bash
# Run one table spec at full scale on a GPU machine (one worker per visible GPU), or on a Slurm
# cluster with EXECUTOR=slurm PARTITION=... ; then write its reports to benchmarks/results.
# Resumable: re-run to continue. Needs the datasets under $DDBENCH_DATA (layouts: harness/data/specs.py).
#   scripts/run_table.sh TABLE [extra `ddbench table run` options]      TABLE = a name in benchmarks/tables/
set -euo pipefail
cd "$(dirname "$0")/.."
table=${1:?usage: scripts/run_table.sh TABLE [options]}
shift
spec=benchmarks/tables/$table.yaml
RESULTS=${RESULTS:-runs/tables}
EXECUTOR=${EXECUTOR:-local}
extra=()
if [[ "$EXECUTOR" == slurm ]]; then extra+=(--partition "${PARTITION:?set PARTITION}" --timeout-min "${TIMEOUT_MIN:-1440}"); fi
python -m harness table run "$spec" --results "$RESULTS" --scale "${SCALE:-full}" \
  --executor "$EXECUTOR" --device "${DEVICE:-cuda}" "${extra[@]}" "$@"
python -m harness table report "$spec" --results "$RESULTS" --scale "${SCALE:-full}" --out benchmarks/results
