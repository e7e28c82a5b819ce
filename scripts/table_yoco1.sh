#!/usr/bin/env bash
# YOCO Table 1 (IDC sources, CIFAR-10/100) at full scale on a GPU machine (see scripts/run_table.sh for EXECUTOR, RESULTS, SCALE, DEVICE).
exec "$(dirname "$0")/run_table.sh" yoco-table1 "$@"
