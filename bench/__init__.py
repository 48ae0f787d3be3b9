"""Benchmarks: ProdFS side by side with native disk, bindfs and squashfuse.

``python -m bench run`` builds a tree, publishes it to a PVC service on
loopback, mounts it every way (see docs/benchmarks.md) and writes
``bench/results/<date>.json`` and ``.md``. ``bench_resolver.py`` times the
resolver alone; the harness runs it too.
"""
