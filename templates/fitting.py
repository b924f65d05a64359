"""Model fits of the template analysis: the presence model and the LASSO, with bootstrap intervals.

:func:`erlgym.templates.analysis.analyze_records` calls :func:`fit_presence_model` and
:func:`fit_lasso`. The docstring of :mod:`erlgym.templates.analysis` describes the models.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import sklearn
from sklearn.linear_model import Lasso, LogisticRegression, Ridge
from sklearn.metrics import mean_squared_error
from sklearn.model_selection import GroupKFold, KFold

from erlgym.templates.analysis import FEATURE_KINDS, MIN_BOOTSTRAP_GROUPS, AnalysisOptions, feature_kind
from erlgym.templates.features import sequence_features
from erlgym.templates.library import Template, TemplateLibrary

CV_FOLDS = 5
PENALTY_GRID_SIZE = 16
"""Penalties tried by cross-validation, log-spaced over three decades from the one that zeroes every coefficient."""
PRESENCE_PENALTY = 1.0
"""L2 penalty of the presence model: C of the logistic regression, alpha of the ridge regression."""

# scikit-learn 1.8 deprecated ``penalty`` in favour of ``l1_ratio``. Before 1.8, ``l1_ratio`` is
# ignored unless ``penalty="elasticnet"``.
_SKLEARN_VERSION = tuple(int(part) for part in sklearn.__version__.split(".")[:2])
_L1_LOGISTIC = {"l1_ratio": 1.0} if _SKLEARN_VERSION >= (1, 8) else {"penalty": "l1"}


@dataclass
class ChoiceEffect:
    """One choice: how often it was used, the outcomes, and its presence-model effect."""

    feature: str
    dimension: str
    choice: str
    trajectories: int
    success_rate: float | None
    mean_reward: float | None
    effect: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None


@dataclass
class PresenceModel:
    """The presence model's fit, or in ``reason`` why it was not fitted."""

    fitted: bool
    model: str
    effects: list[ChoiceEffect]
    reason: str = ""
    bootstrap_unit: str = "group"
    bootstrap_fits: int = 0
    bootstrap_skipped: int = 0
    """Resamples with a single outcome class, where no logistic model can be fitted."""


@dataclass
class LassoFeature:
    """One LASSO feature with its coefficient at the chosen penalty."""

    feature: str
    kind: str
    trajectories: int
    success_rate: float
    mean_reward: float
    coefficient: float
    ci_low: float | None = None
    ci_high: float | None = None
    selection_frequency: float | None = None
    aliases: list[str] = field(default_factory=list)
    """Features with the same value in every trajectory, so the fit cannot tell them apart from this one."""


@dataclass
class LassoFit:
    """The LASSO's fit, or in ``reason`` why it was not fitted."""

    fitted: bool
    model: str
    features: list[LassoFeature]
    reason: str = ""
    penalty_name: str = ""
    penalty: float | None = None
    penalty_rule: str = ""
    cv_unit: str = ""
    cv_folds: int = 0
    cv_curve: list[dict[str, float]] = field(default_factory=list)
    """Mean held-out loss (log loss or squared error) at each penalty tried."""
    features_seen: int = 0
    features_rare: int = 0
    """Features dropped because fewer than ``min_count`` trajectories had them."""
    features_constant: int = 0
    """Features dropped because every trajectory had them."""
    bootstrap_unit: str = "group"
    bootstrap_fits: int = 0
    bootstrap_skipped: int = 0

    @property
    def selected(self) -> list[LassoFeature]:
        return [feature for feature in self.features if feature.coefficient != 0.0]


# ---------------------------------------------------------------------- presence model


def fit_presence_model(episodes: list[list[Template]], success: np.ndarray, reward: np.ndarray,
                       library: TemplateLibrary, options: AnalysisOptions, groups: np.ndarray,
                       rng: np.random.Generator, constant_reason: str = "") -> PresenceModel:
    """Regress the outcome on one indicator per choice, with an L2 penalty and group-bootstrap intervals."""
    outcome = success if options.target == "success" else reward
    if options.target == "success":
        model = f"L2-penalized logistic regression (C={PRESENCE_PENALTY:g}); effects in log-odds"
    else:
        model = f"ridge regression (alpha={PRESENCE_PENALTY:g}); effects in reward units"
    used = [{f"{dimension}={choice}" for template in templates for dimension, choice in template.choices}
            for templates in episodes]
    effects = []
    for dimension in library.dimensions:
        for choice in dimension.choices:
            name = f"{dimension.id}={choice.id}"
            mask = np.asarray([name in names for names in used])
            count = int(mask.sum())
            effects.append(ChoiceEffect(
                feature=name, dimension=dimension.id, choice=choice.id, trajectories=count,
                success_rate=float(success[mask].mean()) if count else None,
                mean_reward=float(reward[mask].mean()) if count else None))
    if constant_reason:
        return PresenceModel(fitted=False, model=model, effects=effects, reason=f"{constant_reason}.")

    # A choice never used, or used in every trajectory, has no contrast to estimate an effect from.
    fitted = [effect for effect in effects if 0 < effect.trajectories < len(episodes)]
    if not fitted:
        return PresenceModel(fitted=False, model=model, effects=effects,
                             reason="No choice varies across trajectories.")
    matrix = np.asarray([[effect.feature in names for effect in fitted] for names in used], dtype=np.float64)

    coefficients = _fit_presence(matrix, outcome, options.target)
    for effect, value in zip(fitted, coefficients):
        effect.effect = float(value)
    unit = _bootstrap_unit(groups)
    samples, skipped = _bootstrap(lambda rows: _fit_presence(matrix[rows], outcome[rows], options.target),
                                  groups, options, rng, unit)
    if samples is not None:
        for index, effect in enumerate(fitted):
            effect.ci_low, effect.ci_high = _percentile_interval(samples[:, index])
    return PresenceModel(fitted=True, model=model, effects=effects, bootstrap_unit=unit,
                         bootstrap_fits=0 if samples is None else len(samples), bootstrap_skipped=skipped)


def _fit_presence(matrix: np.ndarray, outcome: np.ndarray, target: str) -> np.ndarray | None:
    """Return the coefficients, or None when ``outcome`` has a single class (only for "success")."""
    if target == "success":
        if np.ptp(outcome) == 0:
            return None
        # newton-cholesky reaches the lbfgs solution in a few Newton steps, much faster for a few indicators.
        model = LogisticRegression(C=PRESENCE_PENALTY, solver="newton-cholesky", max_iter=1000)
        return model.fit(matrix, outcome).coef_[0]
    return Ridge(alpha=PRESENCE_PENALTY).fit(matrix, outcome).coef_


# ---------------------------------------------------------------------- LASSO


def fit_lasso(episodes: list[list[Template]], success: np.ndarray, reward: np.ndarray, options: AnalysisOptions,
              groups: np.ndarray, rng: np.random.Generator, constant_reason: str = "") -> LassoFit:
    """Fit an L1 model of the outcome on the episodes' features at a cross-validated penalty, with bootstrap."""
    outcome = success if options.target == "success" else reward
    if options.target == "success":
        model, penalty_name = "L1-penalized logistic regression (liblinear); coefficients in log-odds", "C"
    else:
        model, penalty_name = "LASSO linear regression; coefficients in reward units", "alpha"

    per_episode = [sequence_features(templates, options.max_position) for templates in episodes]
    counts = Counter(name for names in per_episode for name in names)
    candidates = sorted(name for name, count in counts.items() if options.min_count <= count < len(episodes))
    rare = sum(1 for count in counts.values() if count < options.min_count)
    fit = LassoFit(fitted=False, model=model, features=[], penalty_name=penalty_name, features_seen=len(counts),
                   features_rare=rare, features_constant=len(counts) - rare - len(candidates))
    if constant_reason:
        fit.reason = f"{constant_reason}."
        return fit
    if not candidates:
        fit.reason = (f"No feature was seen in at least {options.min_count} trajectories and missing from at least "
                      "one; lower --min-count or analyse a longer run.")
        return fit

    full = np.asarray([[name in names for name in candidates] for names in per_episode], dtype=np.float64)
    names, aliases, columns = _merge_identical_columns(candidates, full)
    matrix = full[:, columns]
    # Standardized features get the same penalty per unit of spread, so rare features are not penalized more.
    means, scales = matrix.mean(axis=0), matrix.std(axis=0)
    standardized = (matrix - means) / scales

    folds, fit.cv_unit = _cv_folds(groups, options.seed)
    if not folds:
        fit.reason = f"{len(episodes)} trajectories are too few for cross-validation, which needs at least 3."
        return fit
    grid = _penalty_grid(standardized, outcome, options.target)
    curve = _cross_validate(standardized, outcome, options, folds, grid)
    usable = [point for point in curve if point["folds"] > 0]
    if not usable:
        fit.reason = ("Cross-validation had no fold whose training part has both outcome classes; analyse more "
                      "trajectories or tasks.")
        return fit
    fit.penalty, fit.penalty_rule = _choose_penalty(usable, options.penalty_rule), options.penalty_rule
    fit.cv_curve, fit.cv_folds = curve, len(folds)

    coefficients = _fit_l1(standardized, outcome, options.target, fit.penalty, options.seed) / scales
    unit = _bootstrap_unit(groups)
    samples, skipped = _bootstrap(
        lambda rows: _scaled(_fit_l1(standardized[rows], outcome[rows], options.target, fit.penalty, options.seed),
                             scales),
        groups, options, rng, unit)
    for index, name in enumerate(names):
        column = matrix[:, index] > 0
        feature = LassoFeature(feature=name, kind=feature_kind(name), trajectories=int(column.sum()),
                               success_rate=float(success[column].mean()), mean_reward=float(reward[column].mean()),
                               coefficient=float(coefficients[index]), aliases=aliases[name])
        if samples is not None:
            feature.ci_low, feature.ci_high = _percentile_interval(samples[:, index])
            feature.selection_frequency = float(np.mean(samples[:, index] != 0.0))
        fit.features.append(feature)
    fit.features.sort(key=lambda feature: (-abs(feature.coefficient), -(feature.selection_frequency or 0.0),
                                           feature.feature))
    fit.fitted, fit.bootstrap_unit = True, unit
    fit.bootstrap_fits, fit.bootstrap_skipped = (0 if samples is None else len(samples)), skipped
    return fit


def _merge_identical_columns(names: list[str], matrix: np.ndarray) -> tuple[list[str], dict[str, list[str]], list[int]]:
    """Return one name per set of identical feature columns, with the aliases of each name and the column indexes.

    With single-turn trajectories, ``dim=x`` and ``t0:dim=x`` are the same column, and an L1
    fit would pick one at random. The kept name is the most general kind (presence before
    position, pair and sequence), which a steered controller can also score at later turns.
    """
    order = sorted(range(len(names)), key=lambda index: (FEATURE_KINDS.index(feature_kind(names[index])),
                                                         names[index]))
    representative: dict[bytes, str] = {}
    aliases: dict[str, list[str]] = {}
    columns = []
    for index in order:
        key = np.packbits(matrix[:, index] > 0).tobytes()
        if key in representative:
            aliases[representative[key]].append(names[index])
            continue
        representative[key] = names[index]
        aliases[names[index]] = []
        columns.append(index)
    return [names[index] for index in columns], aliases, columns


def _cv_folds(groups: np.ndarray, seed: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """Return train/test index pairs that keep each group in one fold, or split trajectories if there are < 3 groups."""
    count = len(groups)
    group_count = int(groups.max()) + 1
    placeholder = np.zeros((count, 1))
    if group_count >= 3:
        return list(GroupKFold(n_splits=min(CV_FOLDS, group_count)).split(placeholder, groups=groups)), "group"
    if count >= 3:
        splitter = KFold(n_splits=min(CV_FOLDS, count), shuffle=True, random_state=seed)
        return list(splitter.split(placeholder)), "trajectory"
    return [], "trajectory"


def _penalty_grid(matrix: np.ndarray, outcome: np.ndarray, target: str) -> list[float]:
    """Return penalties from the strongest (every coefficient 0) to one 1000 times weaker."""
    gradient = float(np.abs(matrix.T @ (outcome - outcome.mean())).max())
    gradient = max(gradient, 1e-12)
    if target == "success":
        # liblinear minimizes |w|_1 + C·Σ log loss. Every feature coefficient is 0 for C up to about
        # 1 / max|Xᵀ(y - ȳ)|, exactly so when the intercept is not penalized.
        return list((1.0 / gradient) * np.logspace(0, 3, PENALTY_GRID_SIZE))
    # Lasso minimizes Σ(y - Xw)² / (2n) + alpha·|w|_1, so every coefficient is 0 for alpha >= max|Xᵀ(y - ȳ)| / n.
    return list((gradient / len(outcome)) * np.logspace(0, -3, PENALTY_GRID_SIZE))


def _cross_validate(matrix: np.ndarray, outcome: np.ndarray, options: AnalysisOptions,
                    folds: list[tuple[np.ndarray, np.ndarray]], grid: list[float]) -> list[dict[str, float]]:
    """Return the mean held-out loss at each penalty of ``grid``, over the folds that can be fitted."""
    curve = []
    for penalty in grid:
        losses = []
        for train, test in folds:
            if options.target == "success" and np.ptp(outcome[train]) == 0:
                continue  # a logistic model needs both classes in its training data
            model = _l1_model(options.target, penalty, options.seed).fit(matrix[train], outcome[train])
            if options.target == "success":
                losses.append(_log_loss(outcome[test], model.predict_proba(matrix[test])[:, 1]))
            else:
                losses.append(mean_squared_error(outcome[test], model.predict(matrix[test])))
        curve.append({"penalty": float(penalty), "loss": float(np.mean(losses)) if losses else math.nan,
                      "loss_se": float(np.std(losses) / math.sqrt(len(losses))) if losses else math.nan,
                      "folds": len(losses)})
    return curve


def _log_loss(outcome: np.ndarray, probability: np.ndarray) -> float:
    """Return the mean negative log-likelihood of 0/1 outcomes (sklearn's log_loss spends milliseconds on checks)."""
    probability = np.clip(probability, 1e-15, 1 - 1e-15)
    return float(-np.mean(outcome * np.log(probability) + (1 - outcome) * np.log(1 - probability)))


def _choose_penalty(curve: list[dict[str, float]], rule: str) -> float:
    """Return the penalty of minimum held-out loss, or for rule "1se" the strongest within one standard error of it.

    ``curve`` runs from the strongest penalty to the weakest, so the first minimum is the strongest.
    """
    best = min(curve, key=lambda point: point["loss"])
    if rule == "min":
        return best["penalty"]
    limit = best["loss"] + best["loss_se"]
    return next(point["penalty"] for point in curve if point["loss"] <= limit)


def _l1_model(target: str, penalty: float, seed: int) -> LogisticRegression | Lasso:
    if target == "success":
        # intercept_scaling 10 keeps liblinear's penalty on the intercept small.
        return LogisticRegression(C=penalty, solver="liblinear", intercept_scaling=10.0, max_iter=1000,
                                  random_state=seed, **_L1_LOGISTIC)
    return Lasso(alpha=penalty, max_iter=10000)


def _fit_l1(matrix: np.ndarray, outcome: np.ndarray, target: str, penalty: float, seed: int) -> np.ndarray | None:
    """Return the coefficients on ``matrix``'s scale, or None for a single outcome class (only for "success")."""
    if target == "success" and np.ptp(outcome) == 0:
        return None
    model = _l1_model(target, penalty, seed).fit(matrix, outcome)
    return np.ravel(model.coef_)


def _scaled(coefficients: np.ndarray | None, scales: np.ndarray) -> np.ndarray | None:
    return None if coefficients is None else coefficients / scales


# ---------------------------------------------------------------------- bootstrap


def _bootstrap_unit(groups: np.ndarray) -> str:
    return "group" if int(groups.max()) + 1 >= MIN_BOOTSTRAP_GROUPS else "trajectory"


def _resample(groups: np.ndarray, count: int, rng: np.random.Generator, unit: str) -> Iterator[np.ndarray]:
    """Yield ``count`` row-index arrays, each a resample of whole groups (or of trajectories) with replacement."""
    if unit == "trajectory":
        for _ in range(count):
            yield rng.integers(len(groups), size=len(groups))
        return
    members = [np.flatnonzero(groups == group) for group in range(int(groups.max()) + 1)]
    for _ in range(count):
        picks = rng.integers(len(members), size=len(members))
        yield np.concatenate([members[pick] for pick in picks])


def _bootstrap(fit: Callable[[np.ndarray], np.ndarray | None], groups: np.ndarray, options: AnalysisOptions,
               rng: np.random.Generator, unit: str) -> tuple[np.ndarray | None, int]:
    """Refit on ``options.bootstrap`` resamples and return the coefficients and the number of skipped resamples.

    ``fit(rows)`` returns the coefficients, or None for a resample it cannot fit (a single
    outcome class), which is skipped and counted. The coefficients have shape (resamples,
    features), or are None when fewer than 2 resamples were fitted.
    """
    samples = []
    skipped = 0
    for rows in _resample(groups, options.bootstrap, rng, unit):
        coefficients = fit(rows)
        if coefficients is None:
            skipped += 1
            continue
        samples.append(coefficients)
    if len(samples) < 2:
        return None, skipped
    return np.asarray(samples), skipped


def _percentile_interval(values: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)
