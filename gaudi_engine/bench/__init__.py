"""Benchmarks behind `gaudi bench`."""
