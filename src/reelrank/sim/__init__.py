"""Simulated catalogs and viewers with planted tastes, for the demo, tests and benchmarks."""
