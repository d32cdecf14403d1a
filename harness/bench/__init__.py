"""Benchmarks: speed and size figures printed by `make bench-*` (never asserted in tests)."""
