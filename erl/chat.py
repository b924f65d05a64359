"""Token-level chat rendering for multi-turn rollouts.

A rollout renders its first prompt with the tokenizer's chat template once. After that,
every model turn is kept as the exact ids the model generated. Every new user message
(an environment observation) is appended as the ids of the template's text that closes
an assistant turn, wraps the message and opens the next assistant turn. The history is never
re-rendered and re-tokenized, so the ids the trainer scores are the ids the model
sampled.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from erlgym.erl.errors import ChatTemplateError

_PROBE_SYSTEM = "<<system>>"
_PROBE_USER = "<<user>>"
_PROBE_ASSISTANT = "<<assistant>>"
_PROBE_NEXT_USER = "<<next-user>>"


def encode_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> list[int]:
    """Render messages with the chat template, open an assistant turn, and return the ids."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@dataclass(frozen=True)
class TurnTemplate:
    """The chat template's text around a user message that follows an assistant turn.

    ``after_assistant`` closes the assistant turn (for ChatML: ``"<|im_end|>\\n"``),
    ``before_user`` and ``after_user`` wrap the user message and open the next assistant
    turn. They are found by rendering a probe conversation, so any template that renders
    earlier turns unchanged when a turn is added works.
    """

    after_assistant: str
    before_user: str
    after_user: str
    eos_text: str

    @classmethod
    def from_tokenizer(cls, tokenizer: PreTrainedTokenizerBase) -> "TurnTemplate":
        probe = [
            {"role": "system", "content": _PROBE_SYSTEM},
            {"role": "user", "content": _PROBE_USER},
            {"role": "assistant", "content": _PROBE_ASSISTANT},
        ]
        rendered = tokenizer.apply_chat_template(probe, tokenize=False)
        extended = tokenizer.apply_chat_template(
            probe + [{"role": "user", "content": _PROBE_NEXT_USER}], tokenize=False, add_generation_prompt=True
        )
        if not extended.startswith(rendered) or _PROBE_ASSISTANT not in rendered:
            raise ChatTemplateError(
                "The tokenizer's chat template re-renders earlier turns when a turn is added, so "
                "multi-turn rollouts cannot append observations as tokens. Use a model whose chat "
                "template renders each turn independently."
            )
        after_assistant = rendered[rendered.rindex(_PROBE_ASSISTANT) + len(_PROBE_ASSISTANT):]
        before_user, after_user = extended[len(rendered):].split(_PROBE_NEXT_USER)
        return cls(after_assistant, before_user, after_user, tokenizer.eos_token or "")

    def user_turn_text(self, content: str, assistant_ended_with_eos: bool) -> str:
        """Return the text that closes the assistant turn, adds a user message and opens a reply.

        When the model stopped on its end-of-turn token, that token is already among the
        generated ids, so it is not added again.
        """
        closing = self.after_assistant
        if assistant_ended_with_eos and self.eos_text and closing.startswith(self.eos_text):
            closing = closing[len(self.eos_text):]
        return closing + self.before_user + content + self.after_user
