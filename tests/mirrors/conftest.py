"""Make the helper modules of sibling test packages importable in any import mode:
tests/bandwidth (the virtual-time link driver), tests/integration (real agents),
tests/transfer and tests/usage (the fetcher's fake connection and access recorder)."""

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]
for _sub in ("bandwidth", "integration", "transfer", "usage", "peer"):
    if str(_TESTS / _sub) not in sys.path:
        sys.path.insert(0, str(_TESTS / _sub))
