#!/usr/bin/env bash
# The CUDA checks of one GPU session, in one go: writes everything under $OUT (default ./cuda-out).
#
#   bash benchmarks/device_checks.sh [STAGE ...]     # stages: probes fit reductions tests (default: all)
#
# probes:     the per-op probes (benchmarks/probe_cuda_ops.py, both sets): the memory-efficient
#             kernel's workspace and temporaries on this card, against sa_profiler/engine/mem_eff.py;
# fit:        whole-model training steps of the examples and the zoo (fp32, fp16 and bf16 AMP), each
#             in a fresh process, with the SDPA backend the dispatcher chose and the library
#             workspaces op by op;
# reductions: the scratch memory of CUDA reductions by shape (benchmarks/probe_reductions.py);
# tests:      the CUDA-marked tests (the largest-batch bisection excepted: it takes ten minutes).
set -o pipefail
OUT=${OUT:-cuda-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
stages=${*:-probes fit reductions tests}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name(), torch.cuda.get_device_capability())"
  for stage in $stages; do
    date -u +%FT%TZ; echo "== $stage"
    case $stage in
      probes)
        timeout 100 python3 benchmarks/probe_cuda_ops.py --set main --out "$OUT" | tail -40
        timeout 120 python3 benchmarks/probe_cuda_ops.py --set efficient --out "$OUT" | tail -5 ;;
      fit) timeout 240 python3 benchmarks/validate_fit_cuda.py --zoo --probe --jobs 8 --out "$OUT" ;;
      reductions) timeout 120 python3 benchmarks/probe_reductions.py --out "$OUT" ;;
      tests)
        timeout 150 python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py tests/test_readme.py \
          -k "not check_max_batch" 2>&1 | tail -30 ;;
      *) echo "unknown stage $stage (expected probes, fit, reductions or tests)"; exit 2 ;;
    esac
  done
  date -u +%FT%TZ
} 2>&1 | tee "$OUT/log.txt"
