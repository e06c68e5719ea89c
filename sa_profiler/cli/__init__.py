"""`sa-profile`: how much memory SAGAN self-attention needs, what fits, and what to use.

One module per command, each thin (parsing, the call, printing): `headline` (the command group
itself), `catalogue` (gpus, doctor), `sweep`, `fit`, `report`; `common` holds what they share.
The commands are imported on first use (`cli`), not by the console script's entry point: a
question asked before is answered from the cache without click or the commands.
"""

from __future__ import annotations

import sys


def _commands():
    from sa_profiler.cli import catalogue, common, fit, plan, report, sweep  # noqa: F401 (each registers its command)
    from sa_profiler.cli.headline import cli

    return cli


def __getattr__(name):
    if name == "cli":
        return _commands()
    if name == "_sweep_summary":
        _commands()
        from sa_profiler.cli.sweep import _sweep_summary

        return _sweep_summary
    raise AttributeError(f"module 'sa_profiler.cli' has no attribute {name!r}")


def main():  # console-script entry point; an identical question asked before is answered from the cache
    from sa_profiler.advice.answer_cache import answered

    def run():
        cli = _commands()
        from sa_profiler.cli import common

        common._ONE_SHOT = True
        cli.main(prog_name="sa-profile")

    answered(sys.argv[1:], run)
