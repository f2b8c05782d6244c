"""What the benchmarks share: reading --trials, printing figures, and the real stack they measure.

A package rather than a module beside the scripts, so that `make bench` (every ``benchmarks/*.py``) runs only
the benchmarks themselves.
"""
