"""Prompts the ERL step builds: the reflection request and the note a retry starts with."""

from __future__ import annotations

from erlgym.erl.rollout import Episode

REFLECTION_SYSTEM_PROMPT = (
    "You coach an agent that failed a task. Read its attempt and the feedback. "
    "Reply with one or two short sentences of advice for its next attempt on the same task: "
    "name the mistake and say what to do instead."
)

RETRY_NOTE_HEADER = "Advice from your previous attempt at this task:"
ATTEMPT_NOTE_HEADER = "Your previous attempt at this task failed."


def format_attempt(episode: Episode, max_chars: int = 1200) -> str:
    """Render an episode's first observation and moves as plain text for a reflection prompt."""
    moves = " | ".join(reply.strip().replace("\n", " ") for reply in episode.replies)
    text = f"First observation:\n{episode.first_observation}\n\nThe agent's replies, in order: {moves}"
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def build_reflection_messages(task_prompt: str, episode: Episode, memory: list[str]) -> list[dict[str, str]]:
    """Build the chat messages that ask the policy to reflect on a failed attempt.

    ``memory`` contains earlier reflections whose retry succeeded; they are shown as
    examples of advice that worked.
    """
    parts = [
        f"Task instructions the agent had:\n{task_prompt}",
        format_attempt(episode),
        f"Outcome: {episode.feedback} Reward: {episode.reward:g}.",
    ]
    if memory:
        parts.append("Advice that helped on earlier tasks:\n" + "\n".join(f"- {item}" for item in memory))
    parts.append("Your advice for the next attempt:")
    return [
        {"role": "system", "content": REFLECTION_SYSTEM_PROMPT},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def format_retry_note(reflection: str) -> str:
    """Return the text placed before the retry's first observation.

    The note goes into the first user message, after the system prompt and few-shot
    examples, so that every retry of a batch shares that prefix with the first attempts.
    """
    return f"{RETRY_NOTE_HEADER} {reflection.strip()}\n\n"


def format_attempt_note(episode: Episode, max_chars: int = 600) -> str:
    """Return the text placed before a retry's first observation when no reflection is written.

    The note repeats the failed attempt's replies and the environment's feedback, so the
    retry has the same information a reflection would have read, without the advice.
    """
    moves = " | ".join(reply.strip().replace("\n", " ") for reply in episode.replies)
    if len(moves) > max_chars:
        moves = moves[: max_chars - 3] + "..."
    return f"{ATTEMPT_NOTE_HEADER} Your replies, in order: {moves}. Outcome: {episode.feedback}\n\n"
