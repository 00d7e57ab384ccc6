"""Make the helper modules of sibling test packages importable in any import mode:
tests/bandwidth (the virtual-time link driver) and tests/integration (real agents)."""

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]
for _sub in ("bandwidth", "integration"):
    if str(_TESTS / _sub) not in sys.path:
        sys.path.insert(0, str(_TESTS / _sub))
