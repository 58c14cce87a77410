"""Rewrite the model cards of shipped synthesizers from the older synthesizer-only schema
(tailsynth-synthesizer-card/1: model_card.json + MODEL_CARD.md) into the one card schema of tailsynth.cards
(model_card.json + model_card.md), every figure carried over from the old JSON; the weights are not touched.

    python tools/upgrade_model_cards.py models/synth-dermamnist models/synth-ham64

`created` is the date git gives for the old card's last commit (none outside a git checkout).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tailsynth.cards import CARD_JSON, write_card
from tailsynth.diffusion.card import OLD_SCHEMA, card_sections, upgrade_card
from tailsynth.diffusion.model import model_hash


def _created(path: Path) -> str | None:
    out = subprocess.run(["git", "log", "-1", "--format=%cI", "--", path.name], cwd=path.parent,
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() or None


def upgrade(folder: Path) -> str:
    path = folder / CARD_JSON
    old = json.loads(path.read_text())
    if old.get("format") != OLD_SCHEMA:
        return f"{folder}: already {old.get('schema') or old.get('format')}, left as it is"
    if model_hash(folder) != old["weights_hash"]:
        raise SystemExit(f"{folder}: weights do not match the card's weights_hash; not upgrading")
    card = upgrade_card(old, created=_created(path))
    write_card(folder, card, card_sections(card))
    (folder / "MODEL_CARD.md").unlink(missing_ok=True)
    return f"{folder}: {OLD_SCHEMA} -> {card['schema']} (weights {card['weights_hash']})"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    for folder in argv:
        print(upgrade(Path(folder)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
