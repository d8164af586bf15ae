"""Shared test configuration: the real-service fixtures live in tests/services.py."""

pytest_plugins = ["tests.services"]
