"""Benchmarks: each module exposes main(); run one with `python benchmarks/<name>.py`."""
