"""Tests of the chat-template turn markers that multi-turn rollouts append as tokens."""

import pytest

from erlgym.erl.chat import TurnTemplate, encode_prompt
from tiny_model import build_tiny_tokenizer

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

MESSAGES = [
    {"role": "system", "content": "You are P on a grid."},
    {"role": "user", "content": "P_G\nLegend: P you"},
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def template(tokenizer):
    return TurnTemplate.from_tokenizer(tokenizer)


def test_template_chatml_after_assistant(template):
    assert template.after_assistant == f"{IM_END}\n"


def test_template_chatml_before_user(template):
    assert template.before_user == f"{IM_START}user\n"


def test_template_chatml_after_user(template):
    assert template.after_user == f"{IM_END}\n{IM_START}assistant\n"


def test_template_chatml_eos_text(template):
    assert template.eos_text == IM_END


def test_user_turn_text_without_eos(template):
    text = template.user_turn_text("You moved right.", assistant_ended_with_eos=False)

    assert text == f"{IM_END}\n{IM_START}user\nYou moved right.{IM_END}\n{IM_START}assistant\n"


def test_user_turn_text_after_eos(template):
    text = template.user_turn_text("You moved right.", assistant_ended_with_eos=True)

    assert text == f"\n{IM_START}user\nYou moved right.{IM_END}\n{IM_START}assistant\n"


def test_user_turn_text_matches_template_render(tokenizer, template):
    conversation = MESSAGES + [{"role": "assistant", "content": "Action: Right"}]
    rendered = tokenizer.apply_chat_template(conversation, tokenize=False)
    extended = tokenizer.apply_chat_template(
        conversation + [{"role": "user", "content": "You moved right."}],
        tokenize=False, add_generation_prompt=True)

    # The render up to the reply, then the turn text, must give the render of the longer conversation.
    before_closing = rendered[: rendered.rindex("Action: Right") + len("Action: Right")]
    without_eos = before_closing + template.user_turn_text("You moved right.", False)
    with_eos = before_closing + IM_END + template.user_turn_text("You moved right.", True)

    assert without_eos == extended
    assert with_eos == extended


def test_eos_outside_closing_kept():
    """An eos token that is not the turn terminator leaves the closing text whole."""
    other = build_tiny_tokenizer()
    other.eos_token = "<|endoftext|>"
    template = TurnTemplate.from_tokenizer(other)

    text = template.user_turn_text("obs", assistant_ended_with_eos=True)

    assert template.eos_text == "<|endoftext|>"
    assert text.startswith(f"{IM_END}\n{IM_START}user\n")


def test_rerendering_template_rejected():
    tokenizer = build_tiny_tokenizer()
    # Prints the message count first, so adding a turn changes the start of the text.
    tokenizer.chat_template = "{{ messages | length }}" + tokenizer.chat_template

    with pytest.raises(ValueError, match="re-renders earlier turns"):
        TurnTemplate.from_tokenizer(tokenizer)


def test_encode_prompt_matches_template(tokenizer):
    ids = encode_prompt(tokenizer, MESSAGES)
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)

    assert ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_encode_prompt_opens_assistant_turn(tokenizer):
    ids = encode_prompt(tokenizer, MESSAGES)
    header = tokenizer(f"{IM_START}assistant\n", add_special_tokens=False)["input_ids"]

    assert ids[-len(header):] == header


def test_encode_prompt_adds_no_bos(tokenizer):
    ids = encode_prompt(tokenizer, MESSAGES)

    assert ids.count(tokenizer.convert_tokens_to_ids(IM_START)) == len(MESSAGES) + 1
