#!/usr/bin/env bash
# YOCO Table 5 (balanced vs imbalanced, IDC CIFAR-10 10->{1,2,5}) at full scale on a GPU machine (see scripts/run_table.sh).
exec "$(dirname "$0")/run_table.sh" yoco-table5 "$@"
