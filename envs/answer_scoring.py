"""Answer scoring for question answering: normalization, exact match and token F1.

The normalization is SQuAD's, which HotpotQA's evaluation script
(``hotpot_evaluate_v1.py`` in the hotpotqa/hotpot repository) also uses: lower case,
remove punctuation, remove the articles "a", "an" and "the", collapse whitespace. Two
additions make it fit the search environment, whose observations are printable
ASCII. Latin letters are folded to ASCII first (``"Alû"`` matches ``"Alu"``, see
:func:`~erlgym.redsearch.text.fold_accents`), and Unicode punctuation (``–``, ``’``)
is removed as well as ASCII punctuation.

Like SQuAD, punctuation is deleted, not replaced by a space, so ``"Saint-Denis"``
normalizes to ``"saintdenis"``. Like HotpotQA, a yes/no answer gets an F1 of 0 unless
it matches exactly, so ``"no"`` earns nothing against ``"no, it is not"``.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from erlgym.redsearch.text import fold_accents

SCORING_MODES = ("exact", "f1")
F1_THRESHOLD = 0.3
"""Minimum F1 that earns a reward in ``"f1"`` mode. An answer below it earns 0."""

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_YES_NO_ANSWERS = ("yes", "no", "noanswer")
"""Normalized answers that HotpotQA's F1 scores only by exact match."""


@dataclass(frozen=True)
class AnswerScore:
    """Scores of one predicted answer against the best-matching gold answer.

    Attributes:
        exact_match: Whether the normalized prediction equals a normalized gold answer.
        f1: The highest token F1 over the gold answers, from 0.0 to 1.0.
        reward: The reward under the scoring mode: 1.0 or 0.0 for ``"exact"``; for
            ``"f1"``, the F1 when it is at least :data:`F1_THRESHOLD`, else 0.0.
    """

    exact_match: bool
    f1: float
    reward: float


def normalize_answer(text: str) -> str:
    """Normalize an answer as described in the module docstring."""
    without_punctuation = "".join(
        ch for ch in fold_accents(text)
        if ch not in string.punctuation and not unicodedata.category(ch).startswith("P")
    )
    lowered = without_punctuation.lower()
    without_articles = _ARTICLES.sub(" ", lowered)
    return " ".join(without_articles.split())


def exact_match(prediction: str, gold: str) -> bool:
    """Return whether the two answers are equal after normalization."""
    return normalize_answer(prediction) == normalize_answer(gold)


def f1_score(prediction: str, gold: str) -> float:
    """Return the token F1 of the normalized answers, as SQuAD and HotpotQA compute it.

    Equal normalized answers score 1.0 even when normalization leaves them empty
    (``"The"`` against ``"the"``), where SQuAD's script returns 0.0.
    """
    predicted = normalize_answer(prediction)
    expected = normalize_answer(gold)
    if predicted == expected:
        return 1.0
    if predicted in _YES_NO_ANSWERS or expected in _YES_NO_ANSWERS:
        return 0.0
    predicted_tokens = predicted.split()
    expected_tokens = expected.split()
    common = Counter(predicted_tokens) & Counter(expected_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(predicted_tokens)
    recall = num_same / len(expected_tokens)
    return 2 * precision * recall / (precision + recall)


def score_answer(prediction: str, gold_answers: Iterable[str], mode: str = "exact") -> AnswerScore:
    """Score ``prediction`` against every gold answer (an answer and its aliases) and keep the best.

    Raises:
        ValueError: If ``mode`` is not one of :data:`SCORING_MODES` or there is no gold answer.
    """
    if mode not in SCORING_MODES:
        raise ValueError(f"mode={mode!r} is invalid: use one of {SCORING_MODES}")
    golds = list(gold_answers)
    if not golds:
        raise ValueError("gold_answers is empty: pass at least one gold answer")
    is_exact = any(exact_match(prediction, gold) for gold in golds)
    f1 = max(f1_score(prediction, gold) for gold in golds)
    if mode == "exact":
        reward = 1.0 if is_exact else 0.0
    else:
        reward = f1 if f1 >= F1_THRESHOLD else 0.0
    return AnswerScore(exact_match=is_exact, f1=f1, reward=reward)
