"""The run fixtures shared with the other trainer-side test folders (`tests/run_fixtures.py`)."""

from tests.run_fixtures import fast_cpu, tiny_config  # noqa: F401 (pytest finds fixtures by name)
