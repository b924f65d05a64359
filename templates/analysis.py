"""Association between template choices and outcomes in a training run, after STATe.

STATe (Structured Action Templates, Bamberger et al., arXiv 2602.14265) samples a
template per turn and then estimates which choices are associated with success. For the records
of a run (see :mod:`erlgym.templates.records`), :func:`analyze_run` fits, separately for
action trajectories (first attempts and retries) and for reflections:

* a presence model: the outcome regressed on one indicator per choice (``dim=choice``,
  the choice was used at some turn), with an L2 penalty and no reference level. Each
  effect is therefore roughly relative to the average choice of its dimension, in
  log-odds for ``target="success"`` and in reward units for ``target="reward"``;
* a LASSO over the features of :func:`~erlgym.templates.features.sequence_features`
  (presence, position-specific, within-turn pairs, turn-to-turn sequences). Features are
  standardized, the penalty is chosen by cross-validation with folds that keep each task
  group together, and the coefficients are reported per feature present (not standardized);
* bootstrap 95% percentile intervals for both models, resampling whole groups, and the
  LASSO's selection frequency: the share of bootstrap fits in which a coefficient is nonzero;
* raw counts and rates per choice, the most frequent template sequences, and
  controllability: how often the generated text passed the check of the chosen choice.

The result also contains steering weights for :class:`~erlgym.templates.controllers.SteeredController`.
:mod:`erlgym.templates.fitting` fits the models, and :mod:`erlgym.templates.report` writes
the result as ``report.md``, ``analysis.json`` and ``steering.json``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from erlgym.templates.library import Template, TemplateLibrary
from erlgym.templates.records import (SECTION_KINDS, TemplateAnalysisError, TemplateRecord, check_followed,
                                      load_records, load_section_library, parse_templates)

if TYPE_CHECKING:
    from erlgym.templates.fitting import LassoFit, PresenceModel

TARGETS = ("success", "reward")
PENALTY_RULES = ("1se", "min")
FEATURE_KINDS = ("presence", "position", "pair", "sequence")
STEERABLE_KINDS = ("presence", "position", "pair")
"""Feature kinds a SteeredController can score: a sequence feature needs the previous turn's choice."""

MIN_TRAJECTORIES = 2
MIN_RELIABLE_TRAJECTORIES = 20
"""Below this many trajectories the models are still fitted, but the report calls their intervals unreliable."""
MIN_BOOTSTRAP_GROUPS = 5
"""With fewer task groups a group bootstrap has too few distinct resamples, so trajectories are resampled instead."""
STEERING_TEMPERATURE = 0.5
TOP_SEQUENCES = 10


@dataclass(frozen=True)
class AnalysisOptions:
    """Settings of :func:`analyze_run`."""

    target: str = "success"
    """Outcome to explain: "success" (0/1, logistic models) or "reward" (linear models)."""
    max_position: int = 3
    """Turns at or after this index share the position ``t{max_position}`` in feature names."""
    min_count: int = 5
    """LASSO features seen in fewer trajectories than this are dropped."""
    bootstrap: int = 200
    """Bootstrap resamples for the intervals, or 0 to skip the intervals."""
    seed: int = 0
    sequence_turns: int = 2
    """Turns per sequence in the table of most frequent template sequences."""
    penalty_rule: str = "1se"
    """LASSO penalty: "min", the minimum held-out loss, or "1se", the strongest penalty whose loss is within one
    standard error of that minimum, which selects fewer features that are not associated with the outcome."""

    def validate(self) -> "AnalysisOptions":
        """Return the options unchanged, or raise :class:`TemplateAnalysisError` naming the invalid one."""
        if self.target not in TARGETS:
            raise TemplateAnalysisError(f"invalid target {self.target!r}; valid targets: {', '.join(TARGETS)}")
        if self.penalty_rule not in PENALTY_RULES:
            raise TemplateAnalysisError(f"invalid penalty rule {self.penalty_rule!r}; valid rules: "
                                        f"{', '.join(PENALTY_RULES)}")
        for name, minimum in (("max_position", 0), ("min_count", 1), ("bootstrap", 0), ("sequence_turns", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise TemplateAnalysisError(f"{name} must be an integer >= {minimum}, got {value!r}")
        return self


@dataclass
class SequenceStats:
    """A sequence of templates over the first turns, with the outcomes of the trajectories that began with it."""

    templates: list[str]
    trajectories: int
    success_rate: float
    mean_reward: float


@dataclass
class ChoiceControl:
    """How often the turns that used a choice passed its check."""

    choice: str
    has_check: bool
    turns: int
    """Turns that used the choice."""
    turns_checked: int
    turns_followed: int
    follow_rate: float | None


@dataclass
class DimensionControl:
    dimension: str
    turns_checked: int
    turns_followed: int
    follow_rate: float | None
    choices: list[ChoiceControl]


@dataclass
class SectionAnalysis:
    """The analysis of one kind of trajectory (actions or reflections) with its library."""

    section: str
    kinds: list[str]
    library: str
    library_source: str
    target: str
    trajectories: int
    groups: int
    success_rate: float
    mean_reward: float
    notes: list[str]
    """Caveats in plain sentences: too few trajectories, a constant outcome, no effect that excludes 0."""
    presence: PresenceModel
    lasso: LassoFit
    sequences: list[SequenceStats]
    controllability: list[DimensionControl]
    steering: dict[str, Any]
    """The content of the steering file, see :func:`steering_weights`."""


@dataclass
class RunAnalysis:
    run_dir: str
    options: AnalysisOptions
    sections: dict[str, SectionAnalysis]


def analyze_run(run_dir: str | Path, options: AnalysisOptions | None = None) -> RunAnalysis:
    """Analyse the action records and the reflection records of ``run_dir``, each kind separately.

    Raises:
        TemplateAnalysisError: If the records or libraries are missing or invalid, or a
            section has fewer than 2 trajectories.
    """
    options = (options or AnalysisOptions()).validate()
    records = load_records(run_dir)
    sections = {}
    for section, kinds in SECTION_KINDS.items():
        chosen = [record for record in records if record.kind in kinds]
        if not chosen:
            continue
        library = load_section_library(run_dir, section, chosen)
        sections[section] = analyze_records(chosen, library, options, section=section, run_dir=str(run_dir))
    return RunAnalysis(run_dir=str(run_dir), options=options, sections=sections)


def analyze_records(records: list[TemplateRecord], library: TemplateLibrary, options: AnalysisOptions,
                    section: str = "actions", run_dir: str = "") -> SectionAnalysis:
    """Fit the presence model and the LASSO to ``records``, sampled from ``library``, and summarize them.

    Raises:
        TemplateAnalysisError: If there are fewer than 2 records or a record does not match the library.
    """
    # scikit-learn takes a second or so to import, so `erlgym` loads it only to fit models.
    from erlgym.templates.fitting import fit_lasso, fit_presence_model

    options.validate()
    if len(records) < MIN_TRAJECTORIES:
        count = f"{len(records)} trajector{'y' if len(records) == 1 else 'ies'}"
        raise TemplateAnalysisError(f"{section}: {count} in {run_dir or 'the records'}, but the analysis needs at "
                                    f"least {MIN_TRAJECTORIES}; train for more steps")
    episodes = [parse_templates(record, library, run_dir) for record in records]
    for record in records:
        check_followed(record, library, run_dir)

    success = np.asarray([record.success for record in records], dtype=np.float64)
    reward = np.asarray([record.reward for record in records], dtype=np.float64)
    outcome = success if options.target == "success" else reward
    group_names = sorted({record.group for record in records})
    group_index = {name: index for index, name in enumerate(group_names)}
    groups = np.asarray([group_index[record.group] for record in records])
    rng = np.random.default_rng(options.seed)

    notes = []
    if len(records) < MIN_RELIABLE_TRAJECTORIES:
        notes.append(f"Only {len(records)} trajectories (fewer than {MIN_RELIABLE_TRAJECTORIES}): the models are "
                     "fitted anyway, but their intervals are unreliable.")
    constant = _constant_outcome_reason(outcome, options.target)
    if constant:
        notes.append(f"{constant}, so the outcome is constant and no model can relate it to the choices. The "
                     "steering weights are all 0.")
    if len(group_names) < MIN_BOOTSTRAP_GROUPS and options.bootstrap > 0 and not constant:
        notes.append(f"Only {len(group_names)} task group(s) (fewer than {MIN_BOOTSTRAP_GROUPS}), so the bootstrap "
                     "resamples single trajectories. Trajectories of one task are correlated, so the intervals "
                     "are too narrow.")

    presence = fit_presence_model(episodes, success, reward, library, options, groups, rng, constant)
    lasso = fit_lasso(episodes, success, reward, options, groups, rng, constant)
    notes.extend(_model_notes(presence, lasso, options))

    analysis = SectionAnalysis(
        section=section, kinds=sorted({record.kind for record in records}), library=library.name,
        library_source=library.source, target=options.target, trajectories=len(records), groups=len(group_names),
        success_rate=float(success.mean()), mean_reward=float(reward.mean()), notes=notes, presence=presence,
        lasso=lasso, sequences=sequence_table(records, options.sequence_turns),
        controllability=controllability_table(records, episodes, library), steering={})
    analysis.steering = steering_weights(analysis, library, run_dir, options)
    return analysis


def _constant_outcome_reason(outcome: np.ndarray, target: str) -> str:
    if np.ptp(outcome) > 0:
        return ""
    if target == "success":
        return f"All {len(outcome)} trajectories {'succeeded' if outcome[0] == 1 else 'failed'}"
    return f"All {len(outcome)} trajectories have reward {outcome[0]:g}"


def _model_notes(presence: PresenceModel, lasso: LassoFit, options: AnalysisOptions) -> list[str]:
    notes = []
    for name, fit in (("presence model", presence), ("LASSO", lasso)):
        if fit.bootstrap_skipped:
            notes.append(f"{fit.bootstrap_skipped} of {options.bootstrap} bootstrap resamples of the {name} had a "
                         f"single outcome class and were skipped, so its intervals rest on {fit.bootstrap_fits}.")
    if presence.fitted and options.bootstrap > 0:
        excluding = [effect for effect in presence.effects if _excludes_zero(effect.ci_low, effect.ci_high)]
        if not excluding:
            notes.append("No choice effect's 95% interval excludes 0, so these data show no reliable association "
                         "between any single choice and the outcome.")
    if lasso.fitted and not lasso.selected:
        notes.append("The LASSO selected no feature at the cross-validated penalty, so no feature predicts held-out "
                     "outcomes better than their mean does.")
    elif lasso.fitted and options.bootstrap > 0:
        if not any(_excludes_zero(feature.ci_low, feature.ci_high) for feature in lasso.selected):
            notes.append("No LASSO coefficient's 95% interval excludes 0, so no selected feature is reliable.")
    return notes


def _excludes_zero(low: float | None, high: float | None) -> bool:
    return low is not None and high is not None and (low > 0 or high < 0)


def feature_kind(name: str) -> str:
    """Return the kind of a feature name of :mod:`erlgym.templates.features`: one of :data:`FEATURE_KINDS`."""
    if ">" in name:
        return "sequence"
    if "*" in name:
        return "pair"
    if name.startswith("t") and ":" in name:
        return "position"
    return "presence"


# ---------------------------------------------------------------------- tables


def sequence_table(records: list[TemplateRecord], turns: int, top: int = TOP_SEQUENCES) -> list[SequenceStats]:
    """Return the ``top`` most frequent template sequences of the first ``turns`` turns, most frequent first."""
    outcomes: dict[tuple[str, ...], list[TemplateRecord]] = {}
    for record in records:
        outcomes.setdefault(record.templates[:turns], []).append(record)
    rows = [SequenceStats(templates=list(key), trajectories=len(members),
                          success_rate=float(np.mean([member.success for member in members])),
                          mean_reward=float(np.mean([member.reward for member in members])))
            for key, members in outcomes.items()]
    rows.sort(key=lambda row: (-row.trajectories, -row.success_rate, row.templates))
    return rows[:top]


def controllability_table(records: list[TemplateRecord], episodes: list[list[Template]],
                          library: TemplateLibrary) -> list[DimensionControl]:
    """Count, per dimension and choice, the turns that used the choice and how many passed its check."""
    used: Counter[tuple[str, str]] = Counter()
    checked: Counter[tuple[str, str]] = Counter()
    followed: Counter[tuple[str, str]] = Counter()
    for record, templates in zip(records, episodes):
        for template, verdicts in zip(templates, record.followed):
            chosen = template.as_dict()
            for dimension, choice in template.choices:
                used[dimension, choice] += 1
            for dimension, verdict in verdicts.items():
                checked[dimension, chosen[dimension]] += 1
                followed[dimension, chosen[dimension]] += int(verdict)

    table = []
    for dimension in library.dimensions:
        rows = []
        for choice in dimension.choices:
            key = (dimension.id, choice.id)
            rows.append(ChoiceControl(choice=choice.id, has_check=choice.check is not None, turns=used[key],
                                      turns_checked=checked[key], turns_followed=followed[key],
                                      follow_rate=followed[key] / checked[key] if checked[key] else None))
        total_checked = sum(row.turns_checked for row in rows)
        total_followed = sum(row.turns_followed for row in rows)
        table.append(DimensionControl(dimension=dimension.id, turns_checked=total_checked,
                                      turns_followed=total_followed,
                                      follow_rate=total_followed / total_checked if total_checked else None,
                                      choices=rows))
    return table


# ---------------------------------------------------------------------- steering


def steering_weights(analysis: SectionAnalysis, library: TemplateLibrary, run_dir: str,
                     options: AnalysisOptions) -> dict[str, Any]:
    """Return the steering file for :meth:`SteeredController.from_file`, from the fits of ``analysis``.

    The weights are the LASSO's nonzero coefficients of the features a controller can score
    (presence, position-specific and within-turn pairs, not sequences). When the LASSO has
    none, they are the presence model's effects, and when neither model was fitted, every
    choice gets weight 0, which makes the controller uniform.
    """
    weights: dict[str, float] = {}
    source = "none"
    if analysis.lasso.fitted:
        weights = {feature.feature: feature.coefficient for feature in analysis.lasso.selected
                   if feature.kind in STEERABLE_KINDS}
        source = "lasso" if weights else source
    if not weights and analysis.presence.fitted:
        weights = {effect.feature: effect.effect for effect in analysis.presence.effects if effect.effect is not None}
        source = "presence"
    if not weights:
        weights = {f"{dimension.id}={choice.id}": 0.0 for dimension in library.dimensions
                   for choice in dimension.choices}
        source = "none"
    # The position features of turn max_position also count every later turn, so the steered
    # controller reads max_position and scores later turns with that turn's weights.
    return {"library": library.name, "temperature": STEERING_TEMPERATURE, "weights": weights,
            "target": options.target, "fitted_on": run_dir, "trajectories": analysis.trajectories,
            "source": source, "max_position": options.max_position}
