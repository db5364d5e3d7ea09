"""Benchmarks, each printing its figures; run from the repository root as
`.venv/bin/python -m bench.<name>` (docs/BENCHMARKS.md).
"""
