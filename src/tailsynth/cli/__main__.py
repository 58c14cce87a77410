"""`python -m tailsynth.cli` (what `accelerate launch -m` needs)."""

from . import app

app()
