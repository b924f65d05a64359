"""Tests of the action parser's text protocol."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erlgym.envs.parser import MAX_REPLY_CHARS, ActionParser, ParseResult, parse_action

DIRECTIONS = {"up": ("u",), "down": ("d",), "left": ("l",), "right": ("r",)}
NAMES = tuple(DIRECTIONS)


def parse(text: str) -> ParseResult:
    return parse_action(text, DIRECTIONS)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Action: Right", "right"),
        ("action: right", "right"),
        ("ACTION: LEFT", "left"),
        ("**Action:** Right", "right"),
        ("**Action**: down", "down"),
        ("Action: **Up**", "up"),
        ("Action: `left`", "left"),
        ("`Action: right`", "right"),
        ("Action:right", "right"),
        ("Action = down", "down"),
        ("Action:\nRight", "right"),
        ("The goal is below me.\nAction: Down", "down"),
        ("G is right. Action: right", "right"),
        ("Action: move right", "right"),
        ("Action: Right.", "right"),
        ("<action>left</action>", "left"),
        ("<ACTION> Up </ACTION>", "up"),
        ("I think so.\n<action>down</action>", "down"),
        ("right", "right"),
        ("Right.", "right"),
        ("  **RIGHT**  \n", "right"),
        ("'up'", "up"),
        ("Action: r", "right"),
        ("Action: U", "up"),
        ("d", "down"),
        ("Action: up\nAction: up", "up"),
        ("Action: up\n<action>UP</action>", "up"),
        ("Action: jump\nAction: left", "left"),
    ],
)
def test_parse_accepted_forms(reply, expected):
    result = parse(reply)
    assert result.action == expected
    assert result.error is None
    assert result.is_valid


@pytest.mark.parametrize(
    ("reply", "error_part"),
    [
        ("", "no action found"),
        ("I will go right now", "no action found"),
        ("reaction: up", "no action found"),
        ("Action: up\nAction: left", "different actions (up and left)"),
        ("Action: right\n<action>down</action>", "different actions (down and right)"),
        ("Action: jump", "'jump' is not one of up, down, left, right"),
        ("<action>fly</action>", "'fly' is not one of"),
        ("Action: ???", "'???' is not one of"),
        ("Action: \uff52\uff49\uff47\uff48\uff54", "the action you gave is not one of"),
        ("rightwards", "no action found"),
    ],
)
def test_parse_rejected_forms(reply, error_part):
    result = parse(reply)
    assert result.action is None
    assert error_part in result.error


def test_parse_truncates_unknown_word_in_error():
    result = parse("Action: " + "z" * 500)
    assert result.action is None
    assert "'zzzzzzzzzzzzzzzzzzzz...'" in result.error
    assert len(result.error) < 100


def test_parse_reads_only_reply_prefix():
    assert parse("Action: up" + " " * 2_000_000).action == "up"
    assert parse(" " * MAX_REPLY_CHARS + "Action: up").action is None


def test_parse_kelvin_sign_is_not_ascii_k():
    parser = ActionParser({"kick": ()})
    assert parser.parse("Action: kick").action == "kick"
    assert parser.parse("Action: \u212aick").action is None


casings = st.lists(st.booleans(), min_size=12, max_size=12)


def apply_casing(word: str, upper_flags: list[bool]) -> str:
    return "".join(ch.upper() if up else ch.lower() for ch, up in zip(word, upper_flags))


@given(name=st.sampled_from(NAMES), keyword_case=casings, name_case=casings)
def test_parse_is_case_insensitive(name, keyword_case, name_case):
    reply = f"{apply_casing('action', keyword_case)}: {apply_casing(name, name_case)}"
    assert parse(reply).action == name


reasoning_lines = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"),
    max_size=200,
).filter(lambda text: re.search("action", text, re.IGNORECASE | re.ASCII) is None)


@given(reasoning=reasoning_lines, name=st.sampled_from(NAMES))
def test_parse_reasoning_then_action(reasoning, name):
    result = parse(f"{reasoning}\nAction: {name.capitalize()}")
    assert result.action == name
    assert result.error is None


@given(first=st.sampled_from(NAMES), second=st.sampled_from(NAMES), middle=reasoning_lines)
def test_parse_two_actions(first, second, middle):
    result = parse(f"Action: {first}\n{middle}\nAction: {second}")
    if first == second:
        assert result.action == first
    else:
        assert result.action is None
        assert "different actions" in result.error


@settings(max_examples=300)
@given(text=st.text())
def test_parse_never_raises_on_unicode(text):
    result = parse(text)
    assert (result.action is None) != (result.error is None)
    if result.action is not None:
        assert result.action in NAMES
    else:
        assert result.error.isascii()
        assert result.error.isprintable()


@settings(max_examples=50)
@given(chunk=st.text(min_size=1, max_size=50), repeats=st.integers(200, 5_000))
def test_parse_never_raises_on_long_text(chunk, repeats):
    result = parse(chunk * repeats)
    assert (result.action is None) != (result.error is None)


def test_parser_rejects_empty_action_set():
    with pytest.raises(ValueError, match="at least one action"):
        ActionParser({})


def test_parser_rejects_shared_alias():
    with pytest.raises(ValueError, match="'x' is claimed by both 'up' and 'down'"):
        ActionParser({"up": ("x",), "down": ("x",)})


def test_parser_rejects_non_letter_alias():
    with pytest.raises(ValueError, match="'go-up' is invalid"):
        ActionParser({"up": ("go-up",)})


def test_parser_format_hint_lists_actions():
    assert ActionParser(DIRECTIONS).format_hint == "Action: <up|down|left|right>"
