"""Make tests/peer's in-process peer helpers importable (the sharing tests use real peers)."""

import sys
from pathlib import Path

_PEER = str(Path(__file__).resolve().parents[1] / "peer")
if _PEER not in sys.path:
    sys.path.insert(0, _PEER)
