"""``python -m agent`` is the ``shoal`` command (test harnesses and benchmarks start agents
this way, with the interpreter of their own virtualenv)."""

import contextlib
import os
import sys

from agent.control.cli import main

if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
    os._exit(1)
