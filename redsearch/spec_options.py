"""Command-line options and JSON spec files for :class:`~erlgym.redsearch.synthesis.SynthesisSpec`.

:func:`add_spec_options` adds one option per field, with the field's help text and
default, so the options follow the dataclass. :func:`resolve_spec` reads ``--spec
FILE``, puts the options given on the command line over it, and validates the result
before any graph is built. A field's annotation decides its command-line form: integers
and flags as usual, ``N|none`` for optional integers, ``2,3`` for the hop range, and
JSON for the share tables. Every malformed value raises
:class:`~erlgym.redsearch.synthesis.SynthesisError` naming the option or the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from erlgym.redsearch.synthesis import SynthesisError, SynthesisSpec

SPEC_OPTION_KINDS = {
    "int": "int",
    "int | None": "optional_int",
    "bool": "bool",
    "str | None": "text",
    "tuple[int, int]": "int_pair",
    "dict[str, float]": "number_map",
    "dict[str, dict[str, float]]": "number_map_map",
    "list[dict[str, float]]": "number_map_list",
}
"""Command-line form of each SynthesisSpec field type (the annotation as a string)."""
JSON_EXAMPLES = {
    "shapes": '{"bridge": 2, "count": 1}',
    "targets": '{"hops": {"2": 0.5, "3": 0.5}}',
    "joint": '[{"hops": 2, "documents": 2, "share": 1.0}]',
}
"""An example value per JSON option, quoted in its error messages."""


def add_spec_options(group: argparse._ArgumentGroup) -> None:
    """Add one option per SynthesisSpec field, with the field's help text and default."""
    for spec_field in dataclasses.fields(SynthesisSpec):
        kind = _spec_option_kind(spec_field)
        flag = "--" + spec_field.name.replace("_", "-")
        help_text = spec_field.metadata.get("help", "")
        if spec_field.name == "shapes":
            help_text += " JSON weights, or a comma-separated list of shapes of weight 1."
        if kind == "int_pair":
            help_text += ' Give "2,3", "2 3", or one value for both.'
        # argparse formats help with %, so a literal % must be doubled.
        help_text = f"{help_text} (default: {_format_default(spec_field)})".replace("%", "%%")
        if kind == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif kind == "int":
            group.add_argument(flag, type=int, default=None, metavar="N", help=help_text)
        elif kind == "optional_int":
            group.add_argument(flag, default=None, metavar="N|none", help=help_text)
        elif kind == "int_pair":
            group.add_argument(flag, nargs="+", default=None, metavar="N", help=help_text)
        elif kind == "text":
            group.add_argument(flag, default=None, metavar="FILE", help=help_text)
        else:
            group.add_argument(flag, default=None, metavar="JSON", help=help_text)


def _spec_option_kind(spec_field: dataclasses.Field) -> str:
    kind = SPEC_OPTION_KINDS.get(str(spec_field.type))
    if kind is None:
        raise TypeError(f"SynthesisSpec.{spec_field.name} has type {spec_field.type}, which has no command-line "
                        "form: add it to SPEC_OPTION_KINDS in erlgym.redsearch.spec_options.")
    if kind.startswith("number_map") and spec_field.name not in JSON_EXAMPLES:
        raise TypeError(f"SynthesisSpec.{spec_field.name} is given as JSON but has no example value: add one to "
                        "JSON_EXAMPLES in erlgym.redsearch.spec_options.")
    return kind


def _spec_default(spec_field: dataclasses.Field) -> Any:
    if spec_field.default is not dataclasses.MISSING:
        return spec_field.default
    return spec_field.default_factory()


def _format_default(spec_field: dataclasses.Field) -> str:
    default = _spec_default(spec_field)
    if isinstance(default, tuple):
        return ",".join(str(value) for value in default)
    if isinstance(default, (dict, list)):
        return json.dumps(default)
    return "none" if default is None else str(default)


def resolve_spec(args: argparse.Namespace) -> SynthesisSpec:
    """Return the SynthesisSpec of ``--spec`` with the options given on the command line put over it, validated.

    Raises:
        SynthesisError: the spec file or an option value is malformed, or the settings are invalid
            (for example a count below 1 or an unknown measure).
    """
    values = read_spec_file(args.spec) if args.spec is not None else {}
    for spec_field in dataclasses.fields(SynthesisSpec):
        text = getattr(args, spec_field.name, None)
        if text is not None:
            values[spec_field.name] = parse_spec_option(spec_field, text)
    spec = SynthesisSpec(**values)
    # The checks synthesize runs first, here before the graph is built, which can take minutes.
    spec.validate()
    if spec.templates is not None:
        _check_templates(spec.templates)
    return spec


def read_spec_file(path: Path) -> dict[str, Any]:
    """Return the SynthesisSpec fields in a JSON file, each checked for its type."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SynthesisError(f"Spec file {path} not found. Pass a JSON file of SynthesisSpec fields.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SynthesisError(f"Cannot read spec file {path}: {error}. Pass a readable UTF-8 JSON file.") from error
    except json.JSONDecodeError as error:
        raise SynthesisError(f"Spec file {path} is not valid JSON: {error.msg} at line {error.lineno}, "
                               f"column {error.colno}.") from error
    if not isinstance(values, dict):
        raise SynthesisError(f"Spec file {path} must contain a JSON object of SynthesisSpec fields, "
                               f'such as {{"count": 100}}.')
    known = {spec_field.name: spec_field for spec_field in dataclasses.fields(SynthesisSpec)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise SynthesisError(f"Spec file {path} has unknown field(s) {', '.join(unknown)}. "
                               f"SynthesisSpec fields: {', '.join(known)}.")
    return {name: _checked_spec_value(known[name], value, f"Field {name} of spec file {path}")
            for name, value in values.items()}


def _checked_spec_value(spec_field: dataclasses.Field, value: Any, where: str) -> Any:
    """Return a JSON value of a SynthesisSpec field as the field's type, or raise SynthesisError."""
    kind = _spec_option_kind(spec_field)
    is_int = isinstance(value, int) and not isinstance(value, bool)

    if kind == "int" and is_int:
        return value
    if kind == "optional_int" and (is_int or value is None):
        return value
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "text" and (isinstance(value, str) or value is None):
        return value
    if kind == "int_pair" and isinstance(value, list) and len(value) == 2 and all(
            isinstance(item, int) and not isinstance(item, bool) for item in value):
        return tuple(value)
    if kind == "number_map" and _is_number_map(value):
        return value
    if kind == "number_map_map" and isinstance(value, dict) and all(map(_is_number_map, value.values())):
        return value
    if kind == "number_map_list" and isinstance(value, list) and all(map(_is_number_map, value)):
        return value

    example = JSON_EXAMPLES.get(spec_field.name, "")
    expected = {
        "int": "an integer",
        "optional_int": "an integer or null",
        "bool": "true or false",
        "text": "a string or null",
        "int_pair": "a list of two integers, such as [2, 3]",
        "number_map": f"a JSON object of numbers, such as {example}",
        "number_map_map": f"a JSON object whose values are objects of numbers, such as {example}",
        "number_map_list": f"a JSON list of objects of numbers, such as {example}",
    }[kind]
    raise SynthesisError(f"{where} must be {expected}, got {json.dumps(value)}.")


def _is_number_map(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(item, (int, float)) and not isinstance(item, bool) for item in value.values())


def parse_spec_option(spec_field: dataclasses.Field, raw: Any) -> Any:
    """Convert the command-line value of a SynthesisSpec option to the field's type, or raise SynthesisError."""
    kind = _spec_option_kind(spec_field)
    flag = "--" + spec_field.name.replace("_", "-")
    if kind in ("int", "bool", "text"):
        return raw
    if kind == "optional_int":
        if raw.strip().lower() == "none":
            return None
        try:
            return int(raw)
        except ValueError:
            raise SynthesisError(f"{flag} must be an integer or none, got {raw!r}.") from None
    if kind == "int_pair":
        return _parse_int_pair(flag, raw)
    if spec_field.name == "shapes" and not raw.lstrip().startswith("{"):
        names = [name.strip() for name in raw.split(",") if name.strip()]
        if not names:
            raise SynthesisError(f"{flag} is empty. Pass shape names such as bridge,count or JSON weights "
                                   f"such as '{JSON_EXAMPLES['shapes']}'.")
        return {name: 1.0 for name in names}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        raise SynthesisError(
            f"{flag} is not valid JSON ({error.msg} at character {error.pos}): {raw!r}. Pass JSON such as "
            f"'{JSON_EXAMPLES[spec_field.name]}', quoted for the shell.") from error
    return _checked_spec_value(spec_field, value, flag)


def _parse_int_pair(flag: str, raw: list[str]) -> tuple[int, int]:
    parts = [part for text in raw for part in text.replace(",", " ").split()]
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2):
        raise SynthesisError(f"{flag} takes one or two integers, such as 2,3 or 2 3, got {' '.join(raw)!r}.")
    return (numbers[0], numbers[-1])


def _check_templates(path: str) -> None:
    from erlgym.redsearch.templates import QuestionTemplates, TemplateError

    try:
        QuestionTemplates.load(path)
    except TemplateError as error:
        raise SynthesisError(f"--templates: {error}") from error
