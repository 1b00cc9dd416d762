"""Benchmarks: `python -m jaxdistill.bench` (see jaxdistill/bench/__main__.py and
docs/performance.md). Imports nothing heavy; torch is imported only by the PyTorch side."""
