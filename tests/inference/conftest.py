"""The inference tests use the session's trained phantom run, ``trained_run`` (tests/conftest.py)."""
