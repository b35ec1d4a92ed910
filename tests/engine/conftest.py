"""Phantom fixtures live in tests/conftest.py; FAST is re-exported for the tests of this folder."""

from tests.conftest import FAST  # noqa: F401
