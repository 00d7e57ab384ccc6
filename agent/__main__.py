"""``python -m agent`` is the ``shoal`` command (test harnesses and benchmarks start agents
this way, with the interpreter of their own virtualenv). A closed output pipe is handled by
:func:`agent.control.cli.main` itself (exit 141, no traceback), the same for both ways in."""

import sys

from agent.control.cli import main

if __name__ == "__main__":
    sys.exit(main())
