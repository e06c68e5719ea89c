#!/usr/bin/env bash
# The headline command measured on the local CUDA card: the card itself, and a 12 GiB card
# emulated on it (a memory fraction). Every row's predicted largest batch is run for real
# (--engine measure confirms it, halving on an OOM). Writes the JSON answers to $1.
set -euo pipefail
out=${1:-reports/validation}
python3 -m sa_profiler.cli --shape 128x128x128 --mode both --dtype fp16 --engine measure --json \
  > "$out/cli-measure-h100.json"
python3 -m sa_profiler.cli --gpu-mem 12G --shape 128x256x256 --mode train --dtype fp16 --engine measure --json \
  > "$out/cli-measure-h100-capped-12gib.json"
