#!/usr/bin/env bash
# Published DC sets across architectures vs random real subsets at full scale on a GPU machine (see scripts/run_table.sh for EXECUTOR, RESULTS, SCALE, DEVICE).
exec "$(dirname "$0")/run_table.sh" published-dc "$@"
