"""`sa-profile`: how much memory SAGAN self-attention needs, what fits, and what to use.

One module per command, each thin (parsing, the call, printing): `headline` (the command group
itself), `catalogue` (gpus, doctor), `sweep`, `fit`, `report`; `common` holds what they share.
"""

from __future__ import annotations

import sys

from sa_profiler.cli import catalogue, common, fit, report, sweep  # noqa: F401 (each registers its command)
from sa_profiler.cli.headline import cli
from sa_profiler.cli.sweep import _sweep_summary  # noqa: F401


def main():  # console-script entry point; an identical question asked before is answered from the cache
    from sa_profiler.advice.answer_cache import answered

    common._ONE_SHOT = True
    answered(sys.argv[1:], lambda: cli.main(prog_name="sa-profile"))
