"""cuBLAS and cuBLASLt workspaces: one per thread that multiplies matrices.

aten/src/ATen/cuda/CublasHandlePool.cpp: each thread reserves its own cuBLAS handle from a pool
(`getCurrentCUDABlasHandle`, a thread_local `PoolWindow`), and each (handle, stream) gets a
workspace of `getChosenWorkspaceSize()` bytes from the caching allocator on first use
(`setWorkspaceForHandle`, `cublas_handle_stream_to_workspace`), held for the process. cuBLASLt
(`addmm` with a bias, fused as an epilogue) keeps its own `getCUDABlasLtWorkspaceSize()`
(CUBLASLT_WORKSPACE_SIZE, 1024 KiB) per (Lt handle, stream), also one per thread
(`getCUDABlasLtWorkspace`). The autograd engine runs a CUDA backward on a device thread of its
own (torch/csrc/autograd/engine.cpp, `Engine::thread_init`), so a training step whose forward
and backward both multiply matrices holds two cuBLAS workspaces. Measured on an H100 with torch
2.11 + CUDA 13 (reports/validation/probe-fit-h100.csv, each model in a fresh process): the
first forward `mv`/`mm`/`bmm` keeps 33,554,432 B, the first forward `addmm` with a bias
34,603,008 B (both workspaces), and the first backward `mm` another 33,554,432 B.
"""

from __future__ import annotations

import torch

from sa_profiler import torch_compat

LT_WORKSPACE = 1024 * 1024  # parseCUDABlasLtWorkspaceSize: 1024 KiB by default

# aten ops that call cuBLAS (at::cuda::blas gemm/gemv/dot and their batched forms)
BLAS_OPS = frozenset({"mm", "bmm", "addmm", "baddbmm", "addbmm", "mv", "addmv", "dot", "vdot", "addr",
                      "_addmm_activation"})
# ... and of those, the ones that go through cuBLASLt when given a 1-D bias (addmm_out_cuda_impl's
# useLtInterface; measured: addmm with a bias keeps the 1 MiB Lt workspace, mm does not)
LT_OPS = frozenset({"addmm", "_addmm_activation"})


def thread() -> str:
    """'backward' while autograd runs a backward (the op then runs on the engine's device thread
    for a CUDA tensor), else 'forward'. `torch_compat.graph_task_id` is private: without it,
    every op counts as the forward thread's (one workspace, as before the two were told apart)."""
    try:
        task = torch_compat.graph_task_id()
    except RuntimeError:
        return "forward"
    return "backward" if task is not None and task != -1 else "forward"


def handles(name: str, args) -> tuple[str, ...]:
    """The library handles op `name` uses: ('cuBLAS',) or ('cuBLAS', 'cuBLASLt'), () for others."""
    if name not in BLAS_OPS:
        return ()
    if name in LT_OPS and args and isinstance(args[0], torch.Tensor) and args[0].dim() == 1:
        return ("cuBLAS", "cuBLASLt")
    return ("cuBLAS",)


def sizes(cublas_workspace: int) -> dict[str, int]:
    """Bytes each handle's workspace takes on a card whose cuBLAS workspace is `cublas_workspace`."""
    return {"cuBLAS": cublas_workspace, "cuBLASLt": LT_WORKSPACE}
