"""Loaded only by ``python -m benchmarks.opcodes`` (through PYTHONPATH) into the gateway it
starts: SIGUSR1 starts counting executed bytecodes and calls per function on the main thread,
SIGUSR2 stops and writes ``count<TAB>file|function[|calls]`` lines to $TURNOUT_OPTRACE_OUT."""

from __future__ import annotations

import collections
import os
import signal
import sys
from types import FrameType
from typing import Any

_OUT = os.environ.get("TURNOUT_OPTRACE_OUT")

if _OUT and "serve" in sys.argv:
    _counts: collections.Counter[tuple[str, ...]] = collections.Counter()

    def _tracer(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        code = frame.f_code
        if event == "opcode":
            _counts[(code.co_filename, code.co_name)] += 1
        elif event == "call":
            _counts[(code.co_filename, code.co_name, "calls")] += 1
        return _tracer

    def _start(signum: int, frame: object) -> None:
        _counts.clear()
        sys.settrace(_tracer)

    def _stop(signum: int, frame: object) -> None:
        sys.settrace(None)
        with open(str(_OUT), "w") as out:
            out.writelines(f"{n}\t{'|'.join(key)}\n" for key, n in _counts.most_common())

    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
