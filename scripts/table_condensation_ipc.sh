#!/usr/bin/env bash
# DC/DSA/DM/IDC accuracy vs IPC at full scale on a GPU machine (see scripts/run_table.sh for EXECUTOR, RESULTS, SCALE, DEVICE).
exec "$(dirname "$0")/run_table.sh" condensation-ipc "$@"
