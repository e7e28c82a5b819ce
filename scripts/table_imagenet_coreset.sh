#!/usr/bin/env bash
# ImageNet-1K coreset table (CCS and DUAL, ResNet-34) at full scale on a GPU machine (see scripts/run_table.sh for EXECUTOR, RESULTS, SCALE, DEVICE).
exec "$(dirname "$0")/run_table.sh" imagenet-coreset "$@"
