"""Feature names of template choices, shared by the association analysis and the steered controller.

* ``dimension=choice``: the choice was used at some turn (presence).
* ``t{k}:dimension=choice``: the choice was used at turn k (position-specific).
* ``t{k}:dimension=choice*t{k}:other=choice``: two choices of one template at turn k.
* ``t{k}:dimension=choice>t{k+1}:dimension=choice``: a choice at turn k followed by one at
  turn k + 1 in the same dimension (a sequence). Only the analysis uses these, because a
  controller picking a turn's template would need the previous turn's choice to score it.
"""

from __future__ import annotations

from itertools import combinations

from erlgym.templates.library import Template


def template_features(template: Template, position: int) -> list[str]:
    """Return the presence, position-specific and within-turn pair features of ``template`` at turn ``position``."""
    presence = [f"{dimension}={choice}" for dimension, choice in template.choices]
    positioned = [f"t{position}:{name}" for name in presence]
    pairs = [f"{first}*{second}" for first, second in combinations(positioned, 2)]
    return presence + positioned + pairs


def sequence_features(templates: list[Template], max_position: int | None = None) -> set[str]:
    """Return the set of every feature of an episode's turns, including sequence features.

    Turns at or beyond ``max_position`` are counted as turn ``max_position`` so that long
    episodes do not create one rare feature per late turn.
    """
    names: set[str] = set()
    positions = [min(k, max_position) if max_position is not None else k for k in range(len(templates))]
    for template, position in zip(templates, positions):
        names.update(template_features(template, position))
    for k in range(len(templates) - 1):
        if positions[k + 1] == positions[k]:
            continue
        for (dimension, choice), (_, next_choice) in zip(templates[k].choices, templates[k + 1].choices):
            names.add(f"t{positions[k]}:{dimension}={choice}>t{positions[k + 1]}:{dimension}={next_choice}")
    return names
