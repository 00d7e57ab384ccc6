"""Shared helpers for the content-store tests (unique module name: no clash with other suites)."""

from __future__ import annotations

import random
from pathlib import Path

PUBLISHER = "ab" * 16
OTHER_PUBLISHER = "cd" * 16
KIB = 1024
MIB = 1024 * KIB
TEST_AVG = 64 * KIB  # small average: multi-chunk files stay small and fast


def randbytes(n: int, seed: int) -> bytes:
    """Reproducible pseudo-random bytes (incompressible, like real media)."""
    return random.Random(seed).randbytes(n)


def write_file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def tree_snapshot(root: Path) -> dict[str, bytes]:
    """Every file under *root* (relative path -> content) to prove nothing changed."""
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def temp_leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob(".tmp-*")]
