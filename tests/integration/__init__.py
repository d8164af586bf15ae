"""Integration tests against real Kafka and PostgreSQL (see tests/services.py)."""
