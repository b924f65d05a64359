"""Template libraries: the file format, its validation, and the text a template prefills.

A library is a JSON file with discrete reasoning choices grouped in dimensions, after
STATe (Structured Action Templates, Bamberger et al., arXiv 2602.14265)::

    {
      "name": "frozenlake",
      "description": "Reasoning moves for one FrozenLake turn.",
      "dimensions": [
        {"id": "strategy",
         "choices": [{"id": "shortest-path",
                      "definition": "Head for the goal along the shortest safe path.",
                      "guidance": "I take the shortest path to G that avoids every hole.",
                      "check": "shortest|closest|nearest"}]},
        {"id": "opening",
         "choices": [{"id": "locate", "definition": "Start by stating the position.",
                      "guidance": "", "prefix": "I am at"}]}
      ]
    }

A template is one choice per dimension. Its prefill, the text inserted at the start of
the assistant turn, is the choices' guidance sentences, one per line, followed by the
prefix of the only dimension whose choices have prefixes. The model continues after
the prefill. ``check`` is an optional regular expression, matched case-insensitively
against the generated text only, that decides whether the model followed the choice.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
"""Dimension and choice ids: lowercase letters, digits, "-" and "_", so they are safe in feature names."""

MAX_CHOICES = 64
"""Choices in one dimension. The bandit and steered controllers score every combination, so
the product of the dimensions' sizes is capped too, by :data:`MAX_TEMPLATES`."""
MAX_TEMPLATES = 4096

BUNDLED_DIR = Path(__file__).parent / "data"
"""The libraries shipped with erlgym, selectable by their file stem (``frozenlake``, ``reflection``, ...)."""


class TemplateError(ValueError):
    """A template library file or a template id that is invalid, with the value and the fix."""


@dataclass(frozen=True)
class Choice:
    """One reasoning choice of a dimension."""

    id: str
    definition: str
    guidance: str = ""
    prefix: str = ""
    check: str | None = None

    def followed_by(self, text: str) -> bool | None:
        """Return whether ``text`` matches the choice's check, or None when the choice has none.

        Lines that name an action (``Action: ...`` or ``<action>...</action>``) are removed
        first, so a check reads the reasoning, not the action that every turn names.
        """
        if not self.check:
            return None
        return re.search(self.check, reasoning_text(text), re.IGNORECASE) is not None


_ACTION_LINE = re.compile(r"^.*(?:(?<![a-z0-9])action[\s*_`~]*[:=]|<action>).*$", re.IGNORECASE | re.MULTILINE)


def reasoning_text(text: str) -> str:
    """Return ``text`` without its lines that name an action, the part a choice's check reads."""
    return _ACTION_LINE.sub("", text)


@dataclass(frozen=True)
class Dimension:
    """A group of mutually exclusive choices; a template takes exactly one of them."""

    id: str
    choices: tuple[Choice, ...]
    description: str = ""

    def choice(self, choice_id: str) -> Choice:
        for choice in self.choices:
            if choice.id == choice_id:
                return choice
        valid = ", ".join(choice.id for choice in self.choices)
        raise TemplateError(f"unknown choice {choice_id!r} in dimension {self.id!r}; valid choices: {valid}")


@dataclass(frozen=True)
class Template:
    """One choice per dimension of a library, in the library's dimension order."""

    choices: tuple[tuple[str, str], ...]
    """(dimension id, choice id) pairs."""

    @property
    def key(self) -> str:
        """The template's id, ``dimension=choice`` pairs joined by ``","``, as written in logs and files."""
        return ",".join(f"{dimension}={choice}" for dimension, choice in self.choices)

    def as_dict(self) -> dict[str, str]:
        return dict(self.choices)


@dataclass(frozen=True)
class TemplateLibrary:
    """A validated template library; build it with :func:`load_library` or :meth:`from_dict`."""

    name: str
    dimensions: tuple[Dimension, ...]
    description: str = ""
    source: str = ""
    """The file the library was loaded from, for error messages."""

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> "TemplateLibrary":
        """Validate ``data`` (the parsed JSON) and build the library; raise :class:`TemplateError` on any problem."""
        where = f"template library {source}"
        if not isinstance(data, dict):
            raise TemplateError(f"{where}: the top level must be a JSON object with 'name' and 'dimensions', "
                                f"got {type(data).__name__}")
        unknown = set(data) - {"name", "description", "dimensions"}
        if unknown:
            raise TemplateError(f"{where}: unknown top-level keys {sorted(unknown)}; "
                                "valid keys are name, description, dimensions")
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            raise TemplateError(f"{where}: 'name' must be a non-empty string, got {name!r}")
        raw_dimensions = data.get("dimensions")
        if not isinstance(raw_dimensions, list) or not raw_dimensions:
            raise TemplateError(f"{where}: 'dimensions' must be a non-empty list, got {raw_dimensions!r}")

        dimensions = tuple(_parse_dimension(raw, f"{where}, dimensions[{index}]")
                           for index, raw in enumerate(raw_dimensions))
        _check_unique([dimension.id for dimension in dimensions], f"{where}: duplicate dimension id")
        with_prefix = [dimension.id for dimension in dimensions if any(choice.prefix for choice in dimension.choices)]
        if len(with_prefix) > 1:
            raise TemplateError(f"{where}: only one dimension may supply the text prefix, but {with_prefix} "
                                "have choices with a 'prefix'; move the prefixes into one dimension")
        count = 1
        for dimension in dimensions:
            count *= len(dimension.choices)
        if count > MAX_TEMPLATES:
            raise TemplateError(f"{where}: the dimensions combine into {count} templates, more than "
                                f"{MAX_TEMPLATES}; use fewer choices or dimensions")
        description = data.get("description", "")
        if not isinstance(description, str):
            raise TemplateError(f"{where}: 'description' must be a string, got {description!r}")
        return cls(name=name.strip(), dimensions=dimensions, description=description, source=source)

    def to_dict(self) -> dict[str, Any]:
        """Return the library as the JSON object :meth:`from_dict` reads."""
        dimensions = []
        for dimension in self.dimensions:
            choices = []
            for choice in dimension.choices:
                entry = {"id": choice.id, "definition": choice.definition, "guidance": choice.guidance}
                if choice.prefix:
                    entry["prefix"] = choice.prefix
                if choice.check:
                    entry["check"] = choice.check
                choices.append(entry)
            entry = {"id": dimension.id, "choices": choices}
            if dimension.description:
                entry["description"] = dimension.description
            dimensions.append(entry)
        return {"name": self.name, "description": self.description, "dimensions": dimensions}

    def dimension(self, dimension_id: str) -> Dimension:
        for dimension in self.dimensions:
            if dimension.id == dimension_id:
                return dimension
        valid = ", ".join(dimension.id for dimension in self.dimensions)
        raise TemplateError(f"unknown dimension {dimension_id!r} in library {self.name!r}; valid dimensions: {valid}")

    def all_templates(self) -> list[Template]:
        """Return every combination of one choice per dimension, the first dimension varying slowest."""
        templates: list[tuple[tuple[str, str], ...]] = [()]
        for dimension in self.dimensions:
            templates = [chosen + ((dimension.id, choice.id),) for chosen in templates for choice in dimension.choices]
        return [Template(choices) for choices in templates]

    def parse(self, key: str) -> Template:
        """Parse a template id (``"strategy=shortest-path,opening=locate"``); every dimension must be named once."""
        chosen: dict[str, str] = {}
        for part in key.split(","):
            dimension_id, separator, choice_id = part.strip().partition("=")
            if not separator:
                raise TemplateError(f"invalid template {key!r}: write one dimension=choice pair per dimension, "
                                    f"separated by commas, for example {self.all_templates()[0].key!r}")
            dimension = self.dimension(dimension_id.strip())
            if dimension.id in chosen:
                raise TemplateError(f"invalid template {key!r}: dimension {dimension.id!r} is named twice")
            chosen[dimension.id] = dimension.choice(choice_id.strip()).id
        missing = [dimension.id for dimension in self.dimensions if dimension.id not in chosen]
        if missing:
            raise TemplateError(f"invalid template {key!r}: no choice for dimension(s) {missing}")
        return Template(tuple((dimension.id, chosen[dimension.id]) for dimension in self.dimensions))

    def prefill(self, template: Template) -> str:
        """Return the text inserted at the start of the assistant turn for ``template``.

        The guidance sentences come one per line, then the prefix. The text ends with a line
        break when there is no prefix, so that the model starts its own text on a new line.
        """
        guidance = []
        prefix = ""
        for dimension_id, choice_id in template.choices:
            choice = self.dimension(dimension_id).choice(choice_id)
            if choice.guidance.strip():
                guidance.append(choice.guidance.strip())
            if choice.prefix:
                prefix = choice.prefix
        text = "\n".join(guidance)
        if prefix:
            return f"{text}\n{prefix}" if text else prefix
        return f"{text}\n" if text else ""

    def prefix(self, template: Template) -> str:
        """Return the text prefix of ``template`` (no guidance), or "" when its prefix dimension has none."""
        for dimension_id, choice_id in template.choices:
            choice = self.dimension(dimension_id).choice(choice_id)
            if choice.prefix:
                return choice.prefix
        return ""

    def followed(self, template: Template, generated: str) -> dict[str, bool]:
        """Return, per dimension whose chosen choice has a check, whether ``generated`` follows it."""
        result = {}
        for dimension_id, choice_id in template.choices:
            verdict = self.dimension(dimension_id).choice(choice_id).followed_by(generated)
            if verdict is not None:
                result[dimension_id] = verdict
        return result


def _parse_dimension(raw: Any, where: str) -> Dimension:
    if not isinstance(raw, dict):
        raise TemplateError(f"{where}: a dimension must be an object with 'id' and 'choices', got {raw!r}")
    unknown = set(raw) - {"id", "description", "choices"}
    if unknown:
        raise TemplateError(f"{where}: unknown keys {sorted(unknown)}; valid keys are id, description, choices")
    dimension_id = _parse_id(raw.get("id"), f"{where}.id")
    choices_raw = raw.get("choices")
    if not isinstance(choices_raw, list) or not choices_raw:
        raise TemplateError(f"{where} ({dimension_id}): 'choices' must be a non-empty list, got {choices_raw!r}")
    if len(choices_raw) > MAX_CHOICES:
        raise TemplateError(f"{where} ({dimension_id}): {len(choices_raw)} choices, more than {MAX_CHOICES}")
    choices = tuple(_parse_choice(choice, f"{where} ({dimension_id}), choices[{index}]")
                    for index, choice in enumerate(choices_raw))
    _check_unique([choice.id for choice in choices], f"{where} ({dimension_id}): duplicate choice id")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise TemplateError(f"{where} ({dimension_id}): 'description' must be a string, got {description!r}")
    return Dimension(id=dimension_id, choices=choices, description=description)


def _parse_choice(raw: Any, where: str) -> Choice:
    if not isinstance(raw, dict):
        raise TemplateError(f"{where}: a choice must be an object with 'id' and 'definition', got {raw!r}")
    unknown = set(raw) - {"id", "definition", "guidance", "prefix", "check"}
    if unknown:
        raise TemplateError(f"{where}: unknown keys {sorted(unknown)}; "
                            "valid keys are id, definition, guidance, prefix, check")
    choice_id = _parse_id(raw.get("id"), f"{where}.id")
    fields: dict[str, str] = {}
    for key in ("definition", "guidance", "prefix"):
        value = raw.get(key, "")
        if not isinstance(value, str):
            raise TemplateError(f"{where} ({choice_id}): '{key}' must be a string, got {value!r}")
        fields[key] = value
    if not fields["definition"].strip():
        raise TemplateError(f"{where} ({choice_id}): 'definition' must say in words what the choice does")
    for key in ("guidance", "prefix"):
        if _ACTION_LINE.search(fields[key]):
            # The environments parse the whole turn for the action, so a prefilled action would be taken
            # as the model's move.
            raise TemplateError(f"{where} ({choice_id}): '{key}' {fields[key]!r} names an action "
                                "('Action:' or an <action> tag); remove it, so that only the model names the action")
    if fields["prefix"] and not fields["prefix"].strip():
        raise TemplateError(f"{where} ({choice_id}): 'prefix' contains only whitespace; remove it or write text")
    if fields["prefix"] != fields["prefix"].rstrip():
        # A trailing space becomes its own token, which models rarely generate before a word.
        raise TemplateError(f"{where} ({choice_id}): 'prefix' {fields['prefix']!r} ends with whitespace; "
                            "remove it, because the model adds the space before its next word itself")
    check = raw.get("check")
    if check is not None:
        if not isinstance(check, str) or not check:
            raise TemplateError(f"{where} ({choice_id}): 'check' must be a non-empty regular expression, got {check!r}")
        try:
            re.compile(check)
        except re.error as error:
            raise TemplateError(f"{where} ({choice_id}): 'check' {check!r} is not a valid regular expression: "
                                f"{error}") from None
    return Choice(id=choice_id, check=check, **fields)


def _parse_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise TemplateError(f"{where}: invalid id {value!r}; use lowercase letters, digits, '-' and '_', "
                            "starting with a letter or digit")
    return value


def _check_unique(ids: list[str], message: str) -> None:
    seen = set()
    for value in ids:
        if value in seen:
            raise TemplateError(f"{message} {value!r}")
        seen.add(value)


def bundled_libraries() -> list[str]:
    """Return the names of the libraries shipped with erlgym."""
    return sorted(path.stem for path in BUNDLED_DIR.glob("*.json"))


def load_library(name_or_path: str | Path) -> TemplateLibrary:
    """Load a library from a JSON file path, or a bundled library by name (see :func:`bundled_libraries`).

    Raises:
        TemplateError: If the file is missing, is not valid JSON, or breaks the format.
    """
    path = Path(name_or_path)
    if not path.suffix and not path.is_file():
        bundled = BUNDLED_DIR / f"{path.name}.json"
        if bundled.is_file() and len(path.parts) == 1:
            path = bundled
        elif not path.is_dir():
            raise TemplateError(f"template library {str(name_or_path)!r} not found: it is neither a file nor a "
                                f"bundled library ({', '.join(bundled_libraries())})")
    if path.is_dir():
        raise TemplateError(f"template library {str(path)!r} is a directory; give a JSON file or one of the "
                            f"bundled libraries: {', '.join(bundled_libraries())}")
    if not path.is_file():
        raise TemplateError(f"template library file {str(path)!r} not found; give a JSON file or one of the "
                            f"bundled libraries: {', '.join(bundled_libraries())}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TemplateError(f"template library file {str(path)!r} is not valid UTF-8 JSON: {error}; fix the file "
                            "there, or check it with 'erlgym templates check FILE'") from None
    return TemplateLibrary.from_dict(data, source=str(path))
