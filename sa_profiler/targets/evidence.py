"""What a row's numbers rest on: a measurement, the kernels' open source, or an assumption.

- `measured`: the row was measured, or its rules were taken from measurements on the same
  architecture (cuDNN attention on sm90: reports/validation, an H100 with torch 2.11, cuDNN 9.19).
- `source`: the rules follow open source: torch's kernels and launchers for the classic and
  chunked layers (SoftMax.cu), the math path (attention.cpp), flash attention (flash_api.cpp) and
  the memory-efficient kernels (engine/mem_eff.py); checked against an H100 where one was lent.
- `assumption`: cuDNN attention anywhere but sm90. Its engines are closed source, and NVIDIA's
  documentation does not say which head sizes its backward runs on each architecture nor how
  much workspace it takes there; the rule measured on an H100 is assumed.

A backend forced on a row resting on an assumption is never recommended: the user's card may
refuse it, and forcing a backend that is refused makes `scaled_dot_product_attention` raise.
"""

from __future__ import annotations

MEASURED, SOURCE, ASSUMPTION = "measured", "source", "assumption"
MEASURED_CUDNN = ((9, 0),)  # architectures with committed cuDNN attention measurements


def of(row, gpu) -> tuple[str, str]:
    """(evidence, caveat) for a profiled row (recommend.Row) on `gpu` (None: the CPU)."""
    if row.source == "measured":
        return MEASURED, ""
    if gpu is None or row.backend != "cudnn":
        return SOURCE, ""
    if tuple(gpu.capability) in MEASURED_CUDNN:
        return MEASURED, ""
    arch = f"sm{gpu.capability[0]}{gpu.capability[1]}"
    what = "backward" if row.mode == "train" else "forward"
    return ASSUMPTION, (f"cuDNN attention is closed source: whether its {arch} {what} runs these head sizes, and "
                        f"its workspace there, are assumed from H100 measurements, not known")


def unsure_forced(row) -> bool:
    """A forced backend whose availability or memory on the target rests on an assumption."""
    return bool(row.options.get("backend")) and getattr(row, "evidence", "") == ASSUMPTION
