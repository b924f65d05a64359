"""Multi-hop search tasks and task sets.

A task set is a folder:

- ``tasks.jsonl``: one :class:`Task` per line;
- ``corpus.jsonl``: one :class:`~erlgym.redsearch.graph.Document` per line, the documents
  the search environment indexes;
- ``summary.json``: how the set was built (source, settings) and the difficulty it
  reached.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from erlgym.redsearch.graph import Document

TASKS_FILE = "tasks.jsonl"
CORPUS_FILE = "corpus.jsonl"
SUMMARY_FILE = "summary.json"
SHAPES = ("bridge", "intersection", "comparison", "count")
DIFFICULTY_MEASURES = ("hops", "branching", "cycles", "treewidth", "documents")
"""Keys of :attr:`Task.difficulty`: reasoning-graph hops, branching, independent cycles,
treewidth, and the fewest distinct documents that together hold every needed fact."""


class TaskSetError(ValueError):
    """An unreadable or invalid task set; the message names the file and line."""


@dataclass
class Task:
    """A question, its answer, and the facts and documents that justify the answer."""

    task_id: str
    question: str
    answer: str
    aliases: list[str] = field(default_factory=list)
    shape: str = "bridge"
    subgraph: list[dict[str, str]] = field(default_factory=list)
    """Facts of the reasoning graph as {"head", "relation", "tail"} entity and relation ids."""
    evidence: list[str] = field(default_factory=list)
    """Ids of the documents that together contain every fact of the subgraph."""
    difficulty: dict[str, int] = field(default_factory=dict)
    seed: int = 0
    source: str = ""
    query: dict[str, Any] = field(default_factory=dict)
    """The question as an executable query (erlgym.redsearch.queries.Query.to_dict), which
    verification solves over the graph; empty for tasks not built by synthesis."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Task":
        known = {name for name in cls.__dataclass_fields__}
        missing = [name for name in ("task_id", "question", "answer") if name not in values]
        if missing:
            raise TaskSetError(f"task is missing {', '.join(missing)}")
        return cls(**{name: value for name, value in values.items() if name in known})


@dataclass
class TaskSet:
    """Tasks with the corpus they are answered from."""

    tasks: list[Task]
    documents: dict[str, Document]
    summary: dict[str, Any] = field(default_factory=dict)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _write_jsonl(folder / TASKS_FILE, (task.to_dict() for task in self.tasks))
        _write_jsonl(folder / CORPUS_FILE, (asdict(document) for document in self.documents.values()))
        (folder / SUMMARY_FILE).write_text(json.dumps(self.summary, indent=2, ensure_ascii=False), encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "TaskSet":
        """Read a task set folder.

        Raises:
            TaskSetError: the folder or one of its files is missing, or a line is not a valid
                task or document (the message names the file and line).
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise TaskSetError(f"Task set {folder} not found: pass a folder written by `erlgym tasks build`.")
        tasks = [Task.from_dict(values) for values in _read_jsonl(folder / TASKS_FILE, "task")]
        documents = {}
        for values in _read_jsonl(folder / CORPUS_FILE, "document"):
            document = Document(doc_id=str(values["doc_id"]), title=str(values["title"]),
                                sentences=[str(sentence) for sentence in values["sentences"]])
            documents[document.doc_id] = document
        summary_path = folder / SUMMARY_FILE
        summary = {}
        if summary_path.exists():
            try:
                summary = json.loads(summary_path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
                raise TaskSetError(f"{summary_path}: invalid summary: {error}") from error
        return cls(tasks=tasks, documents=documents, summary=summary)


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _read_jsonl(path: Path, kind: str) -> list[dict[str, Any]]:
    if not path.is_file():
        raise TaskSetError(f"{path} not found: a task set folder contains {TASKS_FILE} and {CORPUS_FILE}.")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                values = json.loads(line)
                if not isinstance(values, dict):
                    raise ValueError("not a JSON object")
                if kind == "task":
                    Task.from_dict(values)
                elif not {"doc_id", "title", "sentences"} <= set(values):
                    raise ValueError("a document needs doc_id, title and sentences")
            except (ValueError, TaskSetError) as error:
                raise TaskSetError(f"{path}, line {number}: invalid {kind}: {error}") from error
            rows.append(values)
    return rows
