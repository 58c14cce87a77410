"""One model-card schema for every model tailsynth ships or exports (the classifier in the serving repository, the
synthesizers under models/), laid out like a MONAI bundle's metadata: what the model is (kind, name, version,
format), what it is for (intended use), what goes in and comes out (inputs, outputs, classes), what it learnt from
(data revision), how good it is (metrics) and how it changed (changelog). Kind-specific details (the classifier's
lineage and ONNX parity, a synthesizer's recipe and weight hash) sit beside those fields.

One file pair per model folder: model_card.json for machines and model_card.md for people, both written by
`write_card`; the HTML page is rendered from the same sections (`card_html`). Base tier: imports only base modules.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from .errors import DataError
from .formatting import fmt
from .pages import Section, sections_html, sections_markdown

SCHEMA = "tailsynth-model-card/1"
CARD_JSON, CARD_MD = "model_card.json", "model_card.md"
KINDS = ("classifier", "synthesizer")
REQUIRED = ("schema", "kind", "name", "version", "created", "format", "intended_use", "inputs", "outputs",
            "classes", "data_revision", "metrics", "changelog")


def make_card(kind: str, name: str, version: str, *, format: dict, intended_use: str, inputs: dict, outputs: dict,
              classes: Sequence[str], data_revision: str | None, metrics: dict, changelog: dict,
              created: str | None = None, **details) -> dict:
    """A card of the one schema: the common fields first, then the kind's DETAILS."""
    if kind not in KINDS:
        raise ValueError(f"model card kind {kind!r}: expected one of {', '.join(KINDS)}")
    card = {"schema": SCHEMA, "kind": kind, "name": name, "version": version,
            "created": created or datetime.now(UTC).isoformat(timespec="seconds"), "format": format,
            "intended_use": intended_use, "inputs": inputs, "outputs": outputs, "classes": list(classes),
            "data_revision": data_revision, "metrics": metrics, "changelog": changelog}
    return {**card, **details}


def check_card(card: dict, where: str | Path) -> dict:
    """CARD when it is of this schema; a DataError naming WHERE and the expected schema otherwise."""
    found = card.get("schema", card.get("format") if isinstance(card.get("format"), str) else None)
    if found != SCHEMA:
        raise DataError(f"{where}: model card schema {found!r}, expected {SCHEMA!r} (an old or foreign card: "
                        "regenerate it, e.g. python tools/upgrade_model_cards.py for a shipped synthesizer)")
    missing = [k for k in REQUIRED if k not in card]
    if missing:
        raise DataError(f"{where}: model card ({SCHEMA}) lacks {', '.join(missing)}")
    return card


def read_card(folder: str | Path) -> dict | None:
    """FOLDER/model_card.json, checked; None when the folder has no card."""
    path = Path(folder) / CARD_JSON
    if not path.is_file():
        return None
    return check_card(json.loads(path.read_text()), path)


def common_sections(card: dict) -> list[Section]:
    """What every card shows: format, classes, data revision, inputs and outputs; the changelog comes last."""
    facts = [["kind", card["kind"]], ["version", f"`{card['version']}`"],
             ["format", ", ".join(f"{k}: {v}" for k, v in card["format"].items())],
             ["classes", ", ".join(card["classes"])], ["data revision", f"`{card['data_revision']}`"]]
    io = [[direction, name, ", ".join(f"{k} {_short(v)}" for k, v in spec.items())]
          for direction, specs in (("input", card["inputs"]), ("output", card["outputs"]))
          for name, spec in specs.items()]
    return [("", "facts", [["item", "value"], facts]),
            ("Inputs and outputs", "facts", [["", "name", "description"], io])]


def changelog_section(card: dict) -> Section:
    return ("Changelog", "facts", [["version", "change"], [[f"`{v}`", c] for v, c in card["changelog"].items()]])


def _short(v) -> str:
    """A shape as 1×28×28×3, a list of floats to 4 significant digits, anything else as str()."""
    if isinstance(v, list) and v and all(isinstance(d, int) for d in v):
        return "×".join(str(d) for d in v)
    if isinstance(v, list) and v and all(isinstance(d, float) for d in v):
        return "[" + ", ".join(fmt(d, 4, general=True) for d in v) + "]"
    return str(v)


def card_title(card: dict) -> str:
    return f"Model card: {card['name']} ({card['kind']}) {card['version']}"


def card_summary(card: dict) -> str:
    return f"**Intended use:** {card['intended_use']}."


def write_card(folder: str | Path, card: dict, sections: Sequence[Section]) -> Path:
    """FOLDER/model_card.json (CARD, checked) and FOLDER/model_card.md (the common sections, then SECTIONS, then
    the changelog); returns the JSON's path."""
    folder = Path(folder)
    path = folder / CARD_JSON
    check_card(card, path)
    path.write_text(json.dumps(card, indent=2, default=str) + "\n")
    (folder / CARD_MD).write_text(sections_markdown(card_title(card), card_summary(card),
                                                    all_sections(card, sections)))
    return path


def all_sections(card: dict, sections: Sequence[Section]) -> list[Section]:
    return [*common_sections(card), *sections, changelog_section(card)]


def card_html(card: dict, sections: Sequence[Section], nav: Sequence[tuple[str, str]] = ()) -> str:
    """The card as an HTML page (the same sections as its markdown)."""
    return sections_html(card_title(card), card_summary(card), all_sections(card, sections), nav=nav)
