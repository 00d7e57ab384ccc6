"""Real agent processes for the CLI tests (the integration suite's fixture)."""

from tests.integration.conftest import agents  # noqa: F401  (a fixture, used by name)
