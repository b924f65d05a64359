"""Rich tables and text lines that describe a task set for ``erlgym tasks``.

The tables count tasks by shape, by value of each difficulty measure (beside the target
shares), by (hops, documents) cell, and rejected seeds by reason. The text lines state
the graph and the settings that ``summary.json`` records.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from rich.markup import escape
from rich.table import Table

from erlgym.redsearch.tasks import DIFFICULTY_MEASURES, SHAPES, SUMMARY_FILE, Task


def count_noun(count: int, noun: str, plural: str | None = None) -> str:
    """Format ``count`` with thousands separators and ``noun``, in the plural unless ``count`` is 1."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {plural or noun + 's'}"


def shape_table(tasks: list[Task]) -> Table:
    counts = Counter(task.shape for task in tasks)
    table = Table("shape", "tasks", "share", title="Tasks by shape", title_justify="left")
    for shape in [*SHAPES, *sorted(set(counts) - set(SHAPES))]:
        if counts[shape]:
            table.add_row(escape(shape), f"{counts[shape]:,}", _percent(counts[shape], len(tasks)))
    table.add_row("all", f"{len(tasks):,}", _percent(len(tasks), len(tasks)), style="bold")
    return table


def difficulty_table(tasks: list[Task], target_shares: dict[str, dict[str, float]]) -> Table:
    """Tabulate tasks per value of each difficulty measure, with the target share where there is one."""
    table = Table("measure", "value", "tasks", "share", "target", title="Difficulty", title_justify="left")
    measures = [measure for measure in DIFFICULTY_MEASURES if any(measure in task.difficulty for task in tasks)]
    for measure in measures:
        counts = Counter(task.difficulty[measure] for task in tasks if measure in task.difficulty)
        targets = target_shares.get(measure, {})
        values = sorted(set(counts) | {int(value) for value in targets})
        for position, value in enumerate(values):
            target = targets.get(str(value))
            table.add_row(measure if position == 0 else "", str(value), f"{counts[value]:,}",
                          _percent(counts[value], len(tasks)), "" if target is None else f"{100 * target:.1f}%",
                          end_section=position == len(values) - 1)
    return table


def joint_table(tasks: list[Task]) -> Table | None:
    """Tabulate tasks by hops (rows) and documents (columns), or return None when a task lacks either measure."""
    if not tasks or any("hops" not in task.difficulty or "documents" not in task.difficulty for task in tasks):
        return None
    cells = Counter((task.difficulty["hops"], task.difficulty["documents"]) for task in tasks)
    documents = sorted({cell[1] for cell in cells})
    table = Table("hops", *(f"{value} docs" for value in documents), "all",
                  title="Tasks by hops (rows) and evidence documents (columns)", title_justify="left")
    for hops in sorted({cell[0] for cell in cells}):
        row = [cells[(hops, value)] for value in documents]
        table.add_row(str(hops), *(f"{count:,}" if count else "" for count in row), f"{sum(row):,}")
    return table


def rejection_table(summary: dict[str, Any]) -> Table:
    rejections = summary.get("rejections", {})
    table = Table("reason", "seeds", title=f"Rejected seeds: {sum(rejections.values()):,} of "
                                           f"{count_noun(summary.get('attempts', 0), 'attempt')}",
                  title_justify="left")
    for reason, count in rejections.items():
        table.add_row(escape(reason), f"{count:,}")
    table.caption = (f"{summary.get('verified', 0):,} verified, {summary.get('tasks', 0):,} kept, "
                     f"in {summary.get('seconds', 0):.1f} s")
    table.caption_justify = "left"
    return table


def _percent(count: int, total: int) -> str:
    return f"{100 * count / total:.1f}%" if total else "-"


def describe_build(summary: dict[str, Any]) -> list[str]:
    """Return lines that state the graph and the settings a task set was built from, as its summary records them."""
    if not summary:
        return [f"No {SUMMARY_FILE}: the build settings are unknown."]
    lines = []
    source = summary.get("graph_source")
    if source is not None:
        settings = ", ".join(f"{key}={_short_json(value)}" for key, value in source.items()
                             if key not in ("kind", "import_report"))
        lines.append(f"Graph source: {source.get('kind')} ({settings})")
    if "num_entities" in summary:
        lines.append(f"Graph {summary.get('source')}: {count_noun(summary['num_entities'], 'entity', 'entities')}, "
                     f"{count_noun(summary.get('num_facts', 0), 'fact')}, "
                     f"{count_noun(summary.get('num_documents', 0), 'document')}")
    elif "source" in summary:
        lines.append(f"Source: {summary['source']}")
    spec = summary.get("spec")
    if spec is not None:
        lines.append("Requested: " + ", ".join(f"{key}={_short_json(value)}" for key, value in spec.items()))
    if "attempts" in summary:
        lines.append(f"Synthesis: {count_noun(summary['attempts'], 'seed')} tried, {summary.get('verified', 0):,} verified, "
                     f"{summary.get('tasks', 0):,} kept in {summary.get('seconds', 0):.1f} s")
    return lines


def _short_json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
