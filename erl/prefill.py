"""STATe templates in rollouts: a controller's choice, prefilled into the assistant turn as token ids.

At each turn of an episode (and before each reflection), :class:`TemplatePrefill` gets a template from
its controller, tokenizes the template's prefill text (guidance sentences and
the prefix), and the rollout appends those ids to the context before the model generates.
The prefilled ids carry ``env_mask`` 0 (or sit in the prompt of a reflection sample), so
the trainer never computes a loss on text the model did not choose. The model's context is
its own turn starting with the template, so it continues the reasoning the template opened.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from erlgym.templates import Controller, Template, TemplateError, TemplateLibrary, build_controller, load_library

TEMPLATE_RECORDS_FILE = "templates.jsonl"
"""Run-directory file with one line per trajectory that used templates (read by ``erlgym templates analyze``)."""
TEMPLATE_LIBRARY_DIR = "templates"
"""Run-directory folder with copies of the libraries a run used: ``actions.json`` and ``reflections.json``."""
CONTROLLER_STATE_FILE = "template_controllers.json"
"""Checkpoint file with the controllers' state (random generator, bandit counts)."""


@dataclass
class TemplatePrefill:
    """A template library, the controller that picks from it, and the token ids of each template's prefill."""

    library: TemplateLibrary
    controller: Controller
    tokenizer: PreTrainedTokenizerBase
    _ids: dict[str, list[int]] = field(default_factory=dict, repr=False)
    _max_prefill: int | None = field(default=None, repr=False)

    def choose(self, count: int, position: int) -> list[Template]:
        return self.controller.choose(count, position)

    def prefill_ids(self, template: Template) -> list[int]:
        """Return the token ids of ``template``'s prefill text, tokenized once per template."""
        key = template.key
        if key not in self._ids:
            text = self.library.prefill(template)
            self._ids[key] = self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        return self._ids[key]

    @property
    def max_prefill_tokens(self) -> int:
        """The maximum prefill length of the library's templates, in tokens; a turn reserves this much context."""
        if self._max_prefill is None:
            self._max_prefill = max(len(self.prefill_ids(template)) for template in self.library.all_templates())
        return self._max_prefill

    def followed(self, template: Template, generated: str) -> dict[str, bool]:
        return self.library.followed(template, generated)


def build_prefill(library: str, controller: str, tokenizer: PreTrainedTokenizerBase, seed: int,
                  weights: str | None = None, sequence: str | None = None) -> TemplatePrefill:
    """Load ``library`` (a bundled name or a file) and build its controller.

    ``sequence`` lists the forced controller's templates separated by ``";"``, because a
    template id itself contains commas.
    """
    loaded = load_library(library)
    templates = [part.strip() for part in sequence.split(";") if part.strip()] if sequence else None
    return TemplatePrefill(loaded, build_controller(controller, loaded, seed=seed, weights_path=weights,
                                                    sequence=templates), tokenizer)


def save_libraries(run_dir: Path, actions: TemplatePrefill | None, reflections: TemplatePrefill | None) -> None:
    """Copy the libraries a run uses into ``run_dir/templates`` so that the analysis reads the exact files."""
    folder = run_dir / TEMPLATE_LIBRARY_DIR
    for name, prefill in (("actions", actions), ("reflections", reflections)):
        if prefill is None:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        source = Path(prefill.library.source)
        target = folder / f"{name}.json"
        if source.is_file():
            shutil.copyfile(source, target)
        else:
            target.write_text(json.dumps(prefill.library.to_dict(), indent=2) + "\n", encoding="utf-8")


def check_saved_libraries(run_dir: Path, actions: TemplatePrefill | None, reflections: TemplatePrefill | None) -> None:
    """Raise RunError when a resumed run's library differs from the copy its records were sampled from."""
    from erlgym.erl.errors import RunError

    for name, prefill in (("actions", actions), ("reflections", reflections)):
        copy = run_dir / TEMPLATE_LIBRARY_DIR / f"{name}.json"
        if prefill is None or not copy.is_file():
            continue
        try:
            saved = load_library(copy).to_dict()
        except TemplateError as error:
            raise RunError(f"Cannot read the run's copy of its template library: {error}") from None
        if saved != prefill.library.to_dict():
            raise RunError(f"The template library {prefill.library.source} differs from {copy}, the copy this run "
                           "started with, so its records and controller state would not match. Restore the library "
                           f"file from that copy, or start a new run.")


def save_controller_states(path: Path, actions: TemplatePrefill | None, reflections: TemplatePrefill | None) -> None:
    states: dict[str, Any] = {}
    if actions is not None:
        states["actions"] = actions.controller.state_dict()
    if reflections is not None:
        states["reflections"] = reflections.controller.state_dict()
    if states:
        path.write_text(json.dumps(states) + "\n", encoding="utf-8")


def load_controller_states(path: Path, actions: TemplatePrefill | None, reflections: TemplatePrefill | None) -> bool:
    """Restore controller states saved by :func:`save_controller_states`; return False when ``path`` is missing."""
    if not path.exists():
        return False
    states = json.loads(path.read_text(encoding="utf-8"))
    if actions is not None and "actions" in states:
        actions.controller.load_state_dict(states["actions"])
    if reflections is not None and "reflections" in states:
        reflections.controller.load_state_dict(states["reflections"])
    return True
