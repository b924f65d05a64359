"""Parser for text tool calls such as ``Action: search[Blue Harbor film]``.

Text protocol
-------------
A tool call is one line of the reply, in one of these forms (tool names are matched
case-insensitively):

* ``Action: <tool>[<argument>]``, the form the system prompt and worked examples
  show. Markdown around the keyword is ignored, as in :mod:`erlgym.envs.parser`, so
  ``**Action:** search[x]`` parses.
* ``Action: <tool>: <argument>``, ``Action: <tool>(<argument>)`` and
  ``Action: <tool> <argument>``.
* A line that starts with a tool name followed by ``[``, ``(`` or ``:``, without the
  ``Action:`` keyword: ``search[x]``, ``Answer: Paris``.
* With ``answer_tool`` set, a line that states an answer in prose: ``The answer is:
  Paris.``, ``The final answer is Paris``, ``Final answer: Paris``. It calls that tool
  with the rest of the line.

The argument ends at the last closing bracket of its kind on the line, or at the end
of the line when there is none. Surrounding whitespace, markdown and one pair of
quotes are removed, so ``search("x")`` and ``search[x]`` give the same argument.

When a reply contains several tool-call lines, the last one is used, because a model
often reasons or restates its plan before the call it means. A line contains at most
one call: the first ``Action:`` keyword on the line starts it. Only the first
:data:`~erlgym.envs.parser.MAX_REPLY_CHARS` characters of a reply are read.

The parser never raises on a ``str``. A reply with no tool call, an unknown tool or
an empty argument gives a :class:`ToolCallResult` with an error clause written to be
shown to the agent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from erlgym.envs.parser import MAX_ECHO_CHARS, MAX_REPLY_CHARS

_FLAGS = re.IGNORECASE | re.ASCII
_MARKDOWN = " \t*_`~"
_QUOTE_PAIRS = (('"', '"'), ("'", "'"), ("`", "`"))
_CLOSING_BRACKETS = {"[": "]", "(": ")"}

# `Action:` not preceded by a letter or digit, with markdown around the keyword and the
# colon, as in erlgym.envs.parser. Group "call" is the rest of the line.
_ACTION_KEYWORD = re.compile(r"(?<![a-z0-9])action[ \t*_`~]*[:=][ \t*_`~]*(?P<call>.*)", _FLAGS)
# "The answer is: X", "The final answer is X", "Final answer: X", after markdown.
_STATED_ANSWER = re.compile(
    r"^[ \t>*_`~-]*(?:the[ \t]+)?(?:final[ \t]+)?answer"
    r"(?:[ \t]+is(?:[ \t*_`~]*[:=])?|[ \t*_`~]*[:=])[ \t*_`~]*[ \t*_`~](?P<answer>[^ \t].*)$", _FLAGS)
_TOOL_WORD = re.compile(r"(?P<tool>[a-z_][a-z0-9_]*)(?P<rest>.*)", _FLAGS | re.DOTALL)


@dataclass(frozen=True)
class ToolCall:
    """A parsed tool call: the lower-case tool name and its argument, stripped and non-empty."""

    tool: str
    argument: str


@dataclass(frozen=True)
class ToolCallResult:
    """Outcome of parsing one reply: exactly one of ``call`` and ``error`` is set.

    ``error`` is a short lower-case clause, for example ``"no tool call found in your
    reply"`` or ``"'lookup' is not a tool: use search, open or answer"``.
    """

    call: ToolCall | None
    error: str | None


class ToolCallParser:
    """Parser for one set of tools.

    Args:
        tools: Tool names in the order the error messages list them, ASCII letters.
        argument_names: Tool name to a noun for its argument, used in the error for an
            empty argument (``"search needs a query"``). Tools not listed use
            ``"an argument"``.
        answer_tool: The tool a stated answer ("The answer is: X") calls, if any.
        no_argument_tools: Tools whose argument may be empty (``Action: vocabulary``);
            every other tool rejects an empty argument.

    Raises:
        ValueError: If ``tools`` is empty or a name is not made of ASCII letters.
    """

    def __init__(self, tools: Sequence[str], argument_names: dict[str, str] | None = None,
                 answer_tool: str | None = None, no_argument_tools: Sequence[str] = ()) -> None:
        if not tools:
            raise ValueError("tools must name at least one tool, got an empty sequence")
        for tool in tools:
            if not re.fullmatch(r"[a-z]+", tool, _FLAGS):
                raise ValueError(f"tool name {tool!r} is invalid: use ASCII letters only")
        self.tools: tuple[str, ...] = tuple(tool.lower() for tool in tools)
        self.argument_names = dict(argument_names or {})
        if len(self.tools) > 1:
            self._tool_list = ", ".join(self.tools[:-1]) + " or " + self.tools[-1]
        else:
            self._tool_list = self.tools[0]
        alternatives = "|".join(self.tools)
        # A line that starts, after markdown or a list marker, with a tool name and a bracket or colon.
        self._bare_call = re.compile(rf"^[ \t>*_`~-]*(?P<call>(?:{alternatives})[ \t]*[\[(:].*)$", _FLAGS)
        if answer_tool is not None and answer_tool.lower() not in self.tools:
            raise ValueError(f"answer_tool {answer_tool!r} is not one of the tools {', '.join(self.tools)}")
        self.answer_tool = answer_tool.lower() if answer_tool else None
        unknown = [tool for tool in no_argument_tools if tool.lower() not in self.tools]
        if unknown:
            raise ValueError(f"no_argument_tools {unknown} are not among the tools {', '.join(self.tools)}")
        self.no_argument_tools = frozenset(tool.lower() for tool in no_argument_tools)

    def parse(self, text: str) -> ToolCallResult:
        """Parse the last tool-call line of a reply into a :class:`ToolCall` or an error."""
        call_text = None
        for line in text[:MAX_REPLY_CHARS].splitlines():
            found = self._find_call_text(line)
            if found is not None:
                call_text = found
        if call_text is None:
            return ToolCallResult(None, "no tool call found in your reply")
        return self._parse_call_text(call_text)

    def _find_call_text(self, line: str) -> str | None:
        keyword = _ACTION_KEYWORD.search(line)
        if keyword is not None:
            return keyword.group("call")
        bare = self._bare_call.match(line)
        if bare is not None:
            return bare.group("call")
        if self.answer_tool is not None:
            stated = _STATED_ANSWER.match(line)
            if stated is not None and stated.group("answer").strip(_MARKDOWN + "."):
                return f"{self.answer_tool}: {stated.group('answer').strip(_MARKDOWN).rstrip('.')}"
        return None

    def _parse_call_text(self, call_text: str) -> ToolCallResult:
        match = _TOOL_WORD.match(call_text.strip(_MARKDOWN))
        if match is None:
            return ToolCallResult(None, f"no tool name after 'Action:': use {self._tool_list}")
        tool = match.group("tool").lower()
        if tool not in self.tools:
            return ToolCallResult(None, f"{echo(match.group('tool'))!r} is not a tool: use {self._tool_list}")
        argument = extract_argument(match.group("rest"))
        if not argument and tool not in self.no_argument_tools:
            noun = self.argument_names.get(tool, "an argument")
            return ToolCallResult(None, f"{tool} needs {noun}, as in {tool}[...]")
        return ToolCallResult(ToolCall(tool, argument), None)


def extract_argument(rest: str) -> str:
    """Return the argument written after a tool name, without brackets, markdown or quotes."""
    rest = rest.strip(_MARKDOWN)
    opening = rest[:1]
    if opening in _CLOSING_BRACKETS:
        closing = rest.rfind(_CLOSING_BRACKETS[opening])
        argument = rest[1:closing] if closing > 0 else rest[1:]
    elif opening in (":", "="):
        argument = rest[1:]
    else:
        argument = rest
    argument = argument.strip(_MARKDOWN)
    for left, right in _QUOTE_PAIRS:
        if len(argument) >= 2 and argument.startswith(left) and argument.endswith(right):
            argument = argument[1:-1].strip()
            break
    return argument.strip()


def echo(fragment: str, max_chars: int = MAX_ECHO_CHARS) -> str:
    """Shorten a reply fragment and keep only printable ASCII, for quoting in feedback."""
    printable = "".join(ch for ch in fragment[:max_chars] if " " <= ch <= "~")
    return printable if len(fragment) <= max_chars else printable + "..."
