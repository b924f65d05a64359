"""Action parser for the text environments.

Text protocol
-------------
A reply names its action in one of three forms, matched case-insensitively:

* ``Action: <name>``, anywhere in the reply, usually on its own line after one line of
  reasoning. Markdown around the keyword or the name is ignored, so ``**Action:** Right``
  and ``Action: `right``` both parse. The first word on the rest of that line that names
  an action is the action, so ``Action: move right`` parses as ``right``. The name
  may also start on the line after ``Action:``.
* ``<action>name</action>``.
* A reply that is only the action word, with optional markdown and trailing punctuation
  (``right``, ``Right.``, ``**RIGHT**``).

Each action has a canonical name and optional aliases (FrozenLake and Sokoban accept
``u``, ``d``, ``l`` and ``r`` for the four directions). A reply that names two different
actions in the ``Action:`` or tag form is ambiguous and invalid. Naming the same action
twice is valid. ``Action:`` lines whose words name no action are ignored when another
line names one. Only the first :data:`MAX_REPLY_CHARS` characters of a reply are read,
so a runaway reply costs bounded time.

The parser never raises on a ``str``: every failure is a :class:`ParseResult` with an
error message written to be shown to the agent.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MAX_REPLY_CHARS = 4096
"""Number of leading reply characters the parser reads; the rest is ignored."""

MAX_BARE_REPLY_CHARS = 40
"""Maximum length of a stripped reply that is still checked as a bare action word."""

MAX_ECHO_CHARS = 20
"""Maximum length of a reply fragment quoted in an error message."""

# re.ASCII keeps IGNORECASE from folding non-ASCII letters onto ASCII ones
# (the Kelvin sign onto "k", the long s onto "s"), so only ASCII names match.
_FLAGS = re.IGNORECASE | re.ASCII

# `Action:` (or `Action=`) not preceded by a letter or digit, with markdown around the
# keyword and colon. Whitespace after the colon may include line breaks, so the name may
# start on the next line. Group "line" is the text from the name to the next line break.
_ACTION_LINE = re.compile(
    r"(?<![a-z0-9])action[\s*_`~]*[:=][\s*_`~]*(?P<line>[^\n]*)",
    _FLAGS,
)
_ACTION_TAG = re.compile(r"<action>(?P<tag>[^<]*)</action>", _FLAGS)
_WORD = re.compile(r"[a-z]+", _FLAGS)
_BARE_STRIP = " \t\r\n*_`~\"'.,!;:()[]<>"


@dataclass(frozen=True)
class ParseResult:
    """Outcome of parsing one reply.

    Exactly one of the two fields is set: ``action`` is the canonical action name on
    success, ``error`` a short lower-case clause saying why the reply is invalid
    (for example ``"no action found in your reply"``).
    """

    action: str | None
    error: str | None

    @property
    def is_valid(self) -> bool:
        """Whether the reply named exactly one action."""
        return self.action is not None


class ActionParser:
    """Parser for one action set, with the alias table built once.

    Args:
        actions: Canonical action name to its aliases, in the order the names are
            shown in the format hint. Each canonical name is itself accepted. Names
            and aliases are ASCII letters, matched case-insensitively.

    Raises:
        ValueError: If the mapping is empty, a name or alias is not made of ASCII
            letters, or an alias is claimed by two actions.
    """

    def __init__(self, actions: Mapping[str, Iterable[str]]) -> None:
        if not actions:
            raise ValueError("actions must name at least one action, got an empty mapping")
        self.action_names: tuple[str, ...] = tuple(actions)
        self._alias_to_action: dict[str, str] = {}
        for name, aliases in actions.items():
            for alias in (name, *aliases):
                self._add_alias(alias, name)
        self.format_hint = "Action: <" + "|".join(self.action_names) + ">"
        """Reply format shown to the agent, for example ``Action: <up|down|left|right>``."""

    def _add_alias(self, alias: str, name: str) -> None:
        if not _WORD.fullmatch(alias):
            raise ValueError(
                f"action name or alias {alias!r} is invalid: use ASCII letters only"
            )
        key = alias.lower()
        owner = self._alias_to_action.get(key)
        if owner is not None and owner != name:
            raise ValueError(
                f"alias {alias!r} is claimed by both {owner!r} and {name!r}: "
                "give each alias to one action"
            )
        self._alias_to_action[key] = name

    def parse(self, text: str) -> ParseResult:
        """Parse a reply into a canonical action name or an error message."""
        text = text[:MAX_REPLY_CHARS]
        found, unknown_word = self._find_formatted_actions(text)

        if len(found) > 1:
            names = " and ".join(sorted(found, key=self.action_names.index))
            return ParseResult(None, f"your reply names different actions ({names})")
        if found:
            return ParseResult(found.pop(), None)

        bare_action = self._match_bare_word(text)
        if bare_action is not None:
            return ParseResult(bare_action, None)
        if unknown_word is not None:
            return ParseResult(None, self._describe_unknown(unknown_word))
        return ParseResult(None, "no action found in your reply")

    def _describe_unknown(self, word: str) -> str:
        names = ", ".join(self.action_names)
        echo = _echo(word)
        if not echo:
            return f"the action you gave is not one of {names}"
        return f"{echo!r} is not one of {names}"

    def _find_formatted_actions(self, text: str) -> tuple[set[str], str | None]:
        """Collect the actions named in ``Action:`` lines and tags.

        Returns the set of canonical names found and, for the error message, the
        first word of the first value that named no action.
        """
        found: set[str] = set()
        unknown_word: str | None = None
        values = [m.group("line") for m in _ACTION_LINE.finditer(text)]
        values += [m.group("tag") for m in _ACTION_TAG.finditer(text)]
        for value in values:
            action, first_word = self._first_action_word(value)
            if action is not None:
                found.add(action)
            elif unknown_word is None:
                unknown_word = first_word if first_word is not None else value.strip()
        return found, unknown_word

    def _first_action_word(self, value: str) -> tuple[str | None, str | None]:
        first_word = None
        for match in _WORD.finditer(value):
            word = match.group().lower()
            if first_word is None:
                first_word = word
            action = self._alias_to_action.get(word)
            if action is not None:
                return action, first_word
        return None, first_word

    def _match_bare_word(self, text: str) -> str | None:
        if len(text) > 4 * MAX_BARE_REPLY_CHARS:
            return None
        word = text.strip(_BARE_STRIP)
        if len(word) > MAX_BARE_REPLY_CHARS:
            return None
        return self._alias_to_action.get(word.lower())


def _echo(fragment: str) -> str:
    """Shorten a reply fragment and keep only printable ASCII, for quoting in feedback."""
    printable = "".join(ch for ch in fragment[:MAX_ECHO_CHARS] if " " <= ch <= "~")
    return printable if len(fragment) <= MAX_ECHO_CHARS else printable + "..."


@functools.lru_cache(maxsize=64)
def _cached_parser(action_items: tuple[tuple[str, tuple[str, ...]], ...]) -> ActionParser:
    return ActionParser(dict(action_items))


def parse_action(text: str, actions: Mapping[str, Iterable[str]]) -> ParseResult:
    """Parse a reply against an action set, reusing a cached :class:`ActionParser`.

    Args:
        text: The agent's reply.
        actions: Canonical action name to its aliases, as for :class:`ActionParser`.

    Returns:
        The canonical action, or an error message when the reply names no action,
        an unknown action, or two different actions.
    """
    key = tuple((name, tuple(aliases)) for name, aliases in actions.items())
    return _cached_parser(key).parse(text)
