"""The control tests reuse the in-process peers of tests/peer (a plain helper module)."""

import sys
from pathlib import Path

_PEER = str(Path(__file__).resolve().parents[1] / "peer")
if _PEER not in sys.path:
    sys.path.insert(0, _PEER)
