"""Make the plain helper modules importable whatever pytest's --import-mode is (and the
integration tier's Agent runner, which the emulated BLE tier reuses)."""

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for path in (str(_HERE), str(_HERE.parents[2])):
    if path not in sys.path:
        sys.path.insert(0, path)
