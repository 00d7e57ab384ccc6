"""Make the helper modules of sibling test packages importable in any import mode: tests/peer
(in-process peers), tests/transfer (the fetcher's fake connection) and tests/integration
(real agent processes)."""

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]
for _sub in ("peer", "transfer", "integration"):
    if str(_TESTS / _sub) not in sys.path:
        sys.path.insert(0, str(_TESTS / _sub))
