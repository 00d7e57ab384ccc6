"""One BLAS thread for the model tests: OpenBLAS workers spin while waiting, which multiplies
the CPU a tiny training run takes on a shared machine. Set before numpy is imported."""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

