"""Controllers: choose the template of each turn, and learn from the rewards that followed.

Every controller returns, for ``choose(count, position)``, ``count`` templates for turn
``position`` (0 for an episode's first reply, 1 for the next, ...), and receives
``update(episodes, rewards)`` after the episodes ended: for each episode, the templates
of its turns and its reward.

* :class:`UniformController`: every template equally likely.
* :class:`BanditController`: one arm per choice of each dimension, UCB1 or Thompson
  sampling on the mean reward of the episodes the choice was used in.
* :class:`SteeredController`: samples templates in proportion to exp(score / temperature),
  where the score sums fitted feature weights (written by ``erlgym templates analyze``).
* :class:`ForcedController`: a fixed sequence of templates, one per turn.

Controllers are deterministic in their seed and expose ``state_dict`` and
``load_state_dict`` so that a resumed run continues with the same statistics.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from erlgym.templates.features import template_features
from erlgym.templates.library import Template, TemplateError, TemplateLibrary

CONTROLLERS = ("uniform", "ucb", "thompson", "steered", "forced")


class Controller:
    """Base class: a seeded random generator and no learned state."""

    kind = "base"

    def __init__(self, library: TemplateLibrary, seed: int = 0):
        self.library = library
        self.rng = np.random.default_rng(seed)

    def choose(self, count: int, position: int = 0) -> list[Template]:
        raise NotImplementedError

    def update(self, episodes: list[list[Template]], rewards: list[float]) -> None:
        """Learn from ``rewards[i]``, the reward of an episode whose turns used ``episodes[i]``; the base class learns nothing."""
        if len(episodes) != len(rewards):
            raise ValueError(f"got {len(episodes)} episodes and {len(rewards)} rewards")

    def reseed(self, seed: int | list[int]) -> None:
        """Replace the random generator, keeping every learned statistic."""
        self.rng = np.random.default_rng(seed)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "library": self.library.to_dict(), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or "rng" not in state:
            raise TemplateError("controller state has no random generator state ('rng'); it is not a saved controller")
        if state.get("kind") != self.kind:
            raise TemplateError(f"controller state is for a {state.get('kind')!r} controller, not {self.kind!r}")
        if "library" in state and state["library"] != self.library.to_dict():
            saved = state["library"].get("name") if isinstance(state["library"], dict) else None
            raise TemplateError(f"controller state was saved for another version of library {saved!r}, not the "
                                f"library {self.library.name!r} loaded now; restore the library file the run used")
        self.rng.bit_generator.state = state["rng"]


class UniformController(Controller):
    """Choose each dimension's choice uniformly at random, independently."""

    kind = "uniform"

    def choose(self, count: int, position: int = 0) -> list[Template]:
        templates = []
        for _ in range(count):
            choices = tuple((dimension.id, dimension.choices[int(self.rng.integers(len(dimension.choices)))].id)
                            for dimension in self.library.dimensions)
            templates.append(Template(choices))
        return templates


class BanditController(Controller):
    """One bandit per dimension over its choices, on the mean reward of the episodes a choice was used in.

    ``method="ucb"`` picks argmax of mean + c·sqrt(ln N / n) (UCB1; untried choices first,
    ties broken at random). Within one call, each pick counts as a pull with the arm's
    current mean, so a batch spreads over near-equal arms instead of repeating one.
    ``method="thompson"`` samples each choice's mean from Beta(1 + Σr, 1 + Σ(1 - r)) with
    rewards clipped to [0, 1], which suits success rewards and F1 scores.
    """

    def __init__(self, library: TemplateLibrary, seed: int = 0, method: str = "ucb", exploration: float = 1.0):
        super().__init__(library, seed)
        if method not in ("ucb", "thompson"):
            raise TemplateError(f"unknown bandit method {method!r}; use 'ucb' or 'thompson'")
        if not math.isfinite(exploration) or exploration < 0:
            raise TemplateError(f"bandit exploration must be a finite number >= 0, got {exploration!r}")
        self.kind = method
        self.exploration = exploration
        self.pulls = {dimension.id: np.zeros(len(dimension.choices)) for dimension in library.dimensions}
        self.reward_sums = {dimension.id: np.zeros(len(dimension.choices)) for dimension in library.dimensions}

    def choose(self, count: int, position: int = 0) -> list[Template]:
        per_dimension = {dimension.id: self._choose_dimension(dimension.id, count)
                         for dimension in self.library.dimensions}
        return [Template(tuple((dimension.id, dimension.choices[per_dimension[dimension.id][row]].id)
                               for dimension in self.library.dimensions))
                for row in range(count)]

    def _choose_dimension(self, dimension_id: str, count: int) -> list[int]:
        pulls = self.pulls[dimension_id].copy()
        sums = self.reward_sums[dimension_id].copy()
        picks = []
        for _ in range(count):
            if self.kind == "thompson":
                successes = np.clip(sums, 0, None)
                failures = np.clip(pulls - sums, 0, None)
                scores = self.rng.beta(1.0 + successes, 1.0 + failures)
            else:
                means = np.divide(sums, pulls, out=np.zeros_like(sums), where=pulls > 0)
                total = max(pulls.sum(), 1.0)
                bonus = self.exploration * np.sqrt(np.log(total) / np.maximum(pulls, 1e-12))
                scores = np.where(pulls > 0, means + bonus, np.inf)
            best = np.flatnonzero(scores == scores.max())
            pick = int(best[self.rng.integers(len(best))])
            picks.append(pick)
            if self.kind == "ucb":
                # A virtual pull at the current mean keeps the rest of the batch from repeating this arm.
                mean = sums[pick] / pulls[pick] if pulls[pick] > 0 else 0.0
                pulls[pick] += 1
                sums[pick] += mean
        return picks

    def update(self, episodes: list[list[Template]], rewards: list[float]) -> None:
        """Count one pull of every choice an episode used, at any number of its turns, with the episode's reward.

        Counting a choice once per episode keeps long episodes, which are usually failures,
        from outweighing short ones.
        """
        super().update(episodes, rewards)
        for templates, reward in zip(episodes, rewards):
            value = float(reward)
            if self.kind == "thompson":
                value = min(max(value, 0.0), 1.0)
            used = {pair for template in templates for pair in template.choices}
            for dimension_id, choice_id in sorted(used):
                index = self._index(dimension_id, choice_id)
                self.pulls[dimension_id][index] += 1
                self.reward_sums[dimension_id][index] += value

    def _index(self, dimension_id: str, choice_id: str) -> int:
        dimension = self.library.dimension(dimension_id)
        return [choice.id for choice in dimension.choices].index(dimension.choice(choice_id).id)

    def means(self) -> dict[str, float]:
        """Return the mean reward of every tried choice, keyed ``dimension=choice``."""
        result = {}
        for dimension in self.library.dimensions:
            for index, choice in enumerate(dimension.choices):
                if self.pulls[dimension.id][index] > 0:
                    result[f"{dimension.id}={choice.id}"] = float(
                        self.reward_sums[dimension.id][index] / self.pulls[dimension.id][index])
        return result

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["pulls"] = {key: value.tolist() for key, value in self.pulls.items()}
        state["reward_sums"] = {key: value.tolist() for key, value in self.reward_sums.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if not isinstance(state.get("pulls"), dict) or not isinstance(state.get("reward_sums"), dict):
            raise TemplateError("bandit controller state has no 'pulls' and 'reward_sums' counts")
        for dimension in self.library.dimensions:
            pulls = state["pulls"].get(dimension.id)
            sums = state["reward_sums"].get(dimension.id)
            if pulls is None or sums is None or len(pulls) != len(dimension.choices):
                raise TemplateError(f"controller state does not match library {self.library.name!r}: "
                                    f"dimension {dimension.id!r} has {len(dimension.choices)} choices")
            self.pulls[dimension.id] = np.asarray(pulls, dtype=np.float64)
            self.reward_sums[dimension.id] = np.asarray(sums, dtype=np.float64)


class SteeredController(Controller):
    """Sample templates with probability proportional to exp(score / temperature).

    The score of a template at a turn sums the weights of its features (see
    :func:`erlgym.templates.features.template_features`); features without a weight count 0.
    A low temperature concentrates on the best-scored templates, a high one approaches uniform.
    """

    kind = "steered"

    def __init__(self, library: TemplateLibrary, weights: dict[str, float], seed: int = 0, temperature: float = 0.5,
                 max_position: int | None = None):
        super().__init__(library, seed)
        if not math.isfinite(temperature) or temperature <= 0:
            raise TemplateError(f"steering temperature must be a finite number > 0, got {temperature!r}")
        bad = {name: value for name, value in weights.items()
               if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)}
        if bad:
            raise TemplateError(f"steering weights must be finite numbers; invalid: {bad}")
        unknown = [name for name in weights if not _names_library_choices(name, library)]
        if unknown:
            raise TemplateError(f"steering weights name features that are not choices of library {library.name!r}: "
                                f"{unknown[:5]}; fit the weights on a run that used this library")
        if max_position is not None and (isinstance(max_position, bool) or not isinstance(max_position, int)
                                         or max_position < 0):
            raise TemplateError(f"steering max_position must be an integer >= 0, got {max_position!r}")
        self.weights = dict(weights)
        self.temperature = temperature
        self.max_position = max_position
        """Turns at or after this position use the weights of this position, as the analysis counted them."""
        self.templates = library.all_templates()

    @classmethod
    def from_file(cls, library: TemplateLibrary, path: str | Path, seed: int = 0,
                  temperature: float | None = None) -> "SteeredController":
        """Load the steering weights that ``erlgym templates analyze`` writes (``steering.json``)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TemplateError(f"steering weights file {str(path)!r} not found; write one with "
                                "'erlgym templates analyze RUN_DIR'") from None
        except OSError as error:
            raise TemplateError(f"cannot read steering weights file {str(path)!r}: {error.strerror}; pass the "
                                "steering.json file that 'erlgym templates analyze RUN_DIR' writes") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise TemplateError(f"steering weights file {str(path)!r} is not valid JSON: {error}; write it again with "
                                "'erlgym templates analyze RUN_DIR'") from None
        if not isinstance(data, dict) or not isinstance(data.get("weights"), dict):
            raise TemplateError(f"steering weights file {str(path)!r} has no 'weights' object")
        if data.get("library") not in (None, library.name):
            raise TemplateError(f"steering weights file {str(path)!r} was fitted for library {data['library']!r}, "
                                f"not {library.name!r}")
        if temperature is None:
            temperature = data.get("temperature", 0.5)
            if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
                raise TemplateError(f"steering weights file {str(path)!r}: 'temperature' must be a number > 0, "
                                    f"got {temperature!r}")
        return cls(library, data["weights"], seed=seed, temperature=float(temperature),
                   max_position=data.get("max_position"))

    def scores(self, position: int = 0) -> np.ndarray:
        """Return the score of every template of :meth:`TemplateLibrary.all_templates` at turn ``position``."""
        if self.max_position is not None:
            position = min(position, self.max_position)
        return np.asarray([sum(self.weights.get(name, 0.0) for name in template_features(template, position))
                           for template in self.templates])

    def probabilities(self, position: int = 0) -> np.ndarray:
        logits = self.scores(position) / self.temperature
        logits -= logits.max()
        weights = np.exp(logits)
        return weights / weights.sum()

    def choose(self, count: int, position: int = 0) -> list[Template]:
        picks = self.rng.choice(len(self.templates), size=count, p=self.probabilities(position))
        return [self.templates[int(index)] for index in picks]


def _names_library_choices(feature: str, library: TemplateLibrary) -> bool:
    """Return whether every ``dimension=choice`` part of a feature name is a choice of ``library``."""
    for part in feature.replace(">", "*").split("*"):
        position, colon, pair = part.rpartition(":")
        if colon and not re.fullmatch(r"t\d+", position):
            return False
        dimension_id, separator, choice_id = pair.partition("=")
        if not separator:
            return False
        try:
            library.dimension(dimension_id).choice(choice_id)
        except TemplateError:
            return False
    return True


class ForcedController(Controller):
    """Use ``sequence[position]`` at each turn, and the last template of the sequence after its end."""

    kind = "forced"

    def __init__(self, library: TemplateLibrary, sequence: list[str] | str, seed: int = 0):
        super().__init__(library, seed)
        if isinstance(sequence, str):
            # A template id contains commas, so templates of a sequence string are separated by ";".
            sequence = [part.strip() for part in sequence.split(";") if part.strip()]
        if not sequence:
            raise TemplateError("a forced controller needs at least one template, for example "
                                f"{library.all_templates()[0].key!r}")
        self.sequence = [library.parse(key) for key in sequence]

    def choose(self, count: int, position: int = 0) -> list[Template]:
        return [self.sequence[min(position, len(self.sequence) - 1)]] * count


def build_controller(kind: str, library: TemplateLibrary, seed: int = 0, weights_path: str | Path | None = None,
                     sequence: list[str] | str | None = None, temperature: float | None = None) -> Controller:
    """Build the controller named ``kind`` (one of :data:`CONTROLLERS`) for ``library``."""
    if kind == "uniform":
        return UniformController(library, seed)
    if kind in ("ucb", "thompson"):
        return BanditController(library, seed, method=kind)
    if kind == "steered":
        if weights_path is None:
            raise TemplateError("the steered controller needs a weights file; write one with "
                                "'erlgym templates analyze RUN_DIR' and pass its steering.json")
        return SteeredController.from_file(library, weights_path, seed, temperature)
    if kind == "forced":
        return ForcedController(library, sequence or [], seed)
    raise TemplateError(f"unknown template controller {kind!r}; valid controllers: {', '.join(CONTROLLERS)}")
