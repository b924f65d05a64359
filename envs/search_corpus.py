"""The task source and document corpus of the search environment, as the agent sees them.

:func:`load_task_source` reads a task source (a task-set folder, a HotpotQA file, a
:class:`TaskSet` or the bundled HotpotQA sample) and builds a :class:`SearchCorpus`:
the documents folded to printable ASCII, indexed by BM25, looked up by id or title,
and cut into pages. :func:`task_split` assigns each task to the train or eval split.
"""

from __future__ import annotations

import functools
import hashlib
import re
import textwrap
import unicodedata
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from bm25s.stopwords import STOPWORDS_EN

from erlgym.envs.base import PRINTABLE
from erlgym.redsearch.corpus import SearchIndex
from erlgym.redsearch.graph import Document
from erlgym.redsearch.hotpotqa import load_hotpotqa
from erlgym.redsearch.tasks import CORPUS_FILE, TASKS_FILE, TaskSet, TaskSetError
from erlgym.redsearch.text import fold_accents

SNIPPET_CHARS = 150
"""Maximum length of a search result's snippet."""
DEFAULT_EVAL_FRACTION = 0.2
HOTPOTQA_PREFIX = "hotpotqa:"
BUNDLED_HOTPOTQA = ("levels", "hotpotqa", "hotpotqa_train_sample100.json")
"""Path, under the ``erlgym.envs`` package, of the HotpotQA sample used when no task source is given."""

_REFERENCE_STRIP = " \t\"'`.,;:!?"
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(STOPWORDS_EN)
_PRINTABLE_SET = frozenset(PRINTABLE)


def to_printable(text: str) -> str:
    """Fold text to the printable ASCII of the observation space.

    Latin letters are folded by :func:`~erlgym.redsearch.text.fold_accents`
    (``"Alû"`` becomes ``"Alu"``), control and separator characters become spaces, and
    each run of other characters (Chinese, Sinhala, ...) becomes one ``?``.
    """
    printable: list[str] = []
    for ch in fold_accents(text):
        if ch in _PRINTABLE_SET:
            printable.append(ch)
        elif unicodedata.category(ch)[0] in "CZ":
            printable.append(" ")
        elif not printable or printable[-1] != "?":
            printable.append("?")
    return "".join(printable)


def collapse_whitespace(text: str) -> str:
    return " ".join(text.split())


def shorten(text: str, max_chars: int) -> str:
    """Cut ``text`` at a word boundary to at most ``max_chars`` characters, marking the cut with ``...``."""
    if len(text) <= max_chars:
        return text
    return textwrap.shorten(text, width=max_chars, placeholder="...") or text[: max_chars - 3] + "..."


def query_terms(text: str) -> set[str]:
    """Return the lower-case words of ``text`` that are not English stopwords.

    A final ``s`` is removed from words of more than three letters, so that ``demons``
    and ``demon`` match when a snippet is chosen.
    """
    terms = set()
    for word in _WORD.findall(text.lower()):
        if word in _STOPWORDS:
            continue
        terms.add(word[:-1] if len(word) > 3 and word.endswith("s") else word)
    return terms


def paginate(sentences: Sequence[str], page_chars: int) -> list[str]:
    """Pack sentences into pages of at most ``page_chars`` characters, split between sentences.

    A sentence longer than a page is split between words, or inside a word longer
    than a page. A document without text has one empty page.
    """
    pages: list[str] = []
    current = ""
    for sentence in sentences:
        pieces = [sentence] if len(sentence) <= page_chars else textwrap.wrap(sentence, page_chars)
        for piece in pieces:
            candidate = piece if not current else f"{current} {piece}"
            if len(candidate) <= page_chars:
                current = candidate
            else:
                pages.append(current)
                current = piece
    if current or not pages:
        pages.append(current)
    return pages


def best_snippet(document: Document, terms: set[str]) -> str:
    """Return the sentence that contains the most query terms (the first on a tie), shortened."""
    best, best_count = "", -1
    for sentence in document.sentences:
        count = len(query_terms(sentence) & terms)
        if sentence and count > best_count:
            best, best_count = sentence, count
    return shorten(best, SNIPPET_CHARS)


class SearchCorpus:
    """The documents of a task set as the agent sees them: printable ASCII, indexed by BM25.

    Each document gets a display id, its id folded by :func:`to_printable` with
    whitespace collapsed. When two ids fold to the same text, the later one gets
    ``-2``, ``-3`` and so on. Title and sentences are folded the same way, so the
    search index, snippets and pages all use the text the agent reads.

    A reference (what the agent passes to ``open``) is looked up in memory only, never
    as a path: first as a display id, then as a display id ignoring case, then as a
    title ignoring case and spacing. Each is tried on the reference as written and
    without surrounding quotes and punctuation.
    """

    def __init__(self, documents: Mapping[str, Document]) -> None:
        self.documents: dict[str, Document] = {}
        self.display_ids: dict[str, str] = {}
        """Original document id to display id."""
        for doc_id, document in documents.items():
            display_id = self._unique_display_id(collapse_whitespace(to_printable(doc_id)) or "doc")
            self.display_ids[doc_id] = display_id
            self.documents[display_id] = Document(
                doc_id=display_id,
                title=collapse_whitespace(to_printable(document.title)),
                sentences=[collapse_whitespace(to_printable(sentence)) for sentence in document.sentences],
            )
        self.index = SearchIndex(self.documents)

        self._by_lower_id: dict[str, str] = {}
        titles: dict[str, list[str]] = {}
        for display_id, document in self.documents.items():
            self._by_lower_id.setdefault(display_id.lower(), display_id)
            titles.setdefault(document.title.lower(), []).append(display_id)
        # A title shared by two documents is ambiguous, so it opens neither.
        self._by_title = {title: ids[0] for title, ids in titles.items() if len(ids) == 1}

    def _unique_display_id(self, base: str) -> str:
        display_id, suffix = base, 1
        while display_id in self.documents:
            suffix += 1
            display_id = f"{base}-{suffix}"
        return display_id

    def find(self, reference: str) -> Document | None:
        """Return the document that a reference names, or None. The class docstring gives the lookup order."""
        for candidate in dict.fromkeys((reference.strip(), reference.strip(_REFERENCE_STRIP))):
            if candidate in self.documents:
                return self.documents[candidate]
            display_id = self._by_lower_id.get(candidate.lower())
            if display_id is None:
                display_id = self._by_title.get(collapse_whitespace(candidate).lower())
            if display_id is not None:
                return self.documents[display_id]
        return None

    def search(self, query: str, k: int) -> list[Document]:
        """Return up to ``k`` documents that match ``query``, best first."""
        return [self.documents[hit.doc_id] for hit in self.index.search(query, k)]


def load_task_source(tasks: Any = None, corpus: str | Path | None = None) -> tuple[TaskSet, SearchCorpus]:
    """Load the tasks and the searchable corpus that ``tasks`` names.

    ``tasks`` is None (the bundled HotpotQA sample), a :class:`TaskSet`, a task-set
    folder (or its ``tasks.jsonl``), a HotpotQA questions file, or ``"hotpotqa:PATH"``.
    ``corpus`` is an extra HotpotQA corpus file (``{title: [sentence, ...]}``) and
    works only with a HotpotQA questions file.

    Files are read once per process, because every copy of the environment in a
    training run would otherwise read and index the corpus again. Later calls with the
    same paths return the same objects while the files keep their size and
    modification time. The environment never changes these objects.

    Raises:
        ValueError: If ``tasks`` has another type, or ``corpus`` is given for a task set.
        TaskSetError: If a file is missing or invalid (a subclass of ValueError).
    """
    if isinstance(tasks, TaskSet):
        if corpus is not None:
            raise ValueError(
                "corpus works only with a HotpotQA questions file: add documents to the TaskSet instead"
            )
        return tasks, SearchCorpus(tasks.documents)
    if tasks is None:
        if corpus is not None:
            raise ValueError("corpus needs tasks: pass tasks='hotpotqa:PATH' with the questions file")
        return _load_bundled_sample()
    if not isinstance(tasks, (str, Path)):
        raise ValueError(
            f"tasks={tasks!r} is invalid: use a task-set folder, a HotpotQA questions file, "
            "'hotpotqa:PATH', a TaskSet, or None for the bundled HotpotQA sample"
        )

    text = str(tasks)
    if text.startswith(HOTPOTQA_PREFIX):
        kind, path = "hotpotqa", Path(text[len(HOTPOTQA_PREFIX):]).expanduser()
    else:
        path = Path(text).expanduser()
        if path.is_file() and path.name == TASKS_FILE:
            path = path.parent
        if path.is_dir():
            kind = "folder"
        elif path.is_file():
            kind = "hotpotqa"
        else:
            raise TaskSetError(
                f"tasks={text!r} not found: pass a task-set folder, a HotpotQA questions file "
                "or 'hotpotqa:PATH'"
            )
    if kind == "folder" and corpus is not None:
        raise ValueError(
            f"corpus works only with a HotpotQA questions file: a task-set folder has its {CORPUS_FILE}"
        )

    corpus_path = None if corpus is None else str(Path(corpus).expanduser().resolve())
    resolved = path.resolve()
    watched = [resolved] if kind == "hotpotqa" else [resolved / TASKS_FILE, resolved / CORPUS_FILE]
    if corpus_path is not None:
        watched.append(Path(corpus_path))
    signature = tuple(_file_signature(item) for item in watched)
    return _load_files(kind, str(resolved), corpus_path, signature)


@functools.lru_cache(maxsize=8)
def _load_files(
    kind: str, path: str, corpus_path: str | None, signature: tuple[Any, ...]
) -> tuple[TaskSet, SearchCorpus]:
    del signature  # part of the cache key only: a changed file is read again
    task_set = TaskSet.load(path) if kind == "folder" else load_hotpotqa(path, corpus_path)
    return task_set, SearchCorpus(task_set.documents)


@functools.cache
def _load_bundled_sample() -> tuple[TaskSet, SearchCorpus]:
    resource = resources.files("erlgym.envs").joinpath(*BUNDLED_HOTPOTQA)
    with resources.as_file(resource) as path:
        task_set = load_hotpotqa(path)
    return task_set, SearchCorpus(task_set.documents)


def _file_signature(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def task_split(task_id: str, eval_fraction: float = DEFAULT_EVAL_FRACTION) -> str:
    """Return ``"eval"`` or ``"train"`` for a task id, from a SHA-256 hash of the id.

    The first 8 bytes of the hash, read as a fraction of 2**64, put the task in the
    eval split when they are below ``eval_fraction``. The split of a task depends on
    its id only, so it stays the same when tasks are added, removed or reordered.
    """
    digest = hashlib.sha256(task_id.encode("utf-8")).digest()
    return "eval" if int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction else "train"
