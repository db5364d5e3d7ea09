"""Benchmarks, each printing its figures; run from the repository root as
`.venv/bin/python -m bench.<name>` (docs/BENCHMARKS.md).
"""

import os

# Face code timed in a benchmark's own process runs as in the engine's processes, on one
# OpenBLAS thread (findme/engines/local/pool.py); OpenBLAS reads it as numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
