"""Benchmarking: seeded label noise with ground truth, metrics and the runner."""
