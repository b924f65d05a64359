"""Prompts the ERL step builds: the reflection and rulebook requests and the note a retry starts with."""

from __future__ import annotations

from collections import defaultdict

from erlgym.erl.rollout import Episode

REFLECTION_SYSTEM_PROMPT = (
    "You coach an agent that failed a task. Read its attempt and the feedback. "
    "Reply with one or two short sentences of advice for its next attempt on the same task: "
    "name the mistake and say what to do instead."
)

RULEBOOK_SYSTEM_PROMPT = (
    "You coach an agent that failed some tasks. Read its attempts and the feedback. "
    "Reply with a short numbered list of at most three rules for its next attempts at these tasks: "
    "each rule names a mistake to avoid or a way of moving that works."
)

RETRY_NOTE_HEADER = "Advice from your previous attempt at this task:"
RULEBOOK_NOTE_HEADER = "Rules from your earlier attempts at tasks like this one:"
ATTEMPT_NOTE_HEADER = "Your previous attempt at this task failed."

RULEBOOK_MAX_FAILED = 4
"""Failed attempts one rulebook prompt shows, besides at most one successful attempt."""
RULEBOOK_ATTEMPT_CHARS = 400
"""Characters of each attempt in a rulebook prompt. With the default model's tokenizer, a
prompt with five attempts cut to this length and a memory of eight 48-token reflections
took about 1,400 tokens on the default FrozenLake and Sokoban tasks, below the default
2048-token context."""


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


def select_rulebook_attempts(first_attempts: list[Episode],
                             max_failed: int = RULEBOOK_MAX_FAILED) -> tuple[list[Episode], Episode | None]:
    """Choose the attempts a rulebook prompt shows: up to ``max_failed`` failures and one success.

    Failures are taken one task at a time, in task order (the first failure of every task,
    then the second, and so on), so that a capped prompt still covers as many tasks as it
    can. The success, kept for contrast, comes from a task with a shown failure when there
    is one, and is None when no first attempt succeeded.
    """
    failed_by_task: dict[int, list[Episode]] = defaultdict(list)
    for episode in first_attempts:
        if not episode.success:
            failed_by_task[episode.seed].append(episode)
    max_failures_per_task = max((len(episodes) for episodes in failed_by_task.values()), default=0)
    failed = [episodes[rank] for rank in range(max_failures_per_task)
              for episodes in failed_by_task.values() if rank < len(episodes)][:max_failed]

    successes = [episode for episode in first_attempts if episode.success]
    shown_tasks = {episode.seed for episode in failed}
    same_task = [episode for episode in successes if episode.seed in shown_tasks]
    success = (same_task or successes or [None])[0]
    return failed, success


def build_rulebook_messages(task_prompt: str, failed: list[Episode], success: Episode | None,
                            memory: list[str], max_chars: int = RULEBOOK_ATTEMPT_CHARS) -> list[dict[str, str]]:
    """Build the chat messages that ask the policy for one list of rules from several attempts.

    ``failed`` and ``success`` come from :func:`select_rulebook_attempts`. Each attempt is
    cut to ``max_chars`` characters so that the prompt stays short. ``memory`` contains
    earlier reflections or rulebooks whose retries reached the memory threshold.
    """
    parts = [f"Task instructions the agent had:\n{task_prompt}"]
    for number, episode in enumerate(failed, start=1):
        parts.append(f"Failed attempt {number}:\n{format_attempt(episode, max_chars)}\n"
                     f"Outcome: {episode.feedback} Reward: {episode.reward:g}.")
    if success is not None:
        parts.append(f"Successful attempt, for contrast:\n{format_attempt(success, max_chars)}\n"
                     f"Outcome: {success.feedback} Reward: {success.reward:g}.")
    if memory:
        parts.append("Advice that helped on earlier tasks:\n" + "\n".join(f"- {item}" for item in memory))
    parts.append("Your rules for the next attempts:")
    return [
        {"role": "system", "content": RULEBOOK_SYSTEM_PROMPT},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def format_rulebook_note(rulebook: str) -> str:
    """Return the text placed before every retry's first observation when one rulebook serves the step."""
    return f"{RULEBOOK_NOTE_HEADER}\n{rulebook.strip()}\n\n"


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
