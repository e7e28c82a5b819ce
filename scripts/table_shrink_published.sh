#!/usr/bin/env bash
# YOCO Table 2-like shrinking of the published DC CIFAR-10 IPC-10 set at full scale on a GPU machine (see scripts/run_table.sh for EXECUTOR, RESULTS, SCALE, DEVICE).
exec "$(dirname "$0")/run_table.sh" shrink-published "$@"
