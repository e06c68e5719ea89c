"""Which kernel refuses tensors of 2^31 elements or more (seen: 'GET was unable to find an
engine' at very large batches on an H100 with torch 2.11 + cuDNN 9.19).

    python benchmarks/probe_kernel_limits.py

Runs forward + backward of cuDNN attention, memory-efficient attention and a 1x1
convolution on inputs just below and just above 2^31 elements, one process each (a failure
can leave the CUDA context unusable), and prints ok / the error for each.
"""

from __future__ import annotations

import subprocess
import sys

CASE = r"""
import sys, torch, torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
kind, numel = sys.argv[1], int(sys.argv[2])
d = 64
n = 4096
b = numel // (n * d)
dt = torch.float16
try:
    if kind == "conv":
        x = torch.randn(b, d, 64, 64, device="cuda", dtype=dt, requires_grad=True)
        w = torch.randn(d, d, 1, 1, device="cuda", dtype=dt, requires_grad=True)
        F.conv2d(x, w).sum().backward()
    else:
        q = torch.randn(b, 1, n, d, device="cuda", dtype=dt, requires_grad=True)
        backend = {"cudnn": SDPBackend.CUDNN_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION}[kind]
        with sdpa_kernel(backend):
            F.scaled_dot_product_attention(q, q, q).sum().backward()
    torch.cuda.synchronize()
    print(kind, b * n * d, "ok")
except Exception as e:
    print(kind, b * n * d, "FAIL", type(e).__name__, str(e).splitlines()[0][:120])
"""


def main():
    for kind in ("cudnn", "efficient", "conv"):
        for numel in (2**31 - 2**22, 2**31 + 2**22):
            out = subprocess.run([sys.executable, "-c", CASE, kind, str(numel)], capture_output=True, text=True)
            print((out.stdout.strip() or out.stderr.strip().splitlines()[-1])[:200], flush=True)


if __name__ == "__main__":
    main()
