"""Difficulty-controlled multi-hop task synthesis from a knowledge graph.

A task asks for an entity (or a number) that only a walk over several facts reveals.
:func:`synthesize_task` builds one task from a seed, in four steps:

1. Draw a shape and a hop count from the spec. Shapes (:data:`~erlgym.redsearch.tasks.SHAPES`):

   - ``bridge``: a chain from a named anchor to the answer, "What is the city where the
     founder of X was born?";
   - ``intersection``: two or three constraints meet at the answer, "Which person was
     born in A and works for B?";
   - ``comparison``: two described entities compared by a numeric attribute, "Which was
     founded earlier: the organisation headquartered in A or the organisation founded by B?";
   - ``count``: the entities related to a described entity, "How many works did the
     spouse of X create?". The answer is drawn before the entity
     (:func:`_draw_count_group`), so the answers spread over the spec's count range.

2. Walk the graph through :class:`~erlgym.redsearch.queries.GraphIndex`. Every entity
   except the named anchors is described by a relation to the next entity of its walk
   (and, when the relation alone leaves several candidates, by an attribute value), so
   the question never names it and the agent has to search.
3. Word the question from :mod:`~erlgym.redsearch.templates`.
4. Verify the task (:func:`verify_task` runs the same checks on a finished task):

   - no entity other than the anchors appears in the question by name or alias, the
     answer included;
   - every named anchor's name belongs to that entity alone: no other entity has it as
     name or alias, compared case-insensitively with whitespace collapsed. WordNet-style
     graphs give several synsets one name, and a reader could take the other one;
   - every fact has an evidence document, and the facts need at least two documents;
   - solving the question's :class:`~erlgym.redsearch.queries.Query` over the whole graph
     gives exactly the chosen entity for every variable (a count: exactly the counted set);
   - a single BM25 search with the question text, cut as the search tool of
     ``erlgym/SearchQA-v0`` cuts queries, does not return documents that together state
     every needed fact (:class:`Bm25Probe`), so the task needs more than one search;
   - for bridge and intersection questions (:data:`ANSWER_SHOWN_SHAPES`), that search does not
     show the answer in a result's title or snippet, as the search tool of
     ``erlgym/SearchQA-v0`` prints them, so the answer is not one search away either.

   The seed fixes every random choice, so ``synthesize_task(graph, task.seed, spec)``
   rebuilds a kept task exactly.

:func:`synthesize` draws tasks until it has ``spec.count`` of them that meet the target
distribution over the difficulty measures (:mod:`~erlgym.redsearch.difficulty`), and
records what it achieved in the task set's summary.

Target distributions (``SynthesisSpec.targets`` or ``SynthesisSpec.joint``):

- marginal targets, one share table per measure: ``{"hops": {"2": 0.5, "3": 0.5},
  "documents": {"2": 0.3, "3": 0.7}}``. With one measure, each value gets
  ``round(share × count)`` tasks (largest remainder). With several, a pilot of verified
  tasks shows which combinations of values the graph produces and how often. Iterative
  proportional fitting then scales those frequencies to the marginal targets, which
  gives a joint table that meets every marginal and stays closest to what the graph
  yields. Each cell of that table becomes a quota, and later tasks are kept only while
  their cell has room (stratified rejection sampling). A target whose values only occur
  in combinations that cannot meet the other targets raises :class:`SynthesisError`.
- a joint target, rows of values and shares: ``[{"hops": 2, "documents": 2, "share": 0.4},
  {"hops": 3, "documents": 3, "share": 0.6}]``, used as the cell quotas directly.

Hop counts are proposed from the target values, so a hop target costs no rejections.
The other measures follow from the walk and are met by rejection.
"""

from __future__ import annotations

import bisect
import logging
import math
import random
import re
import string
import time
import weakref
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from bm25s.stopwords import STOPWORDS_EN

from erlgym.envs.answer_scoring import normalize_answer
from erlgym.envs.search_corpus import best_snippet, collapse_whitespace, query_terms, shorten, to_printable
from erlgym.envs.search_qa import MAX_QUERY_CHARS, MAX_TITLE_CHARS
from erlgym.redsearch.corpus import SearchIndex
from erlgym.redsearch.difficulty import difficulty_of, min_document_cover
from erlgym.redsearch.graph import Document, KnowledgeGraph
from erlgym.redsearch.queries import (Constraint, GraphIndex, Query, QueryError, SolveBudgetExceeded, Variable,
                                      graph_fingerprint, solve)
from erlgym.redsearch.tasks import DIFFICULTY_MEASURES, SHAPES, Task, TaskSet
from erlgym.redsearch.templates import QuestionTemplates, type_words

__all__ = ["ANSWER_SHOWN_SHAPES", "Bm25Probe", "SynthesisError", "SynthesisIndexes", "SynthesisSpec", "difficulty_of",
           "synthesis_indexes", "synthesize", "synthesize_task", "verify_task"]

logger = logging.getLogger(__name__)

MIN_HOPS = {"bridge": 1, "intersection": 2, "comparison": 2, "count": 1}
"""Minimum number of relation constraints (hops) of each shape."""
PERSON_TYPES = frozenset({"person", "human"})
"""Type words (see :func:`~erlgym.redsearch.templates.type_words`) of the entities that
bridge and comparison questions ask about with "Who" instead of "What" or "Which"."""
ANSWER_SHOWN_SHAPES = frozenset({"bridge", "intersection"})
"""Shapes whose tasks are rejected as ``answer_in_results`` when a search for the question shows the answer.

A comparison answer is one of the two compared entities, and a search for the question
shows the other one about as often, so seeing a name does not give the choice away. A
count answer is a number, which titles and snippets contain for other reasons (years,
populations).
"""
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty")

# Walks look at up to this many neighbours per relation of an entity, so a hub costs
# no more than an ordinary entity.
NEIGHBOR_SAMPLE = 4
# An entity is described through a relation only if the neighbour has at most this many
# facts of that relation. A larger group rarely leaves one candidate, and checking it
# would cost time in proportion to the hub's size.
MAX_RIVALS = 64
# Share of intersection questions that try to close a cycle through a shared named entity.
CYCLE_SHARE = 0.5
# Tries per seed at a starting entity before the seed counts as "no_question".
START_TRIES = 6
# Size of the pilot, in verified tasks, that plans joint quotas for marginal targets over
# several measures: the requested task count, raised to the first value and capped at
# the second.
PILOT_TASKS = (100, 1000)
# Largest hop count a spec may request (hops bounds, and hops values of targets). A walk
# and its query grow with the hop count, so a mistyped value fails validation instead of
# running without end.
MAX_HOPS = 64
# Largest task count a spec may request, so a mistyped count fails validation instead of
# running without end.
MAX_COUNT = 10_000_000
# A count question first draws its answer: a size with weight n / (n + this), where n is
# the number of (subject, relation) groups of that size. Sizes with many groups are drawn
# about equally often. A size with few groups is drawn less, so that those groups do not
# recur in many tasks. With 10, 100 count tasks from the WN18RR sample in tests/data/kg
# (seed 0) repeat no counted set more than 5 times, against 9 with equal weights.
COUNT_GROUPS_HALF_WEIGHT = 10


class SynthesisError(ValueError):
    """Invalid synthesis settings, or a target the graph cannot meet; the message lists what the graph achieved."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class SynthesisSpec:
    """Settings of one synthesis run: how many tasks, of which shapes, and at what difficulty.

    Groups: the set (count, seed, shapes, hop range), the target distribution over
    difficulty measures (targets or joint, see the module docstring), and verification
    and wording (BM25 depth, attribute descriptions, count range, templates, attempts).
    """

    count: int = field(default=100, metadata=_help(f"Number of tasks in the set, at most {MAX_COUNT:,}."))
    seed: int = field(default=0, metadata=_help("Seed of the run; task seeds are drawn from it."))
    shapes: dict[str, float] = field(default_factory=lambda: {shape: 1.0 for shape in SHAPES}, metadata=_help(
        "Relative weight of each question shape (bridge, intersection, comparison, count)."))
    hops: tuple[int, int] = field(default=(2, 3), metadata=_help(
        f"Smallest and largest hop count to propose, used when no target names hops; at most {MAX_HOPS}."))
    targets: dict[str, dict[str, float]] = field(default_factory=dict, metadata=_help(
        'Marginal target shares per difficulty measure, e.g. {"hops": {"2": 0.5, "3": 0.5}}.'))
    joint: list[dict[str, float]] = field(default_factory=list, metadata=_help(
        'Joint target: rows of measure values and a share, e.g. [{"hops": 2, "documents": 2, "share": 1.0}].'))
    bm25_k: int | None = field(default=5, metadata=_help(
        "Depth of the single BM25 search whose results must not contain all the evidence, nor show the answer "
        "of a bridge or intersection question; None uses the task's document count. 5 is the search "
        "environment's default top_k."))
    use_attributes: bool = field(default=True, metadata=_help(
        "Describe an entity also by an attribute value when its relation leaves several candidates."))
    min_count: int = field(default=2, metadata=_help(
        "Smallest answer of a count question; 2 by default, since counting one entity is a bridge question."))
    max_count: int = field(default=10, metadata=_help("Largest answer of a count question."))
    templates: str | None = field(default=None, metadata=_help(
        "JSON file of question templates that overrides the packaged ones field by field."))
    max_attempts: int | None = field(default=None, metadata=_help(
        "Task seeds to try before giving up; None means 50 × count + 1000."))

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["hops"] = list(self.hops)
        return values

    def validate(self) -> "SynthesisSpec":
        """Raise :class:`SynthesisError` for the first invalid setting; return the spec."""
        _check_spec(self)
        return self

    @property
    def attempt_limit(self) -> int:
        return self.max_attempts if self.max_attempts is not None else 50 * self.count + 1000


# ---------------------------------------------------------------------- shared per-graph state


class Bm25Probe:
    """Finds which documents a :meth:`SearchIndex.search` call would return, without sorting the corpus.

    It tokenizes the query as ``bm25s.tokenize`` does, reads the BM25 score matrix that
    ``bm25s`` precomputed for ``index``, and adds the rows of the query's tokens as
    ``bm25s.BM25.get_scores`` does, with a faster scatter-add. The tests check it against
    ``SearchIndex.search`` (bm25s 0.3.16). A document is returned by ``search(query, k)``
    when its score is positive and fewer than ``k`` documents score higher. A document
    tied with the k-th counts as returned, which can only make the multi-hop check stricter.
    """

    # The tokenization of bm25s.tokenize(..., stopwords="en") with its default pattern:
    # lowercase words of two or more word characters, English stopwords removed.
    TOKEN_PATTERN = re.compile(r"(?u)\b\w\w+\b")
    STOPWORDS = frozenset(STOPWORDS_EN)
    # A token found in more than this share of the documents is added as a dense score
    # row, built on first use. Adding the row took 9 µs where the scatter took 210 µs
    # (46,000 of 100,000 documents, numpy 2.4, one AMD EPYC core). All rows together
    # take at most DENSE_ROW_BYTES.
    DENSE_SHARE = 0.05
    DENSE_ROW_BYTES = 64 * 2**20
    # top() finds the k-th highest score with k passes of argmax up to this k, and with
    # np.partition above it. For k = 5 over 100,000 random scores, top() took about 80 µs
    # with the passes and 630 µs with the partition (numpy 2.4.6, one core of a 2-core
    # x86_64 VM loaded by other jobs).
    ARGMAX_K = 16

    def __init__(self, index: SearchIndex):
        self.index = index
        self.position = {doc_id: i for i, doc_id in enumerate(index.doc_ids)}
        retriever = index.retriever
        if index.doc_ids:
            self.vocabulary = retriever.vocab_dict
            self.data = retriever.scores["data"]
            self.indices = retriever.scores["indices"]
            self.indptr = retriever.scores["indptr"]
            self.num_docs = int(retriever.scores["num_docs"])
            self.max_dense_rows = self.DENSE_ROW_BYTES // (self.num_docs * self.data.dtype.itemsize)
        self.dense_rows: dict[int, np.ndarray] = {}

    def scores(self, query: str) -> np.ndarray:
        """Return the BM25 score of every indexed document for ``query``, in ``index.doc_ids`` order."""
        if not self.index.doc_ids:
            return np.zeros(0, dtype=np.float32)
        scores = np.zeros(self.num_docs, dtype=self.data.dtype)
        for token in self.TOKEN_PATTERN.findall(query.lower()):
            if token in self.STOPWORDS:
                continue
            token_id = self.vocabulary.get(token)
            if token_id is None:
                continue
            start, end = self.indptr[token_id], self.indptr[token_id + 1]
            if end - start > self.DENSE_SHARE * self.num_docs:
                row = self.dense_rows.get(token_id)
                if row is None and len(self.dense_rows) < self.max_dense_rows:
                    row = np.zeros(self.num_docs, dtype=self.data.dtype)
                    row[self.indices[start:end]] = self.data[start:end]
                    self.dense_rows[token_id] = row
                if row is not None:
                    # Adding 0.0 leaves the other documents' scores unchanged, bit for bit.
                    scores += row
                    continue
            # bm25s keeps one score per (token, document) pair, so fancy-index addition
            # gives the sums of np.add.at, which get_scores uses.
            scores[self.indices[start:end]] += self.data[start:end]
        return scores

    def returned(self, query: str, doc_ids: Iterable[str], k: int, scores: np.ndarray | None = None) -> set[str]:
        """Return the ids among ``doc_ids`` that ``search(query, k)`` returns (ties at the k-th score included).

        ``scores`` are the query's scores from :meth:`scores`, computed here when not given.
        """
        if not self.index.doc_ids or k < 1:
            return set()
        if scores is None:
            scores = self.scores(query)
        found = set()
        for doc_id in doc_ids:
            position = self.position.get(doc_id)
            if position is None:
                continue
            score = scores[position]
            if score > 0 and np.count_nonzero(scores > score) < k:
                found.add(doc_id)
        return found

    def top(self, scores: np.ndarray, k: int) -> list[str]:
        """Return the ids of the documents that ``search(query, k)`` returns for the query's ``scores``, best first.

        Like :meth:`returned`, documents tied with the k-th score are included, so the
        list can be longer than ``k``.
        """
        if k < 1 or len(scores) == 0 or scores.max() <= 0:
            return []
        positive = np.count_nonzero(scores > 0)
        if positive <= k:
            positions = np.flatnonzero(scores > 0)
        else:
            positions = np.flatnonzero(scores >= self._kth_highest(scores, k))
        order = np.argsort(-scores[positions], kind="stable")
        return [self.index.doc_ids[position] for position in positions[order]]

    def _kth_highest(self, scores: np.ndarray, k: int) -> float:
        """Return the k-th highest of ``scores``, counting equal scores separately."""
        if k > self.ARGMAX_K:
            return float(np.partition(scores, len(scores) - k)[len(scores) - k])
        remaining = scores.copy()
        for _ in range(k - 1):
            remaining[remaining.argmax()] = -np.inf
        return float(remaining.max())


@dataclass
class SynthesisIndexes:
    """Indexes that synthesis builds once per graph: typed adjacency, the BM25 index of all documents, and its probe.

    ``name_counts`` maps each normalized name or alias (:func:`_name_key`) to the number
    of distinct entities that carry it.
    """

    index: GraphIndex
    search: SearchIndex
    probe: Bm25Probe
    name_counts: dict[str, int] = field(default_factory=dict)


def _name_key(name: str) -> str:
    """Normalize a name for comparison: whitespace runs collapsed to one space, case folded."""
    return " ".join(name.split()).casefold()


def _name_counts(index: GraphIndex) -> dict[str, int]:
    """Count, for each normalized name or alias, the distinct entities that carry it."""
    counts: Counter = Counter()
    for entity, name in index.names.items():
        keys = {_name_key(name)} | {_name_key(alias) for alias in index.aliases.get(entity, ())}
        counts.update(keys)
    return dict(counts)


_INDEXES: weakref.WeakKeyDictionary[KnowledgeGraph, SynthesisIndexes] = weakref.WeakKeyDictionary()
_TEMPLATES: dict[str, QuestionTemplates] = {}


def synthesis_indexes(graph: KnowledgeGraph) -> SynthesisIndexes:
    """Return the graph's synthesis indexes, built on first use and kept while the graph object lives.

    Calling it before :func:`synthesize` moves the indexing time (seconds for 100,000
    documents) out of the synthesis run. The indexes are rebuilt when
    :func:`~erlgym.redsearch.queries.graph_fingerprint` changes (see its note on edited graphs).
    """
    state = _INDEXES.get(graph)
    if state is None or state.index.fingerprint != graph_fingerprint(graph):
        started = time.perf_counter()
        index = GraphIndex(graph)
        search = SearchIndex(graph.documents)
        state = SynthesisIndexes(index, search, Bm25Probe(search), _name_counts(index))
        # The groups that count questions draw from depend only on the graph. Building them here
        # keeps their cost (about 1.3 s at 100,000 entities) out of the first synthesis run.
        _count_groups(index)
        _INDEXES[graph] = state
        logger.info("indexed graph %s (%d entities, %d documents) in %.1f s", graph.name, graph.num_entities,
                    len(graph.documents), time.perf_counter() - started)
    return state


def _templates(spec: SynthesisSpec) -> QuestionTemplates:
    key = ""
    if spec.templates:
        path = Path(spec.templates).resolve()
        # The modification time makes an edited file load again.
        key = f"{path}:{path.stat().st_mtime_ns if path.exists() else 0}"
    templates = _TEMPLATES.get(key)
    if templates is None:
        templates = QuestionTemplates.load(spec.templates)
        _TEMPLATES[key] = templates
    return templates


# ---------------------------------------------------------------------- building questions


@dataclass
class _Step:
    """One hop of a description: ``entity`` is described through its fact with ``neighbor``."""

    entity: str
    neighbor: str
    relation: str
    entity_is_head: bool
    typed: bool
    attribute: tuple[str, Any] | None


@dataclass
class _Draft:
    """A question before verification."""

    shape: str
    query: Query
    question: str
    answer: str
    aliases: list[str]
    facts: list[tuple[str, str, str]]
    attribute_facts: list[tuple[str, str]]


class _QuestionBuilder:
    """Walks the graph and collects the variables, constraints and phrases of one question."""

    def __init__(self, graph: KnowledgeGraph, index: GraphIndex, templates: QuestionTemplates,
                 spec: SynthesisSpec, rng: random.Random):
        self.graph = graph
        self.index = index
        self.templates = templates
        self.spec = spec
        self.rng = rng
        self.variables: dict[str, Variable] = {}
        self.constraints: list[Constraint] = []
        self.bindings: dict[str, list[str]] = {}
        self.anchor_of: dict[str, str] = {}
        self.attribute_facts: list[tuple[str, str]] = []
        # Attributes that descriptions must not use, such as the one a comparison asks about.
        self.hidden_attributes: set[str] = set()
        # Attribute phrases that the walks of this question already use, so that no
        # bracketed note appears twice in one question.
        self.used_notes: set[str] = set()

    # -------------------------------------------------------------- variables

    def anchor(self, entity: str) -> str:
        """Return the variable of the named entity ``entity``, one per entity, so a shared anchor closes a cycle."""
        name = self.anchor_of.get(entity)
        if name is None:
            name = f"a{len(self.anchor_of)}"
            self.anchor_of[entity] = name
            self.variables[name] = Variable(entity=entity)
            self.bindings[name] = [entity]
        return name

    def unknown(self, entities: list[str], entity_type: str | None, attributes: dict[str, Any] | None = None) -> str:
        name = f"x{len(self.variables) - len(self.anchor_of)}"
        self.variables[name] = Variable(type=entity_type, attributes=dict(attributes or {}))
        self.bindings[name] = sorted(entities)
        for attribute in attributes or {}:
            self.attribute_facts.extend((entity, attribute) for entity in entities)
        return name

    def link(self, variable: str, other: str, relation: str, variable_is_head: bool) -> None:
        if variable_is_head:
            self.constraints.append(Constraint(variable, relation, other))
        else:
            self.constraints.append(Constraint(other, relation, variable))

    def query(self, operation: str, **fields: Any) -> Query:
        return Query(operation=operation, variables=self.variables, constraints=self.constraints,
                     bindings=self.bindings, **fields)

    def facts(self) -> list[tuple[str, str, str]]:
        """Return the relation facts of the chosen bindings, one per pair of bound entities."""
        facts = []
        for constraint in self.constraints:
            for head in self.bindings[constraint.head]:
                for tail in self.bindings[constraint.tail]:
                    facts.append((head, constraint.relation, tail))
        return list(dict.fromkeys(facts))

    # -------------------------------------------------------------- wording

    def relation_text(self, relation: str, template_field: str, other: str, head: str, tail: str,
                      note: str | None = None) -> str:
        return self.templates.render(relation, self.graph.relation_names.get(relation), template_field, other,
                                     self.index.types[head], self.index.types[tail], note)

    def name(self, entity: str) -> str:
        return self.index.names[entity]

    # -------------------------------------------------------------- walks

    def disambiguation(self, entity: str, neighbor: str, relation: str,
                       entity_is_head: bool) -> tuple[bool, tuple[str, Any] | None] | None:
        """Return how ``entity`` is singled out among the entities with the same fact to ``neighbor``.

        The result is (typed, attribute): whether the phrase names the entity's type, and
        an attribute value that no rival shares when relation and type leave rivals.
        None means the phrase cannot single ``entity`` out.
        """
        rivals = self.index.neighbors(neighbor, relation, forward=not entity_is_head)
        template_field = "head_phrase" if entity_is_head else "tail_phrase"
        typed = self.templates.states_type(relation, self.graph.relation_names.get(relation), template_field)
        if len(rivals) == 1:
            return typed, None
        if len(rivals) > MAX_RIVALS:
            return None
        entity_type = self.index.types[entity]
        rivals = [rival for rival in rivals
                  if rival != entity and (not typed or self.index.types[rival] == entity_type)]
        if not rivals:
            return typed, None
        if not self.spec.use_attributes:
            return None
        attributes = self.index.attributes[entity]
        names = sorted(attributes)
        self.rng.shuffle(names)
        for attribute in names:
            value = attributes[attribute]
            if isinstance(value, (dict, list)) or value is None or attribute in self.hidden_attributes:
                continue
            if any(self.index.attributes[rival].get(attribute) == value for rival in rivals):
                continue
            if self.templates.attribute_phrase(attribute, value) in self.used_notes:
                continue
            if self.index.attribute_documents(entity, attribute):
                return typed, (attribute, value)
        return None

    def choose_step(self, entity: str, avoid: set[str], reuse: set[str] = frozenset(),
                    prefer_reuse: float = 0.5) -> _Step | None:
        """Pick a fact of ``entity`` through which a phrase singles it out, to a neighbour not in ``avoid``.

        With probability ``prefer_reuse`` a neighbour in ``reuse`` is taken when one
        qualifies. Otherwise the relations are tried in random order, each with up to
        :data:`NEIGHBOR_SAMPLE` random neighbours, and the first that qualifies is taken.
        """
        groups = self.index.steps(entity)
        if reuse and self.rng.random() < prefer_reuse:
            shared = []
            for relation, forward, neighbors in groups:
                for neighbor in sorted(reuse):
                    if neighbor != entity and _contains(neighbors, neighbor):
                        found = self.disambiguation(entity, neighbor, relation, entity_is_head=forward)
                        if found is not None:
                            shared.append(_Step(entity, neighbor, relation, forward, *found))
            if shared:
                return self.rng.choice(shared)
        order = list(range(len(groups)))
        self.rng.shuffle(order)
        for position in order:
            relation, forward, neighbors = groups[position]
            for neighbor in self.rng.sample(neighbors, min(len(neighbors), NEIGHBOR_SAMPLE)):
                if neighbor == entity or (neighbor in avoid and neighbor not in reuse):
                    continue
                found = self.disambiguation(entity, neighbor, relation, entity_is_head=forward)
                if found is not None:
                    return _Step(entity, neighbor, relation, forward, *found)
        return None

    def walk(self, start: str, length: int, avoid: set[str], reuse: set[str] = frozenset(),
             prefer_reuse: float = 0.5) -> list[_Step] | None:
        """Walk ``length`` hops outward from ``start``; each hop's neighbour describes the entity before it.

        The last neighbour becomes a named anchor. It may be one of the ``reuse``
        entities (anchors of the question), which closes a cycle. The walk takes one with
        probability ``prefer_reuse`` when it can.
        """
        steps: list[_Step] = []
        visited = set(avoid) | {start}
        current = start
        notes: set[str] = set()
        for hop in range(length):
            last = hop == length - 1
            step = self.choose_step(current, visited, reuse if last else frozenset(), prefer_reuse)
            if step is None:
                self.used_notes -= notes
                return None
            if step.attribute is not None:
                note = self.templates.attribute_phrase(*step.attribute)
                notes.add(note)
                self.used_notes.add(note)
            steps.append(step)
            visited.add(step.neighbor)
            current = step.neighbor
        return steps

    def describe(self, steps: list[_Step]) -> tuple[str, str]:
        """Turn a walk into variables and constraints; return the phrase and the variable of its first entity."""
        anchor_entity = steps[-1].neighbor
        previous = self.anchor(anchor_entity)
        phrase = self.name(anchor_entity)
        for step in reversed(steps):
            head, tail = (step.entity, step.neighbor) if step.entity_is_head else (step.neighbor, step.entity)
            template_field = "head_phrase" if step.entity_is_head else "tail_phrase"
            attributes, note = {}, None
            if step.attribute is not None:
                attribute, value = step.attribute
                attributes[attribute] = value
                note = self.templates.attribute_phrase(attribute, value)
            text = self.relation_text(step.relation, template_field, phrase, head, tail, note)
            variable = self.unknown([step.entity], self.index.types[step.entity] if step.typed else None, attributes)
            self.link(variable, previous, step.relation, step.entity_is_head)
            previous, phrase = variable, text
        return phrase, previous


def _is_person(entity_type: str) -> bool:
    return type_words(entity_type) in PERSON_TYPES


def _contains(ordered: tuple[str, ...], item: str) -> bool:
    """Return whether the sorted tuple ``ordered`` contains ``item`` (binary search)."""
    position = bisect.bisect_left(ordered, item)
    return position < len(ordered) and ordered[position] == item


def _bridge(builder: _QuestionBuilder, hops: int) -> _Draft | None:
    index, rng = builder.index, builder.rng
    for _ in range(START_TRIES):
        answer = rng.choice(index.entities)
        steps = builder.walk(answer, hops, avoid=set())
        if steps is None:
            continue
        phrase, target = builder.describe(steps)
        question = f"{'Who' if _is_person(index.types[answer]) else 'What'} is {phrase}?"
        return _Draft("bridge", builder.query("select", target=target), question,
                      index.names[answer], list(index.aliases[answer]), builder.facts(), builder.attribute_facts)
    return None


def _split(total: int, parts: int, rng: random.Random) -> list[int]:
    """Split ``total`` hops into ``parts`` positive lengths at random."""
    cuts = sorted(rng.sample(range(1, total), parts - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, total])]


def _intersection(builder: _QuestionBuilder, hops: int) -> _Draft | None:
    index, rng = builder.index, builder.rng
    branches = 2 if hops < 4 else rng.choice((2, 3))
    lengths = sorted(_split(hops, branches, rng), reverse=True)
    # Half of the questions whose longest branch is followed by a one-hop branch try to
    # close a cycle: the longest branch then ends at the named entity of the one-hop branch.
    close_cycle = lengths[0] > 1 and lengths[1] == 1 and rng.random() < CYCLE_SHARE
    for _ in range(START_TRIES):
        answer = rng.choice(index.entities)
        first_steps = _narrowing_steps(builder, answer, branches, close_cycle)
        if first_steps is None:
            continue
        clauses = []
        used = {answer} | {step[2] for step in first_steps}
        # A longer branch may end at the named entity of a one-hop branch, which closes a cycle.
        shareable = {neighbor for (_, _, neighbor), length in zip(first_steps, lengths) if length == 1}
        answer_type = index.types[answer]
        target = builder.unknown([answer], answer_type)
        failed = False
        for (relation, forward, neighbor), length in zip(first_steps, lengths):
            if length == 1:
                other, phrase = builder.anchor(neighbor), index.names[neighbor]
            else:
                steps = builder.walk(neighbor, length - 1, avoid=used - {neighbor},
                                     reuse=shareable | set(builder.anchor_of), prefer_reuse=1.0 if close_cycle else 0.5)
                if steps is None:
                    failed = True
                    break
                used |= {step.neighbor for step in steps}
                phrase, other = builder.describe(steps)
            head, tail = (answer, neighbor) if forward else (neighbor, answer)
            template_field = "head_clause" if forward else "tail_clause"
            clauses.append(builder.relation_text(relation, template_field, phrase, head, tail))
            builder.link(target, other, relation, variable_is_head=forward)
        if failed:
            builder = _QuestionBuilder(builder.graph, index, builder.templates, builder.spec, rng)
            continue
        # Shortest branch first, so the nested clauses of a long branch end the question
        # instead of swallowing the clauses after them.
        clauses.reverse()
        joined = ", ".join(clauses[:-1]) + " and " + clauses[-1]
        question = f"Which {type_words(answer_type)} {joined}?"
        return _Draft("intersection", builder.query("select", target=target), question, index.names[answer],
                      list(index.aliases[answer]), builder.facts(), builder.attribute_facts)
    return None


def _narrowing_steps(builder: _QuestionBuilder, answer: str, branches: int,
                     close_cycle: bool = False) -> list[tuple[str, bool, str]] | None:
    """Pick ``branches`` facts of ``answer`` whose other ends, taken together, leave ``answer`` as the only candidate.

    Each fact (relation, forward, neighbour) allows the entities of the answer's type
    that have the same fact with the neighbour; the answer must be the only entity
    allowed by all of them. With ``close_cycle``, facts whose neighbour is adjacent to
    the first pick's neighbour go first, so that a branch can run from one to the other.
    """
    index, rng = builder.index, builder.rng
    answer_type = index.types[answer]
    options = []
    for relation, forward, neighbors in index.steps(answer):
        sample = neighbors if len(neighbors) <= NEIGHBOR_SAMPLE else rng.sample(neighbors, NEIGHBOR_SAMPLE)
        options.extend((relation, forward, neighbor) for neighbor in sample if neighbor != answer)
    rng.shuffle(options)
    chosen: list[tuple[str, bool, str]] = []
    candidates: set[str] | None = None
    queue = deque(options)
    while queue and len(chosen) < branches:
        relation, forward, neighbor = queue.popleft()
        if any(neighbor == other for _, _, other in chosen):
            # One entity cannot be both a named end of one branch and the described start of another.
            continue
        allowed = {entity for entity in index.neighbors(neighbor, relation, forward=not forward)
                   if index.types[entity] == answer_type}
        narrowed = allowed if candidates is None else candidates & allowed
        if candidates is None or len(narrowed) < len(candidates) or len(candidates) == 1:
            chosen.append((relation, forward, neighbor))
            candidates = narrowed
            if close_cycle and len(chosen) == 1:
                near = _adjacent_entities(index, neighbor)
                queue = deque(sorted(queue, key=lambda option: option[2] not in near))
    if len(chosen) < branches or candidates != {answer}:
        return None
    return chosen


def _adjacent_entities(index: GraphIndex, entity: str, limit: int = 256) -> set[str]:
    """Return the entities that share a fact with ``entity``, or an empty set when there are more than ``limit``."""
    groups = index.steps(entity)
    if sum(len(neighbors) for _, _, neighbors in groups) > limit:
        return set()
    return {neighbor for _, _, neighbors in groups for neighbor in neighbors}


def _comparison(builder: _QuestionBuilder, hops: int) -> _Draft | None:
    index, rng = builder.index, builder.rng
    if not index.numeric_entities:
        return None
    first_length, second_length = _split(hops, 2, rng)
    for _ in range(START_TRIES):
        first = rng.choice(index.numeric_entities)
        entity_type = index.types[first]
        attribute = rng.choice(sorted(name for name in index.attributes[first]
                                      if (entity_type, name) in index.numeric))
        second = rng.choice(index.numeric[(entity_type, attribute)])
        values = index.attributes[first][attribute], index.attributes[second][attribute]
        if second == first or values[0] == values[1]:
            continue
        builder.hidden_attributes = {attribute}
        first_steps = builder.walk(first, first_length, avoid={second})
        if first_steps is None:
            continue
        used = {first, second} | {step.neighbor for step in first_steps}
        second_steps = builder.walk(second, second_length, avoid=used, reuse={first_steps[-1].neighbor})
        if second_steps is None:
            continue
        first_phrase, first_variable = builder.describe(first_steps)
        second_phrase, second_variable = builder.describe(second_steps)
        order = rng.choice(("min", "max"))
        winner = first if (values[0] < values[1]) == (order == "min") else second
        builder.attribute_facts.extend([(first, attribute), (second, attribute)])
        pronoun = "Who" if _is_person(entity_type) else "Which"
        question = f"{pronoun} {builder.templates.comparative(attribute, order)}: {first_phrase} or {second_phrase}?"
        query = builder.query("compare", candidates=[first_variable, second_variable], attribute=attribute, order=order)
        return _Draft("comparison", query, question, index.names[winner], list(index.aliases[winner]),
                      builder.facts(), builder.attribute_facts)
    return None


class _CountKey(NamedTuple):
    """A relation, its direction, and whether a count over it counts the neighbours of one type only."""

    relation: str
    forward: bool
    typed: bool


_CountGroup = tuple[str, str | None]
"""A subject and the type of the neighbours it counts, None for every type."""
_COUNT_GROUPS: weakref.WeakKeyDictionary[GraphIndex, dict[_CountKey, dict[int, list[_CountGroup]]]] = (
    weakref.WeakKeyDictionary())


def _count_groups(index: GraphIndex) -> dict[_CountKey, dict[int, list[_CountGroup]]]:
    """Index every set of neighbours that a count question can count, by key and then by size.

    A group (subject, entity_type) of size n under a typed key means that ``subject`` has
    n neighbours of type ``entity_type`` through the key's relation and direction. Under
    an untyped key, ``entity_type`` is None and n counts the neighbours of every type.
    The index depends only on the graph, so it is built once per GraphIndex.
    """
    groups = _COUNT_GROUPS.get(index)
    if groups is None:
        by_key: dict[_CountKey, dict[int, list[_CountGroup]]] = defaultdict(lambda: defaultdict(list))
        for subject in index.entities:
            for relation, forward, neighbors in index.steps(subject):
                by_key[_CountKey(relation, forward, False)][len(neighbors)].append((subject, None))
                type_sizes = Counter(index.types[neighbor] for neighbor in neighbors)
                for entity_type, size in sorted(type_sizes.items()):
                    by_key[_CountKey(relation, forward, True)][size].append((subject, entity_type))
        groups = {key: dict(sizes) for key, sizes in sorted(by_key.items())}
        _COUNT_GROUPS[index] = groups
    return groups


def _count_groups_by_size(builder: _QuestionBuilder) -> dict[int, list[tuple[_CountKey, list[_CountGroup]]]]:
    """Return the lists of count groups whose size lies in the spec's count range, by size.

    A relation whose count template names the counted type ("How many works ...") counts
    the neighbours of one type, and any other relation counts all its neighbours, so
    each relation contributes only its typed or only its untyped groups.
    """
    by_size: dict[int, list[tuple[_CountKey, list[_CountGroup]]]] = defaultdict(list)
    for key, sizes in _count_groups(builder.index).items():
        template_field = "count_tails" if key.forward else "count_heads"
        relation_name = builder.graph.relation_names.get(key.relation)
        if builder.templates.states_type(key.relation, relation_name, template_field) != key.typed:
            continue
        for size, groups in sizes.items():
            if builder.spec.min_count <= size <= builder.spec.max_count:
                by_size[size].append((key, groups))
    return by_size


def _draw_count_group(by_size: dict[int, list[tuple[_CountKey, list[_CountGroup]]]],
                      rng: random.Random) -> tuple[_CountKey, _CountGroup]:
    """Draw the answer of a count question, then one group of that size uniformly.

    The answer is a size drawn with weight n / (n + COUNT_GROUPS_HALF_WEIGHT), where n is
    the number of groups of that size. Drawing a subject or a group directly would give
    mostly 2, because most graphs have far more pairs than larger groups.
    """
    sizes = sorted(by_size)
    weights = []
    for size in sizes:
        group_count = sum(len(groups) for _, groups in by_size[size])
        weights.append(group_count / (group_count + COUNT_GROUPS_HALF_WEIGHT))
    lists = by_size[rng.choices(sizes, weights)[0]]

    position = rng.randrange(sum(len(groups) for _, groups in lists))
    for key, groups in lists:
        if position < len(groups):
            return key, groups[position]
        position -= len(groups)
    raise AssertionError("the drawn position exceeds the number of groups")


def _count(builder: _QuestionBuilder, hops: int) -> _Draft | None:
    index, rng = builder.index, builder.rng
    by_size = _count_groups_by_size(builder)
    if not by_size:
        return None
    for _ in range(START_TRIES):
        (relation, forward, _), (subject, counted_type) = _draw_count_group(by_size, rng)
        template_field = "count_tails" if forward else "count_heads"
        neighbors = index.neighbors(subject, relation, forward)
        counted = [entity for entity in neighbors if counted_type is None or index.types[entity] == counted_type]
        if hops > 1:
            steps = builder.walk(subject, hops - 1, avoid=set(counted))
            if steps is None:
                continue
            phrase, subject_variable = builder.describe(steps)
        else:
            phrase, subject_variable = index.names[subject], builder.anchor(subject)
        target = builder.unknown(counted, counted_type)
        builder.link(subject_variable, target, relation, variable_is_head=forward)
        head, tail = (subject, counted[0]) if forward else (counted[0], subject)
        question = builder.relation_text(relation, template_field, phrase, head, tail)
        answer = str(len(counted))
        aliases = [NUMBER_WORDS[len(counted)]] if len(counted) < len(NUMBER_WORDS) else []
        return _Draft("count", builder.query("count", target=target), question, answer, aliases,
                      builder.facts(), builder.attribute_facts)
    return None


_GENERATORS: dict[str, Callable[[_QuestionBuilder, int], _Draft | None]] = {
    "bridge": _bridge, "intersection": _intersection, "comparison": _comparison, "count": _count}


# ---------------------------------------------------------------------- verification


def _mentions(text: str, name: str) -> bool:
    """Return whether ``name`` occurs in ``text``, ignoring case.

    Names of four or more characters match anywhere ("Paris" in "Parisian"); shorter
    names and numbers match only as whole words, so an alias such as "GB" or an answer
    such as "3" does not match inside other words or numbers.
    """
    needle = name.strip().lower()
    if not needle:
        return False
    if len(needle) >= 4 and not needle.isdigit():
        return needle in text
    return re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", text) is not None


def _leak_reasons(question: str, answer: str, aliases: Iterable[str], query: Query, index: GraphIndex) -> list[str]:
    reasons = []
    text = question.lower()
    for name in (answer, *aliases):
        if _mentions(text, name):
            reasons.append(f"answer_in_question: the question contains the answer {name!r}")
            break
    anchors = {variable.entity for variable in query.variables.values() if variable.entity is not None}
    answers = {entity for name in query.answer_variables for entity in query.bindings.get(name, [])}
    for entity in sorted({entity for entities in query.bindings.values() for entity in entities} - anchors - answers):
        for name in (index.names.get(entity, entity), *index.aliases.get(entity, [])):
            if _mentions(text, name):
                reasons.append(f"intermediate_in_question: the question names the obscured entity {entity} ({name!r})")
                break
    return reasons


def _anchor_reasons(query: Query, state: SynthesisIndexes) -> list[str]:
    """Return an ambiguous_anchor reason for each named anchor whose name another entity also carries."""
    reasons = []
    anchors = {variable.entity for variable in query.variables.values() if variable.entity is not None}
    for entity in sorted(anchors):
        name = state.index.names.get(entity, entity)
        carriers = state.name_counts.get(_name_key(name), 0)
        if carriers > 1:
            reasons.append(f"ambiguous_anchor: {carriers} entities carry the anchor name {name!r} of {entity}")
    return reasons


def _fact_documents(index: GraphIndex, facts: list[tuple[str, str, str]],
                    attribute_facts: list[tuple[str, str]]) -> tuple[list[frozenset[str]], list[str]]:
    """Return the evidence documents of every fact, and a reason for each fact the graph lacks or cannot document."""
    documents, reasons = [], []
    for head, relation, tail in facts:
        try:
            found = index.fact_documents(head, relation, tail)
        except KeyError:
            reasons.append(f"missing_fact: the graph has no fact ({head}, {relation}, {tail})")
            continue
        if not found:
            reasons.append(f"missing_evidence: no document states ({head}, {relation}, {tail})")
        documents.append(found)
    for entity, attribute in dict.fromkeys(attribute_facts):
        found = index.attribute_documents(entity, attribute)
        if not found:
            reasons.append(f"missing_evidence: no document about {entity} states its {attribute}")
        documents.append(found)
    return documents, reasons


def _uniqueness_reasons(query: Query, index: GraphIndex, answer: str) -> list[str]:
    try:
        projections = solve(query, index)
    except SolveBudgetExceeded as error:
        return [f"not_unique: uniqueness could not be decided within the budget ({error})"]
    except QueryError as error:
        return [f"invalid_query: {error}"]
    reasons = []
    for name, variable in query.variables.items():
        if variable.entity is not None:
            continue
        found = projections[name]
        expected = set(query.bindings.get(name, []))
        if query.operation == "count" and name == query.target:
            if found != expected:
                reasons.append(f"not_unique: the counted variable {name} takes {len(found)} entities, "
                               f"the question expects {len(expected)}")
            elif answer != str(len(found)):
                reasons.append(f"wrong_answer: the answer {answer!r} is not the count {len(found)}")
            continue
        if len(found) != 1:
            shown = ", ".join(sorted(found)[:3]) + (", ..." if len(found) > 3 else "")
            reasons.append(f"not_unique: {len(found)} entities satisfy the constraints on {name} ({shown})")
        elif found != expected:
            reasons.append(f"not_unique: the constraints on {name} select {next(iter(found))}, "
                           f"not the bound entity {sorted(expected)}")
    if reasons or query.operation == "count":
        return reasons
    if query.operation == "select":
        selected = next(iter(projections[query.target]))
        if index.names[selected] != answer:
            return [f"wrong_answer: the answer {answer!r} is not the name of the selected entity {selected}"]
        return []
    values = [index.attributes[next(iter(projections[name]))].get(query.attribute) for name in query.candidates]
    numeric = all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values)
    if not numeric or values[0] == values[1]:
        return [f"not_unique: the compared {query.attribute} values {values} are missing or equal"]
    pick = min if query.order == "min" else max
    winner = next(iter(projections[query.candidates[values.index(pick(values))]]))
    if index.names[winner] != answer:
        return [f"wrong_answer: the {query.order} {query.attribute} belongs to {index.names[winner]!r}, not {answer!r}"]
    return []


def _one_query_reason(query: str, fact_documents: list[frozenset[str]], probe: Bm25Probe, k: int,
                      scores: np.ndarray | None = None) -> str | None:
    """Return a one_query reason when a search for ``query`` returns documents that state every needed fact.

    ``query`` is the search tool's query for the question (:func:`_tool_query`), and
    ``scores`` are the probe's scores for it, computed here when not given.
    """
    candidates = set().union(*fact_documents) if fact_documents else set()
    returned = probe.returned(query, candidates, k, scores)
    if all(documents & returned for documents in fact_documents):
        return (f"one_query: a BM25 search for the question returns {', '.join(sorted(returned))} in its top {k}, "
                "which together state every needed fact")
    return None


def _tool_query(question: str) -> str:
    """Return the query that the ``search`` tool of ``erlgym/SearchQA-v0`` runs when called with ``question``."""
    return shorten(collapse_whitespace(_printable(question)), MAX_QUERY_CHARS)


def _printable(text: str) -> str:
    """Return :func:`~erlgym.envs.search_corpus.to_printable` of ``text``, skipping its loop for printable ASCII."""
    # to_printable keeps every printable ASCII character, and str.isprintable is False
    # for the ASCII control and whitespace characters that it may replace.
    return text if text.isascii() and text.isprintable() else to_printable(text)


_ASCII_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _normalize_ascii(text: str) -> str:
    """Return :func:`~erlgym.envs.answer_scoring.normalize_answer` of ``text``, in C-level string calls for ASCII.

    For ASCII text, normalize_answer's accent folding changes nothing, and the
    characters it deletes are exactly ``string.punctuation``. Other text goes to
    normalize_answer itself.
    """
    if not text.isascii():
        return normalize_answer(text)
    return " ".join(_ARTICLES.sub(" ", text.translate(_ASCII_PUNCTUATION).lower()).split())


def _shown_texts(document: Document, terms: set[str]) -> tuple[str, str]:
    """Return the title and snippet that the ``search`` tool shows for ``document``, for a query with ``terms``.

    The document is folded as :class:`~erlgym.envs.search_corpus.SearchCorpus` folds it.
    """
    title = shorten(collapse_whitespace(_printable(document.title)), MAX_TITLE_CHARS)
    folded = Document(document.doc_id, title,
                      [collapse_whitespace(_printable(sentence)) for sentence in document.sentences])
    return title, best_snippet(folded, terms)


def _may_show(document: Document, names: list[str]) -> bool:
    """Return False when no title or snippet of ``document`` can contain one of the normalized ``names``.

    Every word of a normalized title or snippet is a substring of the document's printable
    text, lowercased and without punctuation, so one pass over that text rules out most
    documents before their snippet is chosen.
    """
    text = _printable(f"{document.title} {document.text}").lower().translate(_ASCII_PUNCTUATION)
    return any(all(word in text for word in name.split()) for name in names)


def _answer_in_results_reason(query: str, answer: str, aliases: Iterable[str], probe: Bm25Probe,
                              documents: dict[str, Document], k: int,
                              scores: np.ndarray | None = None) -> str | None:
    """Return an answer_in_results reason when a search for ``question`` shows the answer or an alias.

    ``query`` is the search the environment's ``search`` tool runs for the question
    (:func:`_tool_query`), to depth ``k``. The answer counts as shown when its normalized form
    (:func:`~erlgym.envs.answer_scoring.normalize_answer`, as answers are scored) occurs
    as whole words in the normalized title or snippet of a result. ``scores`` are the
    probe's scores for ``query``, computed here when not given.
    """
    names = [name for name in dict.fromkeys(_normalize_ascii(name) for name in (answer, *aliases)) if name]
    if not names:
        return None
    if scores is None:
        scores = probe.scores(query)
    terms: set[str] | None = None
    # NOTE: the environment indexes the documents folded to printable ASCII and the probe
    # indexes them as they are, so for documents with other characters the two rankings
    # can differ slightly.
    for doc_id in probe.top(scores, k):
        document = documents.get(doc_id)
        if document is None or not _may_show(document, names):
            continue
        if terms is None:
            terms = query_terms(query)
        for part, text in zip(("title", "snippet"), _shown_texts(document, terms)):
            padded = f" {_normalize_ascii(text)} "
            for name in names:
                if f" {name} " in padded:
                    return (f"answer_in_results: a search for the question shows {name!r} in the {part} of "
                            f"{doc_id} within its top {k}")
    return None


def verify_task(graph: KnowledgeGraph, task: Task, index: SearchIndex | None = None,
                bm25_k: int | None = 5) -> list[str]:
    """Check a finished task against ``graph``; return the reasons it fails, each starting with a reason code, or [].

    Runs every check that :func:`synthesize` runs (see the module docstring), and also
    that the task's evidence documents state every fact and its difficulty matches the
    graph. ``index`` is the BM25 index of the graph's documents, built if not given;
    ``bm25_k`` is the depth of the search for the question, None for the task's document count.
    """
    state = synthesis_indexes(graph)
    probe = state.probe if index is None or index is state.search else Bm25Probe(index)
    if not task.query:
        return ["invalid_query: the task has no query; tasks built by synthesize carry one"]
    try:
        query = Query.from_dict(task.query)
    except QueryError as error:
        return [f"invalid_query: {error}"]
    facts = []
    for constraint in query.constraints:
        for head in query.bindings.get(constraint.head, []):
            for tail in query.bindings.get(constraint.tail, []):
                facts.append((head, constraint.relation, tail))
    attribute_facts = [(entity, attribute) for name, variable in query.variables.items()
                       for attribute in variable.attributes for entity in query.bindings.get(name, [])]
    if query.operation == "compare":
        attribute_facts += [(entity, query.attribute) for name in query.candidates for entity in query.bindings[name]]

    reasons = _leak_reasons(task.question, task.answer, task.aliases, query, state.index)
    reasons += _anchor_reasons(query, state)
    documents, evidence_reasons = _fact_documents(state.index, list(dict.fromkeys(facts)), attribute_facts)
    reasons += evidence_reasons
    reasons += _uniqueness_reasons(query, state.index, task.answer)
    if not evidence_reasons:
        cover = min_document_cover(documents)
        if len(cover) < 2:
            reasons.append("single_document: one document states every needed fact")
        if not all(docs & set(task.evidence) for docs in documents):
            reasons.append("evidence_incomplete: the task's evidence documents do not state every needed fact")
        measured = difficulty_of(query, documents)
        if task.difficulty != measured:
            reasons.append(f"difficulty_mismatch: the task records {task.difficulty}, the graph gives {measured}")
        k = bm25_k or len(cover)
        query = _tool_query(task.question)
        scores = probe.scores(query)
        reason = _one_query_reason(query, documents, probe, k, scores)
        if reason:
            reasons.append(reason)
        if task.shape in ANSWER_SHOWN_SHAPES:
            reason = _answer_in_results_reason(query, task.answer, task.aliases, probe, graph.documents, k, scores)
            if reason:
                reasons.append(reason)
    return reasons


# ---------------------------------------------------------------------- one task


def _shape_hop_choices(spec: SynthesisSpec) -> tuple[list[tuple[str, int]], list[float]]:
    """Return the (shape, hops) pairs a seed may draw, with weights that split each shape's weight over its hops."""
    if "hops" in spec.targets:
        values = sorted(int(value) for value, share in spec.targets["hops"].items() if share > 0)
    elif spec.joint and all("hops" in row for row in spec.joint):
        values = sorted({int(row["hops"]) for row in spec.joint if row.get("share", 0) > 0})
    else:
        values = list(range(spec.hops[0], spec.hops[1] + 1))
    choices, weights = [], []
    for shape in SHAPES:
        weight = spec.shapes.get(shape, 0.0)
        usable = [hops for hops in values if hops >= MIN_HOPS[shape]]
        if weight > 0 and usable:
            choices.extend((shape, hops) for hops in usable)
            weights.extend([weight / len(usable)] * len(usable))
    if not choices:
        raise SynthesisError(f"No shape with positive weight in {spec.shapes} can have hops in {values}: bridge and "
                             f"count need at least 1 hop, intersection and comparison at least 2.")
    return choices, weights


def _attempt(graph: KnowledgeGraph, seed: int, spec: SynthesisSpec, state: SynthesisIndexes,
             templates: QuestionTemplates) -> tuple[Task | None, str]:
    """Build and verify the task of ``seed``; return it, or None and the code of the first failed check."""
    rng = random.Random(seed)
    choices, weights = _shape_hop_choices(spec)
    shape, hops = rng.choices(choices, weights)[0]
    builder = _QuestionBuilder(graph, state.index, templates, spec, rng)
    draft = _GENERATORS[shape](builder, hops)
    if draft is None:
        return None, "no_question"
    draft.question = draft.question[0].upper() + draft.question[1:]

    reasons = _leak_reasons(draft.question, draft.answer, draft.aliases, draft.query, state.index)
    reasons += _anchor_reasons(draft.query, state)
    if reasons:
        return None, _code(reasons[0])
    documents, reasons = _fact_documents(state.index, draft.facts, draft.attribute_facts)
    if reasons:
        return None, _code(reasons[0])
    cover = min_document_cover(documents)
    if len(cover) < 2:
        return None, "single_document"
    reasons = _uniqueness_reasons(draft.query, state.index, draft.answer)
    if reasons:
        return None, _code(reasons[0])
    k = spec.bm25_k or len(cover)
    query = _tool_query(draft.question)
    scores = state.probe.scores(query)
    if _one_query_reason(query, documents, state.probe, k, scores):
        return None, "one_query"
    if draft.shape in ANSWER_SHOWN_SHAPES and _answer_in_results_reason(
            query, draft.answer, draft.aliases, state.probe, graph.documents, k, scores):
        return None, "answer_in_results"

    task = Task(
        task_id=f"{graph.name}-{seed}",
        question=draft.question,
        answer=draft.answer,
        aliases=list(draft.aliases),
        shape=draft.shape,
        subgraph=[{"head": head, "relation": relation, "tail": tail} for head, relation, tail in draft.facts],
        evidence=cover,
        difficulty=difficulty_of(draft.query, documents),
        seed=seed,
        source=graph.name,
        query=draft.query.to_dict(),
    )
    return task, ""


def _code(reason: str) -> str:
    return reason.split(":", 1)[0]


def synthesize_task(graph: KnowledgeGraph, seed: int, spec: SynthesisSpec | None = None) -> Task | None:
    """Build the task of ``seed``, or return None when its draft fails verification.

    The result depends only on the graph, the seed and the spec, so a kept task is
    rebuilt exactly from its ``seed``. The graph's indexes are built on the first call
    and reused while the graph object lives.
    """
    spec = spec or SynthesisSpec()
    _check_spec(spec)
    task, _ = _attempt(graph, seed, spec, synthesis_indexes(graph), _templates(spec))
    return task


# ---------------------------------------------------------------------- targets


Cell = tuple[int, ...]


@dataclass
class _Targets:
    """Target distribution over some difficulty measures: marginal shares, or joint shares per cell."""

    measures: tuple[str, ...]
    marginals: dict[str, dict[int, float]]
    joint: dict[Cell, float] | None

    def cell(self, task: Task) -> Cell:
        return tuple(task.difficulty[measure] for measure in self.measures)

    def describe(self, cell: Cell) -> str:
        return ", ".join(f"{measure}={value}" for measure, value in zip(self.measures, cell))


def _check_share(share: Any, where: str) -> None:
    """Raise SynthesisError unless ``share`` is a finite non-negative number."""
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not math.isfinite(share) or share < 0:
        raise SynthesisError(f"{where} must be a finite non-negative number, got {share!r}.")


def _normalized(shares: dict[Any, float], where: str) -> dict[Any, float]:
    for key, share in shares.items():
        _check_share(share, f"{where}[{key!r}]")
    total = sum(shares.values())
    if not math.isfinite(total) or total <= 0:
        raise SynthesisError(f"{where}: shares must have a positive finite sum, got {shares}.")
    return {key: share / total for key, share in shares.items() if share > 0}


def _measure_value(measure: str, value: Any, where: str) -> int:
    """Return a target's measure value as an int; hops values must lie in 1..MAX_HOPS, others must be non-negative.

    Accepts ints, integral floats such as 2.0, and decimal integer strings (marginal
    target keys). Floats above 2**53 are rejected, since they no longer stand for one
    integer (1e300 is the nearest double to many integers). Raises SynthesisError for
    anything else.
    """
    if isinstance(value, str):
        try:
            number = int(value)
        except ValueError:
            number = None
    elif isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) <= 2**53:
        number = int(value)
    else:
        number = None
    if number is None:
        raise SynthesisError(f"{where}: the {measure} value must be an integer, got {value!r}.")
    low, high = (1, MAX_HOPS) if measure == "hops" else (0, None)
    if number < low or (high is not None and number > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise SynthesisError(f"{where}: the {measure} value must be {bound}, got {value!r}.")
    return number


def _parse_targets(spec: SynthesisSpec) -> _Targets | None:
    if spec.targets and spec.joint:
        raise SynthesisError("Give either marginal targets or a joint target, not both.")
    if spec.targets:
        marginals = {}
        for measure, shares in spec.targets.items():
            if measure not in DIFFICULTY_MEASURES:
                raise SynthesisError(f"Unknown difficulty measure {measure!r} in targets; use one of "
                                     f"{', '.join(DIFFICULTY_MEASURES)}.")
            if not isinstance(shares, dict):
                raise SynthesisError(f"targets[{measure!r}] must map integer values to shares, got {shares!r}.")
            where = f"targets[{measure!r}]"
            values = {_measure_value(measure, value, where): share for value, share in shares.items()}
            marginals[measure] = _normalized(values, f"targets[{measure!r}]")
        measures = tuple(measure for measure in DIFFICULTY_MEASURES if measure in marginals)
        return _Targets(measures, marginals, None)
    if spec.joint:
        measures = tuple(measure for measure in DIFFICULTY_MEASURES if measure in spec.joint[0])
        unknown = set(spec.joint[0]) - set(DIFFICULTY_MEASURES) - {"share"}
        if unknown or not measures:
            raise SynthesisError(f"Joint target rows name difficulty measures ({', '.join(DIFFICULTY_MEASURES)}) and "
                                 f"a share; got {sorted(spec.joint[0])}.")
        shares: dict[Cell, float] = defaultdict(float)
        for row in spec.joint:
            if set(row) != set(measures) | {"share"}:
                raise SynthesisError(f"Every joint target row needs the same measures {list(measures)} and a share; "
                                     f"got {row}.")
            where = f"Joint target row {row}"
            _check_share(row["share"], f"{where}: the share")
            shares[tuple(_measure_value(measure, row[measure], where) for measure in measures)] += row["share"]
        joint = _normalized(dict(shares), "joint target")
        marginals = {measure: defaultdict(float) for measure in measures}
        for cell, share in joint.items():
            for measure, value in zip(measures, cell):
                marginals[measure][value] += share
        return _Targets(measures, {measure: dict(values) for measure, values in marginals.items()}, joint)
    return None


def _largest_remainder(shares: dict[Any, float], total: int) -> dict[Any, int]:
    """Split ``total`` into integers proportional to ``shares`` (largest remainder method)."""
    exact = {key: share * total for key, share in shares.items()}
    counts = {key: math.floor(value) for key, value in exact.items()}
    by_remainder = sorted(exact, key=lambda key: (counts[key] - exact[key], str(key)))
    for key in by_remainder[:total - sum(counts.values())]:
        counts[key] += 1
    return counts


def _fit_joint(observed: Counter, targets: _Targets, iterations: int = 5000,
               tolerance: float = 1e-3) -> dict[Cell, float] | None:
    """Scale the observed cell frequencies to the marginal targets by iterative proportional fitting.

    Cells never observed stay at zero. Returns the fitted shares once every marginal is
    within ``tolerance``, or None when that does not happen within ``iterations``, which
    means no table on the observed cells meets the targets. A fit whose solution puts some
    cells at zero converges only as 1/iterations, so the tolerance is loose. The quotas
    are rounded to whole tasks afterwards anyway.
    """
    table = {cell: float(count) for cell, count in observed.items()
             if all(value in targets.marginals[measure] for measure, value in zip(targets.measures, cell))}
    for _ in range(iterations):
        for position, measure in enumerate(targets.measures):
            sums: dict[int, float] = defaultdict(float)
            for cell, weight in table.items():
                sums[cell[position]] += weight
            if set(sums) != set(targets.marginals[measure]):
                return None
            for cell in table:
                table[cell] *= targets.marginals[measure][cell[position]] / sums[cell[position]]
        error = 0.0
        for position, measure in enumerate(targets.measures):
            sums = defaultdict(float)
            for cell, weight in table.items():
                sums[cell[position]] += weight
            error = max(error, *(abs(sums[value] - share) for value, share in targets.marginals[measure].items()))
        if error < tolerance:
            return {cell: weight for cell, weight in table.items() if weight > 1e-9}
    return None


def _round_joint(shares: dict[Cell, float], targets: _Targets, count: int) -> dict[Cell, int]:
    """Turn joint shares into cell quotas whose sums match each measure's rounded marginal counts where possible."""
    exact = {cell: share * count for cell, share in shares.items()}
    quotas = {cell: math.floor(value) for cell, value in exact.items()}
    marginal_counts = {measure: _largest_remainder(targets.marginals[measure], count) for measure in targets.measures}

    def deficit(position: int, value: int) -> int:
        measure = targets.measures[position]
        return marginal_counts[measure].get(value, 0) - sum(n for cell, n in quotas.items() if cell[position] == value)

    order = sorted(exact, key=lambda cell: (quotas[cell] - exact[cell], cell))
    while sum(quotas.values()) < count:
        fitting = [cell for cell in order if all(deficit(i, value) > 0 for i, value in enumerate(cell))]
        # NOTE: when no cell fits every remaining marginal deficit, the largest remainder
        # takes the task and that marginal ends one task off its rounded target.
        cell = fitting[0] if fitting else order[0]
        quotas[cell] += 1
        order.remove(cell)
        order.append(cell)
    return {cell: quota for cell, quota in quotas.items() if quota > 0}


def _value_ranges(values: Iterable[int]) -> str:
    """Format integers as ranges: [1, 2, 3, 5] → "1-3, 5"."""
    ordered = sorted(set(values))
    if not ordered:
        return "none"
    parts, start, previous = [], ordered[0], ordered[0]
    for value in ordered[1:] + [None]:
        if value is not None and value == previous + 1:
            previous = value
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if value is not None:
            start = previous = value
    return ", ".join(parts)


# ---------------------------------------------------------------------- the task set


def _check_spec(spec: SynthesisSpec) -> None:
    try:
        _check_spec_values(spec)
    except (TypeError, ValueError, AttributeError) as error:
        if isinstance(error, SynthesisError):
            raise
        raise SynthesisError(f"Invalid synthesis spec: {error}. Shares must be numbers, targets a JSON object of "
                             "objects, joint a list of objects, and hops two integers.") from error


def _check_spec_values(spec: SynthesisSpec) -> None:
    if not isinstance(spec.count, int) or isinstance(spec.count, bool) or spec.count < 1:
        raise SynthesisError(f"count must be a positive integer, got {spec.count!r}.")
    if spec.count > MAX_COUNT:
        raise SynthesisError(f"count must be at most {MAX_COUNT:,}, got {spec.count!r}.")
    unknown = set(spec.shapes) - set(SHAPES)
    if unknown:
        raise SynthesisError(f"Unknown shape(s) {', '.join(sorted(unknown))}; use {', '.join(SHAPES)}.")
    _normalized(dict(spec.shapes), "shapes")
    low, high = spec.hops
    if not all(isinstance(bound, int) and not isinstance(bound, bool) for bound in (low, high)):
        raise SynthesisError(f"hops must be two integers (low, high), got {spec.hops}.")
    if not 1 <= low <= high:
        raise SynthesisError(f"hops must be a range (low, high) with 1 <= low <= high, got {spec.hops}.")
    if high > MAX_HOPS:
        raise SynthesisError(f"hops must be at most {MAX_HOPS}, got {spec.hops}.")
    if spec.bm25_k is not None and spec.bm25_k < 1:
        raise SynthesisError(f"bm25_k must be at least 1 or None, got {spec.bm25_k}.")
    if not 1 <= spec.min_count <= spec.max_count:
        raise SynthesisError(f"min_count and max_count must satisfy 1 <= min_count <= max_count, "
                             f"got {spec.min_count} and {spec.max_count}.")
    if spec.attempt_limit < 1:
        raise SynthesisError(f"max_attempts must be at least 1, got {spec.max_attempts}.")
    _parse_targets(spec)
    _shape_hop_choices(spec)


@dataclass
class _Run:
    """Counts of one :func:`synthesize` call."""

    attempts: int = 0
    verified: int = 0
    rejections: Counter = field(default_factory=Counter)
    seen: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    observed_cells: Counter = field(default_factory=Counter)


def synthesize(graph: KnowledgeGraph, spec: SynthesisSpec,
               progress: Callable[[int, int], None] | None = None) -> TaskSet:
    """Build ``spec.count`` verified tasks that meet the spec's target distribution.

    ``progress(done, total)`` is called whenever a task is kept. The task set contains the
    whole graph corpus, since the agent searches all of it, and a summary of what the
    run achieved (see :func:`_summary`).

    Raises:
        SynthesisError: the spec is invalid, or the graph did not yield enough tasks that
            meet the target within ``spec.max_attempts`` seeds. The message lists what
            the verified tasks achieved.
    """
    _check_spec(spec)
    started = time.perf_counter()
    state = synthesis_indexes(graph)
    templates = _templates(spec)
    targets = _parse_targets(spec)
    seeds = random.Random(spec.seed)
    run = _Run()
    kept: list[Task] = []
    pool: list[Task] = []
    quotas: dict[Cell, int] | None = None
    if targets is not None and targets.joint is not None:
        quotas = _largest_remainder(targets.joint, spec.count)
    elif targets is not None and len(targets.measures) == 1:
        measure = targets.measures[0]
        quotas = {(value,): n for value, n in _largest_remainder(targets.marginals[measure], spec.count).items()}
    filled: Counter = Counter()
    questions: set[str] = set()
    pilot = min(max(PILOT_TASKS[0], spec.count), PILOT_TASKS[1])

    def keep(task: Task) -> bool:
        cell = targets.cell(task) if targets else ()
        if targets is not None and filled[cell] >= quotas.get(cell, 0):
            return False
        filled[cell] += 1
        kept.append(task)
        if progress is not None:
            progress(len(kept), spec.count)
        return True

    def place_pilot() -> None:
        """Plan the joint quotas from the pilot, then keep the pilot's tasks that fit them, in seed order."""
        nonlocal quotas
        quotas = _plan_quotas(run, targets, spec)
        for pooled in pool:
            if not keep(pooled):
                run.rejections["target_cell_full"] += 1
        pool.clear()

    while len(kept) < spec.count and run.attempts < spec.attempt_limit:
        seed = seeds.getrandbits(32)
        run.attempts += 1
        task, reason = _attempt(graph, seed, spec, state, templates)
        if task is None:
            run.rejections[reason] += 1
            continue
        if task.question.lower() in questions:
            # Another seed already gave the same question.
            run.rejections["duplicate"] += 1
            continue
        questions.add(task.question.lower())
        run.verified += 1
        for measure in DIFFICULTY_MEASURES:
            run.seen[measure][task.difficulty[measure]] += 1
        if targets is None:
            keep(task)
            continue
        run.observed_cells[targets.cell(task)] += 1
        if quotas is None:
            pool.append(task)
            if len(pool) >= pilot:
                place_pilot()
        elif not keep(task):
            run.rejections["target_cell_full"] += 1

    if quotas is None and targets is not None:
        # The attempts ran out during the pilot.
        place_pilot()
    if len(kept) < spec.count:
        raise SynthesisError(_shortfall_message(graph, spec, run, targets, quotas or {}, filled, len(kept)))

    seconds = time.perf_counter() - started
    summary = _summary(graph, state, spec, run, kept, targets, quotas, seconds)
    logger.info("synthesized %d tasks from %s in %.1f s (%d attempts)", len(kept), graph.name, seconds, run.attempts)
    return TaskSet(tasks=kept, documents=dict(graph.documents), summary=summary)


def _plan_quotas(run: _Run, targets: _Targets, spec: SynthesisSpec) -> dict[Cell, int]:
    """Plan joint cell quotas from the pilot's cell frequencies (marginal targets over several measures)."""
    missing = [f"{measure}={value}" for measure in targets.measures for value in targets.marginals[measure]
               if not any(cell[targets.measures.index(measure)] == value for cell in run.observed_cells)]
    if missing:
        raise SynthesisError(
            f"No verified task had {', '.join(missing)} among {run.verified} verified tasks from "
            f"{run.attempts} attempts. Achievable: {_achievable(run, targets.measures)}. "
            "Lower the targets to achievable values.")
    shares = _fit_joint(run.observed_cells, targets)
    if shares is None:
        combinations = ", ".join(f"({targets.describe(cell)}) {count}"
                                 for cell, count in sorted(run.observed_cells.items()))
        raise SynthesisError(
            f"The marginal targets for {', '.join(targets.measures)} cannot be met together: "
            f"{run.verified} verified tasks came only in these combinations: {combinations}. "
            "Change the targets, or give a joint target.")
    return _round_joint(shares, targets, spec.count)


def _achievable(run: _Run, measures: Iterable[str]) -> str:
    return "; ".join(f"{measure} {_value_ranges(run.seen[measure])}" for measure in measures)


def _shortfall_message(graph, spec, run, targets, quotas, filled, kept) -> str:
    if targets is None:
        requested = f"{spec.count} tasks"
    else:
        missing = [f"{targets.describe(cell)}: {quota - filled[cell]} of {quota}"
                   for cell, quota in sorted(quotas.items()) if filled[cell] < quota]
        requested = f"{spec.count} tasks with {_describe_targets(spec)} (missing {'; '.join(missing)})"
    rejections = ", ".join(f"{reason} {count}" for reason, count in run.rejections.most_common())
    return (f"Asked for {requested}; graph {graph.name!r} yielded {kept} after {run.attempts} attempts "
            f"(max_attempts {spec.attempt_limit}). Achievable among {run.verified} verified tasks: "
            f"{_achievable(run, DIFFICULTY_MEASURES)}. Rejections: {rejections or 'none'}. "
            "Lower the targets, or raise max_attempts.")


def _describe_targets(spec: SynthesisSpec) -> str:
    if spec.joint:
        return "joint target " + "; ".join(
            ", ".join(f"{key}={value}" for key, value in row.items()) for row in spec.joint)
    return "; ".join(f"{measure} " + ", ".join(f"{value}: {share}" for value, share in shares.items())
                     for measure, shares in spec.targets.items())


def _distribution(tasks: list[Task], measure: str) -> dict[str, int]:
    counts = Counter(task.difficulty[measure] for task in tasks)
    return {str(value): counts[value] for value in sorted(counts)}


def _summary(graph, state, spec, run, kept, targets, quotas, seconds) -> dict[str, Any]:
    """Describe a run: source, counts, spec, achieved marginals and (hops, documents) table, rejections, time."""
    marginals = {measure: _distribution(kept, measure) for measure in DIFFICULTY_MEASURES}
    joint: dict[str, dict[str, int]] = defaultdict(dict)
    for (hops, documents), count in sorted(Counter((task.difficulty["hops"], task.difficulty["documents"])
                                                   for task in kept).items()):
        joint[str(hops)][str(documents)] = count
    summary = {
        "source": graph.name,
        "num_entities": graph.num_entities,
        "num_facts": state.index.num_facts,
        "num_documents": len(graph.documents),
        "tasks": len(kept),
        "spec": spec.to_dict(),
        "shapes": dict(sorted(Counter(task.shape for task in kept).items())),
        "achieved": {
            "marginals": marginals,
            "marginal_shares": {measure: {value: round(count / len(kept), 4) for value, count in counts.items()}
                                for measure, counts in marginals.items()},
            "joint_hops_documents": dict(joint),
        },
        "attempts": run.attempts,
        "verified": run.verified,
        "rejections": dict(run.rejections.most_common()),
        "seconds": round(seconds, 3),
        "tasks_per_s": round(len(kept) / seconds, 1) if seconds > 0 else None,
    }
    if targets is not None:
        summary["targets"] = {
            "measures": list(targets.measures),
            "marginal_shares": {measure: {str(value): round(share, 4) for value, share in sorted(shares.items())}
                                for measure, shares in targets.marginals.items()},
            "cell_quotas": {targets.describe(cell): quota for cell, quota in sorted(quotas.items())},
        }
        achieved_cells = Counter(targets.cell(task) for task in kept)
        summary["achieved"]["joint_targeted"] = {targets.describe(cell): count
                                                 for cell, count in sorted(achieved_cells.items())}
    return summary
