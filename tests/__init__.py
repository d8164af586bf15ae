"""Interlock's tests (a package, so that `tests.services` is importable from conftest)."""
