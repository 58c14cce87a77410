"""The commands' tests (`tailsynth ...` through typer's runner). They reuse the packages' tiny set-ups."""

from tests.ood.conftest import ood_setup  # noqa: F401  (a fixture, shared with tests/ood)
