#!/usr/bin/env bash
# The README's measured tables ("Measured results"), each a table spec at its `cpu` scale, on this machine's CPU:
#   published-dc      the published DC MNIST IPC-1 set across 6 architectures (~4 CPU-hours)
#   pruning-rate      coreset baselines on MNIST at 50 / 90 % pruning
#   shrink-published  YOCO shrinking of the published DC CIFAR-10 IPC-10 set to IPC 1 and 5
#   goldfromores      condensation on MNIST IPC 10 with GoldFromOres pre-pruning
# Resumable (re-run to continue; a second runner on the same RESULTS shares the work). Reports go to
# benchmarks/results. Needs $DDBENCH_DATA (../shared/data). Usage: scripts/readme_tables_cpu.sh [TABLE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
tables=("$@")
if [[ ${#tables[@]} -eq 0 ]]; then tables=(published-dc pruning-rate shrink-published goldfromores); fi
for table in "${tables[@]}"; do
  SCALE=cpu DEVICE=cpu RESULTS=${RESULTS:-runs/tables} scripts/run_table.sh "$table"
done
