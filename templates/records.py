"""The template records of a training run: ``templates.jsonl`` and the libraries the run used.

``erlgym train`` with ``--templates`` or ``--reflection-templates`` writes, in its run
directory:

* ``templates.jsonl``, one JSON object per trajectory that used templates::

    {"step": 3, "kind": "first_attempt", "task_seed": 17, "group": "3:17:first_attempt",
     "library": "frozenlake", "templates": ["strategy=close-gap,opening=free", ...],
     "followed": [{"strategy": true}, ...], "actions": ["right", null, ...],
     "final_state": "...", "reward": 1.0, "success": true}

  ``templates``, ``followed`` and ``actions`` have one entry per turn. ``followed`` lists
  only the dimensions whose chosen choice has a check. Trajectories with the same
  ``group`` were sampled for the same task in the same step. A ``reflection`` record has
  exactly one template, and its reward is the reward of the retry that followed it.
* ``templates/actions.json`` and ``templates/reflections.json``, copies of the libraries.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from erlgym.templates.library import Template, TemplateError, TemplateLibrary, bundled_libraries, load_library

RECORDS_FILE = "templates.jsonl"
LIBRARY_FILES = {"actions": Path("templates") / "actions.json", "reflections": Path("templates") / "reflections.json"}
"""Run-directory paths of the library copies, by section."""

SECTION_KINDS = {"actions": ("first_attempt", "retry"), "reflections": ("reflection",)}
"""Record kinds analysed together: action trajectories use the action library, reflections the reflection library."""
KINDS = tuple(kind for kinds in SECTION_KINDS.values() for kind in kinds)


class TemplateAnalysisError(TemplateError):
    """A run directory whose template records cannot be analysed, with the path and the fix."""


@dataclass(frozen=True)
class TemplateRecord:
    """One trajectory of ``templates.jsonl``."""

    line: int
    """Line number in ``templates.jsonl``, from 1, for error messages."""
    step: int
    kind: str
    task_seed: int
    group: str
    library: str
    templates: tuple[str, ...]
    followed: tuple[dict[str, bool], ...]
    actions: tuple[str | None, ...]
    final_state: str
    reward: float
    success: bool


def load_records(run_dir: str | Path) -> list[TemplateRecord]:
    """Read every record of ``run_dir/templates.jsonl``.

    Raises:
        TemplateAnalysisError: If the file is missing or empty, or a line is not a valid
            record. The message names the path, the line number and the fix.
    """
    path = Path(run_dir) / RECORDS_FILE
    if Path(run_dir).is_file():
        raise TemplateAnalysisError(f"{str(run_dir)!r} is a file; pass the run directory that contains "
                                    f"{RECORDS_FILE}, the folder that 'erlgym train' wrote")
    if not Path(run_dir).is_dir():
        raise TemplateAnalysisError(f"run directory {str(run_dir)!r} not found; pass the folder that "
                                    "'erlgym train' wrote")
    if not path.is_file():
        raise TemplateAnalysisError(f"{path} not found: the run recorded no template choices. Train with "
                                    "--templates LIBRARY or --reflection-templates LIBRARY to record them")
    try:
        # split("\n"), not splitlines(), which also splits at U+2028 and other characters allowed in JSON strings.
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as error:
        raise TemplateAnalysisError(f"{path} is not valid UTF-8 ({error}); the file is damaged, so restore it "
                                    "or rerun the training") from None
    except OSError as error:
        raise TemplateAnalysisError(f"cannot read {path}: {error.strerror}; check its permissions") from None
    records = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise TemplateAnalysisError(f"{path}, line {number}: invalid JSON ({error.msg} at column {error.colno}). "
                                        "Repair or delete the line; a run killed while writing can leave its "
                                        "last line cut short") from None
        records.append(parse_record(data, number, path))
    if not records:
        raise TemplateAnalysisError(f"{path} is empty: the run finished no trajectory with templates. Train "
                                    "for at least one step with --templates or --reflection-templates")
    return records


def parse_record(data: Any, line: int, path: str | Path = RECORDS_FILE) -> TemplateRecord:
    """Validate one parsed line of ``templates.jsonl``, raising :class:`TemplateAnalysisError` that names the line."""
    where = f"{path}, line {line}"
    if not isinstance(data, dict):
        raise TemplateAnalysisError(f"{where}: expected a JSON object, got {type(data).__name__}")
    required = ("step", "kind", "task_seed", "group", "library", "templates", "followed", "reward", "success")
    missing = [key for key in required if key not in data]
    if missing:
        raise TemplateAnalysisError(f"{where}: missing field(s) {missing}; the line is not a template record")

    kind = data["kind"]
    if kind not in KINDS:
        raise TemplateAnalysisError(f"{where}: invalid kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    for key in ("step", "task_seed"):
        if not _is_int(data[key]):
            raise TemplateAnalysisError(f"{where}: '{key}' must be an integer, got {data[key]!r}")
    for key in ("group", "library"):
        if not isinstance(data[key], str) or not data[key]:
            raise TemplateAnalysisError(f"{where}: '{key}' must be a non-empty string, got {data[key]!r}")
    reward = data["reward"]
    if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward):
        raise TemplateAnalysisError(f"{where}: 'reward' must be a finite number, got {reward!r}")
    if not isinstance(data["success"], bool):
        raise TemplateAnalysisError(f"{where}: 'success' must be true or false, got {data['success']!r}")

    templates = data["templates"]
    if not isinstance(templates, list) or not templates or not all(isinstance(key, str) for key in templates):
        raise TemplateAnalysisError(f"{where}: 'templates' must be a non-empty list of template ids, "
                                    f"got {templates!r}")
    if kind == "reflection" and len(templates) != 1:
        raise TemplateAnalysisError(f"{where}: a reflection record has exactly one template, got {len(templates)}")
    followed = data["followed"]
    if (not isinstance(followed, list) or len(followed) != len(templates)
            or not all(isinstance(turn, dict) and all(isinstance(value, bool) for value in turn.values())
                       for turn in followed)):
        raise TemplateAnalysisError(f"{where}: 'followed' must be a list of {len(templates)} objects (one per "
                                    f"turn) of dimension: true/false, got {followed!r}")
    actions = data.get("actions", [None] * len(templates))
    if (not isinstance(actions, list) or len(actions) != len(templates)
            or not all(action is None or isinstance(action, str) for action in actions)):
        raise TemplateAnalysisError(f"{where}: 'actions' must be a list of {len(templates)} action names or "
                                    f"nulls (one per turn), got {actions!r}")
    final_state = data.get("final_state", "")
    if not isinstance(final_state, str):
        raise TemplateAnalysisError(f"{where}: 'final_state' must be a string, got {final_state!r}")

    return TemplateRecord(line=line, step=data["step"], kind=kind, task_seed=data["task_seed"], group=data["group"],
                          library=data["library"], templates=tuple(templates), followed=tuple(followed),
                          actions=tuple(actions), final_state=final_state, reward=float(reward),
                          success=data["success"])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load_section_library(run_dir: str | Path, section: str, records: list[TemplateRecord]) -> TemplateLibrary:
    """Load the library that the ``records`` of ``section`` ("actions" or "reflections") were sampled from.

    The run's copy in ``run_dir/templates/`` comes first. A run without the copy falls back
    to the bundled library that the records name, which may differ from the one the run used
    if that library has changed since.

    Raises:
        TemplateAnalysisError: If no library is found, or a record names another library
            or a template the library does not have.
    """
    if section not in SECTION_KINDS:
        raise ValueError(f"unknown section {section!r}; valid sections: {', '.join(SECTION_KINDS)}")
    path = Path(run_dir) / LIBRARY_FILES[section]
    names = sorted({record.library for record in records})
    if path.is_file():
        library = load_library(path)
    elif len(names) == 1 and names[0] in bundled_libraries():
        library = load_library(names[0])
    else:
        raise TemplateAnalysisError(f"{path} not found and the {section} records name {names}, which is not "
                                    f"one bundled library ({', '.join(bundled_libraries())}); copy the library "
                                    f"file the run used to {path}")
    for record in records:
        if record.library != library.name:
            raise TemplateAnalysisError(f"{Path(run_dir) / RECORDS_FILE}, line {record.line}: the record names "
                                        f"library {record.library!r}, but the {section} library in "
                                        f"{library.source} is {library.name!r}")
    return library


def parse_templates(record: TemplateRecord, library: TemplateLibrary, run_dir: str | Path = "") -> list[Template]:
    """Parse the record's template ids with ``library``, raising :class:`TemplateAnalysisError` that names the line."""
    try:
        return [library.parse(key) for key in record.templates]
    except TemplateError as error:
        raise TemplateAnalysisError(f"{Path(run_dir) / RECORDS_FILE}, line {record.line}: {error}") from None


def check_followed(record: TemplateRecord, library: TemplateLibrary, run_dir: str | Path = "") -> None:
    """Raise :class:`TemplateAnalysisError` if the record's ``followed`` names a dimension the library lacks."""
    valid = {dimension.id for dimension in library.dimensions}
    for turn, verdicts in enumerate(record.followed):
        unknown = sorted(set(verdicts) - valid)
        if unknown:
            raise TemplateAnalysisError(f"{Path(run_dir) / RECORDS_FILE}, line {record.line}: 'followed' of turn "
                                        f"{turn} names unknown dimension(s) {unknown} of library "
                                        f"{library.name!r}; valid dimensions: {', '.join(sorted(valid))}")
