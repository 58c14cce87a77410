"""The experiments run on the OOD tests' tiny set-up: a real npz, its real-only classifier and candidates."""

from tests.ood.conftest import ood_setup  # noqa: F401  (a fixture, shared with tests/ood)
