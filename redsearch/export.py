"""Export a task set as JSON Lines with the evidence inlined, or as a Hugging Face ``datasets.DatasetDict``.

JSON Lines (:func:`write_jsonl`): one task per line, every :class:`~erlgym.redsearch.tasks.Task`
field as in ``tasks.jsonl``, plus ``split`` and ``evidence_documents``, the task's evidence
documents (``doc_id``, ``title``, ``sentences``) in the order of ``evidence``. The rest of the
corpus is left out, so the file suits reading or scoring the tasks, but the search
environment needs the task-set folder itself.

Datasets (:func:`to_dataset_dict`): a ``DatasetDict`` with two datasets of different
columns, ``tasks`` and ``corpus``, written with ``save_to_disk`` and read back with
``datasets.load_from_disk``:

- ``tasks``: the task fields and ``split``. ``difficulty`` is a struct of integer measures (a measure
  that a task lacks is None). ``query`` contains the executable query as a JSON string,
  because its variable names are keys that differ between tasks, which Arrow cannot
  type as one struct.
- ``corpus``: ``doc_id``, ``title`` and ``sentences`` of every document.

``split`` is ``"train"`` or ``"eval"``, the split that erlgym/SearchQA-v0 puts the task in
with its default ``eval_fraction`` (:func:`~erlgym.envs.search_corpus.task_split`, a hash
of the task id). An environment made with another ``eval_fraction`` splits differently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from erlgym.envs.search_corpus import task_split
from erlgym.redsearch.tasks import DIFFICULTY_MEASURES, TaskSet

if TYPE_CHECKING:
    import datasets

TASKS_SPLIT = "tasks"
CORPUS_SPLIT = "corpus"


def jsonl_rows(task_set: TaskSet) -> list[dict[str, Any]]:
    """Return one dict per task: its fields and its evidence documents.

    An evidence id that is not in the corpus gets no entry in ``evidence_documents``.
    """
    rows = []
    for task in task_set.tasks:
        row = task.to_dict()
        row["split"] = task_split(task.task_id)
        row["evidence_documents"] = [
            {"doc_id": document.doc_id, "title": document.title, "sentences": list(document.sentences)}
            for document in (task_set.documents.get(doc_id) for doc_id in task.evidence) if document is not None]
        rows.append(row)
    return rows


def write_jsonl(task_set: TaskSet, path: str | Path) -> int:
    """Write :func:`jsonl_rows` to ``path``, one JSON object per line; return the number of lines."""
    rows = jsonl_rows(task_set)
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(rows)


def difficulty_measures(task_set: TaskSet) -> list[str]:
    """Return the difficulty keys of the tasks: the standard measures first, then any other key, sorted."""
    present = {measure for task in task_set.tasks for measure in task.difficulty}
    return [measure for measure in DIFFICULTY_MEASURES if measure in present] + sorted(
        present - set(DIFFICULTY_MEASURES))


def to_dataset_dict(task_set: TaskSet) -> "datasets.DatasetDict":
    """Convert ``task_set`` to a ``DatasetDict`` with a ``tasks`` and a ``corpus`` dataset (see the module docstring)."""
    import datasets

    string = datasets.Value("string")
    measures = difficulty_measures(task_set)
    task_features = datasets.Features({
        "task_id": string,
        "question": string,
        "answer": string,
        "aliases": [string],
        "shape": string,
        "subgraph": [{"head": string, "relation": string, "tail": string}],
        "evidence": [string],
        # A task set without difficulty measures gets an empty list per task: Arrow has
        # no struct without fields.
        "difficulty": {measure: datasets.Value("int64") for measure in measures} if measures else [string],
        "seed": datasets.Value("int64"),
        "source": string,
        "query": string,
        "split": string,
    })
    task_rows = []
    for task in task_set.tasks:
        row = task.to_dict()
        row["query"] = json.dumps(task.query, ensure_ascii=False)
        row["split"] = task_split(task.task_id)
        row["difficulty"] = {measure: task.difficulty.get(measure) for measure in measures} if measures else []
        task_rows.append(row)
    corpus_features = datasets.Features({"doc_id": string, "title": string, "sentences": [string]})
    corpus_rows = [{"doc_id": document.doc_id, "title": document.title, "sentences": list(document.sentences)}
                   for document in task_set.documents.values()]
    return datasets.DatasetDict({
        TASKS_SPLIT: datasets.Dataset.from_list(task_rows, features=task_features),
        CORPUS_SPLIT: datasets.Dataset.from_list(corpus_rows, features=corpus_features),
    })
