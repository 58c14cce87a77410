"""One model-card schema (tailsynth.cards) for the exported classifier and the shipped synthesizers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tailsynth.cards import CARD_JSON, CARD_MD, REQUIRED, SCHEMA, check_card, make_card, read_card, write_card
from tailsynth.data.errors import DataError

ROOT = Path(__file__).resolve().parents[1]


def _card(**over) -> dict:
    fields = {"format": {"weights": "x"}, "intended_use": "research use", "inputs": {"image": {"dtype": "UINT8"}},
              "outputs": {"probabilities": {"dtype": "FP32"}}, "classes": ["NV", "DF"], "data_revision": "sha256:ab",
              "metrics": {"balanced_accuracy": 0.5}, "changelog": {"v1": "first"}}
    return make_card("classifier", "m", "v1", **{**fields, **over}, backbone="resnet18")


def test_written_card_reads_back_with_its_markdown(tmp_path):
    card = _card()
    write_card(tmp_path, card, [("Extra", "text", ["a **kind** section"])])
    assert read_card(tmp_path) == json.loads((tmp_path / CARD_JSON).read_text()) == card
    md = (tmp_path / CARD_MD).read_text()
    for needle in ("# Model card: m (classifier) v1", "research use", "## Inputs and outputs", "## Extra",
                   "## Changelog", "sha256:ab"):
        assert needle in md, needle
    assert list(card)[:len(REQUIRED)] == list(REQUIRED)  # the common fields first, then the kind's


def test_old_or_foreign_cards_are_errors_naming_the_schema(tmp_path):
    with pytest.raises(DataError, match=r"'tailsynth-synthesizer-card/1', expected 'tailsynth-model-card/1'"):
        check_card({"format": "tailsynth-synthesizer-card/1", "name": "s"}, tmp_path / CARD_JSON)
    with pytest.raises(DataError, match="schema None"):
        check_card({"name": "lesion-classifier", "version": "abc"}, "old/model_card.json")
    broken = {k: v for k, v in _card().items() if k != "changelog"}
    with pytest.raises(DataError, match="lacks changelog"):
        check_card(broken, "x")
    assert read_card(tmp_path) is None  # no card at all: nothing to check


@pytest.mark.parametrize("folder", sorted((ROOT / "models").glob("synth-*")))
def test_shipped_synthesizers_carry_the_one_schema(folder):
    card = read_card(folder)
    assert card["schema"] == SCHEMA and card["kind"] == "synthesizer"
    assert (folder / CARD_MD).read_text().startswith(f"# Model card: {card['name']} (synthesizer)")


def test_classifier_and_synthesizer_cards_share_the_common_fields():
    from tailsynth.diffusion.card import upgrade_card

    old = {"name": "s", "format": "tailsynth-synthesizer-card/1", "intended_use": "research",
           "data": {"source": "d.npz", "sha256": "ff", "split": "train"}, "classes": ["DF"], "resolution": 8,
           "gates": {"inpaint": {}}, "gates_all_pass": False, "weights_hash": "abc", "weights_mb": 1.0,
           "parameters": 3, "recipe": {}}
    synth = upgrade_card(old, created="2026-01-01T00:00:00+00:00")
    assert check_card(synth, "s") and synth["data_revision"] == "sha256:ff" and synth["version"] == "abc"
    assert synth["metrics"] == {"gates": {"inpaint": {}}, "gates_all_pass": False}
    assert list(synth)[:len(REQUIRED)] == list(_card())[:len(REQUIRED)] == list(REQUIRED)


def test_lineage_prefers_the_current_card_over_an_older_export_of_the_same_weights(tmp_path):
    """A re-run into the same folder keeps its earlier runs' artifacts: the same model version may have a card of an
    older schema beside the current one. The current card is found; an old card alone is an error naming it."""
    import json

    import pytest

    from tailsynth.cards import CARD_JSON, make_card
    from tailsynth.errors import DataError
    from tailsynth.lineage import find_model_card

    old = tmp_path / "runs" / "a-older" / "lesion-classifier"
    new = tmp_path / "runs" / "b-newer" / "lesion-classifier"
    for d in (old, new):
        d.mkdir(parents=True)
    (old / CARD_JSON).write_text(json.dumps({"version": "abc123", "kind": "classifier"}))
    card = make_card("classifier", "lesion-classifier", "abc123", format={}, intended_use="research",
                     inputs={}, outputs={}, classes=["NV"], data_revision=None, metrics={}, changelog={})
    (new / CARD_JSON).write_text(json.dumps(card))
    assert find_model_card("abc123", [tmp_path / "runs"]) == new / CARD_JSON

    (new / CARD_JSON).unlink()
    with pytest.raises(DataError, match=str(old / CARD_JSON)):
        find_model_card("abc123", [tmp_path / "runs"])
