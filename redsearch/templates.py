"""Question wording for synthesized tasks: relation phrases and attribute comparatives, as data.

Templates live in JSON: the package ships ``data/question_templates.json``, and a user
file in the same format overrides it field by field. The format::

    {
      "relations": {
        "born_in": {
          "head_phrase": "the {head_type} born in {tail}",
          "tail_phrase": "the {tail_type} where {head} was born",
          "head_clause": "was born in {tail}",
          "tail_clause": "is where {head} was born",
          "count_heads": "How many {head_types} were born in {tail}?",
          "count_tails": "How many {tail_types} was {head} born in?"
        }
      },
      "attributes": {
        "birth_year": {"phrase": "born in {value}", "min": "was born earlier", "max": "was born later"}
      }
    }

For a fact ``head --relation--> tail``:

- ``head_phrase`` names the head given the tail, ``tail_phrase`` the tail given the head
  (noun phrases, used for the obscured entities of a chain);
- ``head_clause`` and ``tail_clause`` state the same as a predicate, for intersection
  questions ("Which person was born in A and works for B?");
- ``count_heads`` and ``count_tails`` are whole questions that count the heads of a
  given tail, or the tails of a given head.

Placeholders: ``{head}`` or ``{tail}`` (the other entity's name or phrase),
``{head_type}``, ``{tail_type}`` and their plurals ``{head_types}``, ``{tail_types}``.
An attribute's ``phrase`` takes ``{value}`` (format specs such as ``{value:,}`` work for
numbers) or ``{a_value}``, the value after "a" or "an" ("a university"), and
``min``/``max`` are comparatives for comparison questions.

A relation is looked up by id, then by its readable name. Fields that no file gives are
derived from the relation name by :func:`default_relation_template`.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACKAGED_TEMPLATES = Path(__file__).parent / "data" / "question_templates.json"

TYPE_FIELDS = {"head_type", "tail_type", "head_types", "tail_types"}
RELATION_FIELDS = {
    "head_phrase": {"tail"} | TYPE_FIELDS,
    "tail_phrase": {"head"} | TYPE_FIELDS,
    "head_clause": {"tail"} | TYPE_FIELDS,
    "tail_clause": {"head"} | TYPE_FIELDS,
    "count_heads": {"tail"} | TYPE_FIELDS,
    "count_tails": {"head"} | TYPE_FIELDS,
}
"""Each relation template field and the placeholders it may use."""
ATTRIBUTE_FIELDS = {"phrase": {"value", "a_value"}, "min": set(), "max": set()}

# Words that end a relation name such as "born in" or "works for".
PREPOSITIONS = frozenset({"about", "as", "at", "by", "for", "from", "in", "into", "of", "on", "to", "with"})
# Past participles that make "<participle> <preposition>" a passive relation ("born in" →
# "was born in"). Any participle followed by "by" is passive too.
PARTICIPLES = frozenset({"based", "born", "buried", "educated", "employed", "headquartered", "held",
                         "known", "located", "made", "married", "named", "published", "released",
                         "situated", "written"})


class TemplateError(ValueError):
    """An invalid template file or entry; the message names the file, the entry and the field."""


# Named-entity tags used as entity types by Re-DocRED and DocRED graphs, and the noun
# that questions use for each.
NER_TYPE_WORDS = {"PER": "person", "ORG": "organisation", "LOC": "place", "TIME": "date", "NUM": "number",
                  "MISC": "thing"}
# Irregular plurals of nouns that entity types use.
IRREGULAR_PLURALS = {"person": "people", "child": "children", "man": "men", "woman": "women"}
# Word beginnings that take "a" although they start with a vowel letter, and "an"
# although they start with a consonant letter.
A_BEFORE_VOWEL = ("uni", "use", "usu", "uti", "eu", "one", "once")
AN_BEFORE_CONSONANT = ("hour", "honest", "honour", "heir")


def type_words(entity_type: str) -> str:
    """Return an entity type as words: ``film_studio`` → ``film studio``, the tag ``LOC`` → ``place``."""
    if entity_type in NER_TYPE_WORDS:
        return NER_TYPE_WORDS[entity_type]
    return entity_type.replace("_", " ").replace("-", " ").strip() or "entity"


def indefinite(noun: str) -> str:
    """Return ``noun`` after "a" or "an", chosen by its spelling: ``university`` → ``a university``."""
    lower = noun.lower()
    if lower.startswith(AN_BEFORE_CONSONANT):
        article = "an"
    elif lower.startswith(A_BEFORE_VOWEL):
        article = "a"
    else:
        article = "an" if lower[:1] in ("a", "e", "i", "o", "u") else "a"
    return f"{article} {noun}"


def plural(noun: str) -> str:
    """Return the English plural of the last word of ``noun``: regular forms and :data:`IRREGULAR_PLURALS`."""
    before, _, last = noun.rpartition(" ")
    if last in IRREGULAR_PLURALS:
        return (before + " " if before else "") + IRREGULAR_PLURALS[last]
    if noun.endswith("y") and noun[-2:-1] not in ("a", "e", "i", "o", "u", ""):
        return noun[:-1] + "ies"
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    return noun + "s"


def default_relation_template(name: str) -> dict[str, str]:
    """Derive every field of a relation template from the relation's readable name.

    The name's words decide the form (``w`` stands for the words):

    - passive, "<participle> <preposition>" or "... by" ("born in", "founded by"): the head
      "was w" the tail;
    - "... of" ("capital of", "member of"): the head "is the w" the tail;
    - a verb, a first word ending in "s" or a last word that is a preposition ("works
      for", "borders", "took part in"): the head "w" the tail;
    - otherwise a noun ("spouse", "place of birth"): the tail is "the w of" the head.

    Count questions that these forms cannot word name the relation in quotes.
    """
    words = name.replace("_", " ").replace("-", " ").lower().split() or ["related", "to"]
    w = " ".join(words)
    first, last = words[0], words[-1]
    quoted_tails = f'How many {{tail_types}} are linked to {{head}} by "{w}"?'
    quoted_heads = f'How many {{head_types}} are linked to {{tail}} by "{w}"?'
    if len(words) >= 2 and last in PREPOSITIONS and (last == "by" or first in PARTICIPLES):
        return {
            "head_phrase": f"the {{head_type}} {w} {{tail}}",
            "tail_phrase": f"the {{tail_type}} that {{head}} was {w}",
            "head_clause": f"was {w} {{tail}}",
            "tail_clause": f"is the one that {{head}} was {w}",
            "count_heads": f"How many {{head_types}} were {w} {{tail}}?",
            "count_tails": quoted_tails,
        }
    if len(words) >= 2 and last == "of":
        return {
            "head_phrase": f"the {w} {{tail}}",
            "tail_phrase": f"the {{tail_type}} that {{head}} is the {w}",
            "head_clause": f"is the {w} {{tail}}",
            "tail_clause": f"is the one that {{head}} is the {w}",
            "count_heads": f"How many {{head_types}} are the {w} {{tail}}?",
            "count_tails": f"How many {{tail_types}} is {{head}} the {w}?",
        }
    present_tense = first.endswith("s") and not first.endswith("ss")
    if present_tense or (len(words) >= 2 and last in PREPOSITIONS):
        template = {
            "head_phrase": f"the {{head_type}} that {w} {{tail}}",
            "tail_phrase": f"the {{tail_type}} that {{head}} {w}",
            "head_clause": f"{w} {{tail}}",
            "tail_clause": f"is the one that {{head}} {w}",
            "count_heads": quoted_heads,
            "count_tails": quoted_tails,
        }
        if present_tense:
            # "works for" → "How many people work for X?", "How many ... does X work for?"
            base = " ".join([first[:-1], *words[1:]])
            template["count_heads"] = f"How many {{head_types}} {base} {{tail}}?"
            template["count_tails"] = f"How many {{tail_types}} does {{head}} {base}?"
        return template
    # The head noun takes the plural: "spouse" → "spouses", "place of birth" → "places of birth".
    head_noun = words.index("of") - 1 if "of" in words[1:] else len(words) - 1
    nouns = " ".join(plural(word) if i == head_noun else word for i, word in enumerate(words))
    return {
        "head_phrase": f"the {{head_type}} whose {w} is {{tail}}",
        "tail_phrase": f"the {w} of {{head}}",
        "head_clause": f"has {{tail}} as {w}",
        "tail_clause": f"is the {w} of {{head}}",
        "count_heads": f"How many {{head_types}} have {{tail}} as {w}?",
        "count_tails": f"How many {nouns} does {{head}} have?",
    }


def default_attribute_template(attribute: str) -> dict[str, str]:
    """Derive an attribute's phrase and comparatives from its name: ``birth_year`` → "whose birth year is {value}"."""
    w = attribute.replace("_", " ").replace("-", " ").lower().strip()
    return {"phrase": f"whose {w} is {{value}}", "min": f"has the smaller {w}", "max": f"has the larger {w}"}


def _placeholders(template: str) -> set[str]:
    return {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(template) if name}


def _check_entries(entries: Any, allowed_fields: dict[str, set[str]], section: str,
                   source: str) -> dict[str, dict[str, str]]:
    if not isinstance(entries, dict):
        raise TemplateError(f"{source}: \"{section}\" must be an object that maps names to templates.")
    checked = {}
    for key, fields in entries.items():
        if not isinstance(fields, dict):
            raise TemplateError(f"{source}: {section}.{key} must be an object of template strings.")
        for field_name, template in fields.items():
            where = f"{source}: {section}.{key}.{field_name}"
            if field_name not in allowed_fields:
                raise TemplateError(f"{where} is not a template field; use one of {', '.join(sorted(allowed_fields))}.")
            if not isinstance(template, str) or not template.strip():
                raise TemplateError(f"{where} must be a non-empty string.")
            try:
                unknown = _placeholders(template) - allowed_fields[field_name]
            except ValueError as error:
                raise TemplateError(f"{where}: invalid template {template!r}: {error}") from error
            if unknown:
                allowed = ", ".join("{" + name + "}" for name in sorted(allowed_fields[field_name]))
                allowed = allowed or "no placeholders"
                raise TemplateError(f"{where} uses unknown placeholder(s) {', '.join(sorted(unknown))}; "
                                    f"this field takes {allowed}.")
        checked[str(key)] = dict(fields)
    return checked


def _read_templates(source: str | Path | dict[str, Any]) -> tuple[dict, dict]:
    if isinstance(source, dict):
        payload, label = source, "template override"
    else:
        path = Path(source)
        label = str(path)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TemplateError(f"Template file {path} not found.") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise TemplateError(f"Cannot read template file {path}: {error}") from error
    if not isinstance(payload, dict) or not set(payload) <= {"relations", "attributes"}:
        raise TemplateError(f"{label}: a template file is an object with \"relations\" and/or \"attributes\".")
    relations = _check_entries(payload.get("relations", {}), RELATION_FIELDS, "relations", label)
    attributes = _check_entries(payload.get("attributes", {}), ATTRIBUTE_FIELDS, "attributes", label)
    return relations, attributes


def _merge(base: dict[str, dict[str, str]], override: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    merged = {key: dict(fields) for key, fields in base.items()}
    for key, fields in override.items():
        merged.setdefault(key, {}).update(fields)
    return merged


# Words that start the part of a noun phrase after its head noun ("the founder | of X",
# "the one | that X founded").
_POSTMODIFIERS = re.compile(r" (?:that|which|who|whom|whose|where|when) ")


def _note_position(template: str, template_field: str) -> int:
    """Return where a bracketed note about the entity that a phrase field describes goes in ``template``.

    The note follows the entity's type placeholder when the field has one ("the {tail_type}
    where ..."). Otherwise it goes before the last " of " ahead of the other entity's
    placeholder ("the founder | of {head}"), or before a relative word ("the one | that
    {head} ..."), so that it never sits after a nested phrase about another entity. A
    template with none of these gets the note at its end ("{head}'s spouse |").
    """
    own, other = ("head", "tail") if template_field.startswith("head") else ("tail", "head")
    own_type = "{" + own + "_type}"
    if own_type in template:
        return template.index(own_type) + len(own_type)
    other_at = template.find("{" + other + "}")
    prefix = template if other_at < 0 else template[:other_at]
    of_at = prefix.rfind(" of ")
    if of_at >= 0:
        return of_at
    relative = _POSTMODIFIERS.search(prefix)
    if relative:
        return relative.start()
    return len(template)


@dataclass
class QuestionTemplates:
    """Relation and attribute templates; see the module docstring for the fields."""

    relations: dict[str, dict[str, str]] = field(default_factory=dict)
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)
    _resolved: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict, repr=False, compare=False)
    _states_type: dict[tuple[str, str, str], bool] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, override: str | Path | dict[str, Any] | None = None) -> "QuestionTemplates":
        """Read the packaged templates and apply ``override`` (a JSON file path or the same structure as a dict).

        Raises:
            TemplateError: a file is missing or invalid, or a template uses a placeholder
                its field does not take.
        """
        relations, attributes = _read_templates(PACKAGED_TEMPLATES)
        if override is not None:
            user_relations, user_attributes = _read_templates(override)
            relations = _merge(relations, user_relations)
            attributes = _merge(attributes, user_attributes)
        return cls(relations, attributes)

    def relation(self, relation: str, name: str | None = None) -> dict[str, str]:
        """Return every field of a relation's template: given fields by id, then by ``name``, then derived defaults."""
        key = (relation, name or relation)
        resolved = self._resolved.get(key)
        if resolved is None:
            resolved = default_relation_template(name or relation)
            if name and name in self.relations:
                resolved.update(self.relations[name])
            resolved.update(self.relations.get(relation, {}))
            self._resolved[key] = resolved
        return resolved

    def attribute(self, attribute: str) -> dict[str, str]:
        resolved = default_attribute_template(attribute)
        resolved.update(self.attributes.get(attribute, {}))
        return resolved

    def states_type(self, relation: str, name: str | None, template_field: str) -> bool:
        """Return whether the field names the type of the entity it describes, making the type part of the question."""
        key = (relation, name or relation, template_field)
        stated = self._states_type.get(key)
        if stated is None:
            own = "head" if template_field in ("head_phrase", "head_clause", "count_heads") else "tail"
            placeholders = _placeholders(self.relation(relation, name)[template_field])
            stated = self._states_type[key] = bool(placeholders & {f"{own}_type", f"{own}_types"})
        return stated

    def render(self, relation: str, name: str | None, template_field: str, other: str,
               head_type: str, tail_type: str, note: str | None = None) -> str:
        """Fill one relation field. ``other`` is the name or phrase that fills its ``{head}`` or ``{tail}``.

        A ``note`` about the described entity (an attribute phrase) goes in brackets right
        after the noun that names that entity; see :func:`_note_position`.
        """
        template = self.relation(relation, name)[template_field]
        if note:
            position = _note_position(template, template_field)
            escaped = " (" + note.replace("{", "{{").replace("}", "}}") + ")"
            template = template[:position] + escaped + template[position:]
        head_words, tail_words = type_words(head_type), type_words(tail_type)
        return template.format(
            head=other, tail=other, head_type=head_words, tail_type=tail_words,
            head_types=plural(head_words), tail_types=plural(tail_words))

    def attribute_phrase(self, attribute: str, value: Any) -> str:
        template = self.attribute(attribute)["phrase"]
        try:
            return template.format(value=value, a_value=indefinite(str(value)))
        except (ValueError, TypeError):
            # A numeric format spec such as {value:,} applied to a string value.
            template = re.sub(r"\{a_value[^}]*\}", indefinite(str(value)), template)
            return re.sub(r"\{value[^}]*\}", str(value), template)

    def comparative(self, attribute: str, order: str) -> str:
        """Return the predicate that picks the ``order`` ("min" or "max") of two entities by ``attribute``."""
        return self.attribute(attribute)[order]
