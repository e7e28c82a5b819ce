#!/usr/bin/env bash
# GoldFromOres DC/DM with drop criteria and ratios at full scale on a GPU machine (see scripts/run_table.sh for EXECUTOR, RESULTS, SCALE, DEVICE).
exec "$(dirname "$0")/run_table.sh" goldfromores "$@"
