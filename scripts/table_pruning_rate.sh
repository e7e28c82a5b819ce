#!/usr/bin/env bash
# CCS/TDDS/DUAL pruning-rate table (CIFAR-10/100, ResNet-18) at full scale on a GPU machine (see scripts/run_table.sh for EXECUTOR, RESULTS, SCALE, DEVICE).
exec "$(dirname "$0")/run_table.sh" pruning-rate "$@"
