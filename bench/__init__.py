"""Benchmarks: CPU (tiny preset, Ray vs a direct loop, memory at scale) and GPU (full-size SD1.5).

Each benchmark is a module run with ``python -m bench.<name>`` and writes a JSON file under
``bench/results/`` next to a short printed table; ``docs/performance.md`` explains the numbers.
"""
