"""The options table in docs/training.md is generated from TrainConfig; this test keeps it current.

Run ``python tests/test_docs.py`` to rewrite the table after a field changes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from erlgym.erl.config import TrainConfig

TRAINING_DOC = Path(__file__).resolve().parent.parent / "docs" / "training.md"
HEADER = "| option | default | description |\n|---|---|---|\n"


def options_table() -> str:
    rows = []
    for spec in dataclasses.fields(TrainConfig):
        flag = "--" + spec.name.replace("_", "-")
        default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
        option = f"`{flag}` / `--no-{flag[2:]}`" if spec.type in ("bool", bool) else f"`{flag}`"
        shown = "none" if default is None else f"`{default}`"
        text = spec.metadata.get("help", "")
        choices = spec.metadata.get("choices")
        if choices:
            text += " Choices: " + ", ".join(f"`{choice}`" for choice in choices) + "."
        rows.append(f"| {option} | {shown} | {text} |\n")
    return HEADER + "".join(rows)


def current_table(doc: str) -> str:
    start = doc.index(HEADER)
    end = doc.index("\n\n", start)
    return doc[start:end + 1]


def test_options_table_matches_train_config():
    doc = TRAINING_DOC.read_text()

    assert current_table(doc) == options_table(), "docs/training.md is stale: run python tests/test_docs.py"


if __name__ == "__main__":
    doc = TRAINING_DOC.read_text()
    TRAINING_DOC.write_text(doc.replace(current_table(doc), options_table()))
