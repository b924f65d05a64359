"""Load HotpotQA questions in the dataset's original JSON format as a :class:`TaskSet`.

HotpotQA (Yang et al., EMNLP 2018, https://hotpotqa.github.io) distributes each split
as one JSON array. Each question is an object with:

- ``_id``, ``question``, ``answer``: strings.
- ``type``: ``"bridge"`` or ``"comparison"``. ``level``: ``"easy"``, ``"medium"`` or
  ``"hard"``.
- ``supporting_facts``: ``[title, sentence index]`` pairs, the sentences that justify
  the answer.
- ``context``: ``[title, [sentence, ...]]`` pairs, the paragraphs given with the
  question (the supporting ones and distractors).

The loader maps a question to a :class:`Task` as follows:

- the corpus is every context paragraph of every question, one document per distinct
  title, plus the paragraphs of the optional corpus file (``{title: [sentence, ...]}``,
  the format HippoRAG ships beside its HotpotQA samples). When a title occurs twice,
  the first paragraph read is kept, and questions are read before the corpus file.
- a document id is the title folded to lower-case ASCII letters and digits joined by
  hyphens (``"Lilu (mythology)"`` becomes ``"lilu-mythology"``), so ids are safe as
  file names. A second title with the same id gets ``-2``, ``-3`` and so on, in the
  order titles are read.
- ``evidence`` is the ids of the distinct supporting-fact titles, in order of first
  mention.
- ``shape`` is the question's ``type``.
- ``difficulty`` is ``{"hops": 2, "documents": number of evidence documents}``. Every
  HotpotQA question is built from two paragraphs: a bridge question follows an entity
  from one to the other, a comparison question looks up one fact in each, so both
  count as two hops.
- ``source`` is ``"hotpotqa"``, followed by ``":"`` and the ``level`` when the
  question has one (``"hotpotqa:hard"``), because :class:`Task` has no level field.

``type`` and ``level`` may be missing, as in files that other projects derived from
HotpotQA: the shape is then ``"bridge"`` and the source ``"hotpotqa"``. Sentences are
stripped of surrounding whitespace (HotpotQA starts most sentences after the first
with a space). Supporting-fact sentence indices are not checked against the
paragraph, because only the titles are used.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any

from erlgym.redsearch.graph import Document
from erlgym.redsearch.tasks import Task, TaskSet, TaskSetError
from erlgym.redsearch.text import fold_accents

logger = logging.getLogger(__name__)

REQUIRED_FIELDS = ("_id", "question", "answer", "supporting_facts", "context")
QUESTION_TYPES = ("bridge", "comparison")
QUESTION_LEVELS = ("easy", "medium", "hard")
HOPS = 2
"""Hops of every HotpotQA question: each joins facts from two paragraphs."""

MAX_DOC_ID_CHARS = 80
_NON_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")


def load_hotpotqa(questions_path: str | Path, corpus_path: str | Path | None = None) -> TaskSet:
    """Read a HotpotQA questions file, and optionally a corpus file, as a task set.

    Raises:
        TaskSetError: A file is missing, is not valid JSON, or has the wrong structure.
            The message names the file and, for a question, its index in the array and
            its ``_id``.
    """
    questions_path = Path(questions_path)
    questions = _read_json(questions_path, "a HotpotQA questions file (a JSON array)")
    if not isinstance(questions, list):
        raise TaskSetError(
            f"{questions_path}: expected a JSON array of questions, got a JSON {_json_type(questions)}"
        )

    corpus = DocumentCollector()
    parsed = [
        _parse_question(values, index, questions_path, corpus) for index, values in enumerate(questions)
    ]

    if corpus_path is not None:
        corpus_path = Path(corpus_path)
        _add_corpus_file(corpus_path, corpus)

    tasks = []
    seen_ids: dict[str, int] = {}
    for index, (values, supporting_titles) in enumerate(parsed):
        where = _describe_question(questions_path, index, values)
        task_id = str(values["_id"])
        if task_id in seen_ids:
            raise TaskSetError(f"{where}: _id repeats the _id of the question at index {seen_ids[task_id]}")
        seen_ids[task_id] = index
        evidence = []
        for title in supporting_titles:
            doc_id = corpus.doc_id(title)
            if doc_id is None:
                raise TaskSetError(
                    f"{where}: supporting fact title {title!r} is neither a context paragraph "
                    "nor in the corpus file"
                )
            if doc_id not in evidence:
                evidence.append(doc_id)
        level = values.get("level")
        tasks.append(Task(
            task_id=task_id,
            question=values["question"],
            answer=values["answer"],
            shape=values.get("type", "bridge"),
            evidence=evidence,
            difficulty={"hops": HOPS, "documents": len(evidence)},
            source="hotpotqa" if level is None else f"hotpotqa:{level}",
        ))

    if corpus.num_conflicts:
        logger.warning(
            "%d paragraphs repeat a title with different sentences. The first paragraph of each "
            "title was kept.",
            corpus.num_conflicts,
        )
    summary = {
        "source": "hotpotqa",
        "questions_file": str(questions_path),
        "corpus_file": None if corpus_path is None else str(corpus_path),
        "tasks": len(tasks),
        "documents": len(corpus.documents),
        "types": dict(Counter(task.shape for task in tasks)),
        "levels": dict(Counter(values["level"] for values, _ in parsed if "level" in values)),
        "conflicting_paragraphs": corpus.num_conflicts,
    }
    return TaskSet(tasks=tasks, documents=corpus.documents, summary=summary)


def slugify_title(title: str) -> str:
    """Fold a title to an id of lower-case ASCII letters and digits joined by hyphens.

    Latin letters are folded by :func:`~erlgym.redsearch.text.fold_accents` (``"Tromsø"``
    becomes ``"tromso"``), other non-ASCII characters and punctuation become hyphens,
    and the id is cut to :data:`MAX_DOC_ID_CHARS` characters. A title with no ASCII
    letter or digit gives ``"doc"``.
    """
    slug = _NON_ALPHANUMERIC.sub("-", fold_accents(title).lower()).strip("-")
    slug = slug[:MAX_DOC_ID_CHARS].rstrip("-")
    return slug or "doc"


class DocumentCollector:
    """Documents keyed by unique, path-safe ids derived from their titles."""

    def __init__(self) -> None:
        self.documents: dict[str, Document] = {}
        self.num_conflicts = 0
        self._id_by_title: dict[str, str] = {}

    def add(self, title: str, sentences: list[str]) -> str:
        """Add a paragraph unless its title is known, and return the title's document id."""
        sentences = [sentence.strip() for sentence in sentences]
        doc_id = self._id_by_title.get(title)
        if doc_id is not None:
            if self.documents[doc_id].sentences != sentences:
                self.num_conflicts += 1
            return doc_id
        base = slugify_title(title)
        doc_id = base
        suffix = 1
        while doc_id in self.documents:
            suffix += 1
            doc_id = f"{base}-{suffix}"
        self._id_by_title[title] = doc_id
        self.documents[doc_id] = Document(doc_id=doc_id, title=title, sentences=sentences)
        return doc_id

    def doc_id(self, title: str) -> str | None:
        """Return the id of the document with this exact title, or None."""
        return self._id_by_title.get(title)


def _parse_question(
    values: Any, index: int, path: Path, corpus: DocumentCollector
) -> tuple[dict[str, Any], list[str]]:
    """Check one question and add its context paragraphs to ``corpus``.

    Returns the question and the titles of its supporting facts.
    """
    where = _describe_question(path, index, values)
    if not isinstance(values, dict):
        raise TaskSetError(f"{where}: expected a JSON object, got a JSON {_json_type(values)}")
    missing = [name for name in REQUIRED_FIELDS if name not in values]
    if missing:
        raise TaskSetError(f"{where}: missing field {', '.join(missing)}")
    if not isinstance(values["_id"], (str, int)) or isinstance(values["_id"], bool):
        id_type = _json_type(values["_id"])
        raise TaskSetError(f"{where}: _id must be a string or an integer, got a JSON {id_type}")
    for name in ("question", "answer"):
        if not isinstance(values[name], str):
            raise TaskSetError(f"{where}: {name} must be a string, got a JSON {_json_type(values[name])}")
    if "type" in values and values["type"] not in QUESTION_TYPES:
        raise TaskSetError(f"{where}: type {values['type']!r} is invalid: use one of {QUESTION_TYPES}")
    if "level" in values and values["level"] not in QUESTION_LEVELS:
        raise TaskSetError(f"{where}: level {values['level']!r} is invalid: use one of {QUESTION_LEVELS}")

    context = values["context"]
    if not isinstance(context, list):
        raise TaskSetError(f"{where}: context must be an array of [title, sentences] pairs")
    for position, paragraph in enumerate(context):
        if not _is_paragraph(paragraph):
            raise TaskSetError(
                f"{where}: context entry {position} is invalid: use [title, [sentence, ...]] with strings"
            )
        corpus.add(paragraph[0], paragraph[1])

    facts = values["supporting_facts"]
    if not isinstance(facts, list):
        raise TaskSetError(f"{where}: supporting_facts must be an array of [title, sentence index] pairs")
    titles = []
    for position, fact in enumerate(facts):
        is_pair = isinstance(fact, list) and len(fact) == 2
        is_valid = is_pair and isinstance(fact[0], str) and type(fact[1]) is int
        if not is_valid:
            raise TaskSetError(
                f"{where}: supporting_facts entry {position} is invalid: use [title, sentence index]"
            )
        titles.append(fact[0])
    return values, titles


def _add_corpus_file(path: Path, corpus: DocumentCollector) -> None:
    paragraphs = _read_json(path, "a corpus file (a JSON object of title to sentence list)")
    if not isinstance(paragraphs, dict):
        raise TaskSetError(
            f"{path}: expected a JSON object mapping titles to sentence lists, "
            f"got a JSON {_json_type(paragraphs)}"
        )
    for title, sentences in paragraphs.items():
        if not _is_paragraph([title, sentences]):
            raise TaskSetError(f"{path}: title {title!r}: expected an array of sentence strings")
        corpus.add(title, sentences)


def _is_paragraph(paragraph: Any) -> bool:
    return (
        isinstance(paragraph, list)
        and len(paragraph) == 2
        and isinstance(paragraph[0], str)
        and isinstance(paragraph[1], list)
        and all(isinstance(sentence, str) for sentence in paragraph[1])
    )


def _read_json(path: Path, description: str) -> Any:
    if not path.is_file():
        raise TaskSetError(f"{path} not found: pass the path of {description}")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise TaskSetError(
            f"{path}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from error
    except UnicodeDecodeError as error:
        raise TaskSetError(f"{path}: invalid UTF-8 at byte {error.start}: save the file as UTF-8") from error


def _describe_question(path: Path, index: int, values: Any) -> str:
    where = f"{path}: question at index {index}"
    if isinstance(values, dict) and isinstance(values.get("_id"), (str, int)):
        where += f" (_id {values['_id']!r})"
    return where


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    if type(value) in names:
        return names[type(value)]
    return "number" if isinstance(value, (int, float)) else type(value).__name__
