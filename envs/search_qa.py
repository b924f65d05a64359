"""Multi-hop search question answering: find the answer in a document collection with tools.

The corpus and questions come from a ``redsearch`` task set (a
:class:`~erlgym.redsearch.tasks.TaskSet` or a folder written by its ``save``) or from
a HotpotQA questions file. Without one, the environment plays the 100 HotpotQA training
questions bundled under ``levels/hotpotqa``. :mod:`erlgym.envs.search_corpus` loads
them, :mod:`erlgym.envs.tool_calls` parses the tool-call text format, and
:mod:`erlgym.envs.answer_scoring` scores answers.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gymnasium import spaces

from erlgym.envs.answer_scoring import SCORING_MODES, AnswerScore, score_answer
from erlgym.envs.base import (
    DEFAULT_FEW_SHOT_EXAMPLES,
    MAX_OBSERVATION_CHARS,
    PRINTABLE,
    RENDER_MODES,
    validate_format_penalty,
    validate_max_steps,
    validate_render_mode,
)
from erlgym.envs.parser import MAX_REPLY_CHARS
from erlgym.envs.tool_env import ToolTextEnv, count_noun, fit_observation
from erlgym.envs.search_corpus import (
    DEFAULT_EVAL_FRACTION,
    best_snippet,
    collapse_whitespace,
    load_task_source,
    paginate,
    query_terms,
    shorten,
    task_split,
    to_printable,
)
from erlgym.envs.tool_calls import ToolCall, ToolCallParser, echo
from erlgym.redsearch.graph import Document
from erlgym.redsearch.tasks import Task, TaskSet


TOOLS = ("search", "open", "answer")
TOOL_ARGUMENT_NAMES = {"search": "a query", "open": "a document id", "answer": "an answer"}
FORMAT_HINT = "Action: <tool>[<argument>]"
"""General reply format shown in the system prompt."""
TOOL_FORMATS = "`Action: search[<query>]`, `Action: open[<doc id>]` or `Action: answer[<answer>]`"
"""The three tool calls, as an invalid reply's feedback lists them."""

SPLITS = ("auto", "train", "eval", "all")
EVAL_SEED_START = 1_000_000
"""First seed that ``split="auto"`` plays from the eval split. It equals the trainer's
held-out evaluation seed offset (``erlgym.erl.config.EVAL_SEED_OFFSET``)."""

DEFAULT_TOP_K = 5
TOP_K_RANGE = (1, 20)
DEFAULT_MAX_STEPS = 8
DEFAULT_PAGE_CHARS = 1000
PAGE_CHARS_RANGE = (200, 6000)
"""Allowed page lengths: long enough for a sentence or two, short enough that a page
plus its header fits an 8192-character observation."""
MAX_TITLE_CHARS = 100
MAX_QUERY_CHARS = 200
MAX_QUOTE_CHARS = 80
"""Characters of a query or answer quoted back in feedback."""

MAX_PAGE_REFERENCE_CHARS = 300
"""Longest ``open`` argument checked for a page suffix; the regex backtracks on long whitespace runs."""

# "<reference> page <n>", also with "p." or "p" and a comma: the page an open call requests.
# A signed page number matches too, so that "page -1" gets the page-range message.
_PAGE_SUFFIX = re.compile(
    r"^(?P<reference>.+?)[\s,;]+(?:page|p\.?)[\s:#]*(?P<page>[-+]?\d{1,9})\s*$", re.IGNORECASE
)


def quote(text: str) -> str:
    """Quote a query or answer for feedback: folded to printable ASCII, on one line, shortened."""
    return '"' + echo(collapse_whitespace(to_printable(text)), MAX_QUOTE_CHARS) + '"'


# ---------------------------------------------------------------------- environment


@dataclass(frozen=True)
class ToolOutcome:
    """Result of one reply, valid or not.

    Attributes:
        valid: Whether the reply made a tool call that could run.
        effective: Whether it showed something new: search results for a new query,
            a page not shown before, or an answer.
        feedback: One or two sentences for ``info["feedback"]``.
        result: The observation text, without the steps-left line.
        terminated: Whether the call was an answer.
        score: The answer's score, for an answer.
    """

    valid: bool
    effective: bool
    feedback: str
    result: str
    terminated: bool = False
    score: AnswerScore | None = None


EXACT_ONLY_SHAPES = frozenset({"comparison", "count"})
"""Question shapes scored by exact match even with ``reward="f1"``."""


class SearchQATextEnv(ToolTextEnv):
    """Answer a multi-hop question by searching and reading a document collection.

    ## Description
    Each episode is one question from a task set. The agent cannot see the documents
    at first: it calls a search tool (BM25 over titles and text), opens the documents
    it finds, and ends the episode with an answer. Questions usually need facts from
    two or more documents, so the agent must chain searches, for example by finding
    the director of a film first and then the director's birthplace.

    ## Action Space
    ``spaces.Text`` over printable ASCII, up to 4096 characters: the agent's reply,
    which makes one tool call (see Text protocol). ``step`` accepts any ``str``.

    ## Observation Space
    ``spaces.Text`` over printable ASCII, up to 8192 characters: the question, then
    the result of each tool call. Document text is folded to ASCII by
    :func:`to_printable`.

    ## Starting State
    ``reset(seed=N)`` plays task ``N % len(pool)`` of a pool of tasks, in task-set
    order, so consecutive seeds play every task of the pool once before repeating.
    The pool depends on ``split``:

    * ``"train"`` and ``"eval"``: the tasks that :func:`task_split` puts in that split,
      from a hash of the task id (about 80/20 with the default ``eval_fraction``).
    * ``"all"``: every task.
    * ``"auto"`` (default): the train split for seeds below 1,000,000 and the eval
      split from 1,000,000 on. The ERL trainer trains on seeds from 0 and evaluates on
      seeds from 1,000,000 with the same arguments, so its evaluation plays held-out
      questions.

    ``reset()`` without a seed draws a task of the pool (the train split under
    ``"auto"``) from the environment's random generator.
    ``reset(options={"task": task})`` plays the given :class:`Task`, task dict or
    task id for one episode, answered from this environment's corpus.

    ## Rewards
    On the answer: 1.0 for an exact match with the answer or one of its aliases after
    normalization (:mod:`erlgym.envs.answer_scoring`: lower case, no punctuation, no
    articles, accents folded). With ``reward="f1"``, the token F1 instead when it is
    at least 0.3, else 0.0, except for comparison and count questions, whose answers
    come from a closed set and are scored by exact match. Every other valid call earns 0.0. An invalid reply earns
    ``-format_penalty``.

    ## Episode End
    Terminated: the agent answered (``success`` is True for an exact match).
    Truncated: ``max_steps`` replies were made without an answer; the episode then
    earned 0.0. Invalid replies count as steps.

    ## Arguments
    * ``tasks``: the task source. None (default) plays the bundled sample of 100
      HotpotQA training questions (CC BY-SA 4.0) with its 994 paragraphs. Otherwise a
      task-set folder (``tasks.jsonl`` and ``corpus.jsonl``, as written by
      :meth:`TaskSet.save`), a HotpotQA questions file in the original JSON format, the
      same as ``"hotpotqa:PATH"``, or a :class:`TaskSet`. See :func:`load_task_source`.
    * ``corpus``: an extra HotpotQA corpus file, ``{title: [sentence, ...]}``, whose
      paragraphs are added to the searchable documents. Only with a HotpotQA file.
    * ``split``: ``"auto"``, ``"train"``, ``"eval"`` or ``"all"``, see Starting State.
    * ``eval_fraction``: share of tasks in the eval split, between 0 and 1. Default 0.2.
    * ``top_k``: search results per query, 1 to 20. Default 5.
    * ``max_steps``: replies per episode, the answer and invalid replies included, at
      least 1. Default 8: a two-hop question takes about five (a search and an open
      per hop, then the answer), which leaves three for a failed search or a bad reply.
    * ``page_chars``: characters per page of an opened document, 200 to 6000. Default
      1000, which shows 92% of the bundled sample's paragraphs (548 characters on
      average) on one page.
    * ``reward``: ``"exact"`` or ``"f1"``, see Rewards.
    * ``format_penalty``: subtracted from the reward of an invalid reply. Default 0.0.
    * ``render_mode``: None or ``"ansi"``.

    Raises ``ValueError`` (or its subclass ``TaskSetError``) when an argument is out of
    range, the task source cannot be read, or the requested split has no tasks.

    ## Text protocol
    A reply makes one tool call on its own line, after at most one short line of
    reasoning. The parser (:mod:`erlgym.envs.tool_calls`) also accepts variants such
    as ``search: <query>``, and uses the last tool-call line when a reply has several.

    * ``Action: search[<query>]`` lists up to ``top_k`` documents, one per line:
      ``1. Title (id: doc-id): snippet``. The snippet is the document's sentence that
      contains the most query words (the first sentence on a tie), cut to 150
      characters.
    * ``Action: open[<doc id>]`` shows page 1 of a document, headed
      ``Title (id: doc-id), page 1 of 2:``; ``Action: open[<doc id> page 2]`` shows
      page 2. The document can also be named by its exact title. Ids are looked up in
      the loaded corpus only, never as file paths.
    * ``Action: answer[<answer>]`` ends the episode.

    The first observation is ``Question: <question>``. Every observation before the
    end closes with ``Steps left: N.``; with one step left it adds that the next reply
    must answer.

    An invalid reply (no tool call, an unknown tool, an empty argument, an unknown
    document id or a page out of range) gets ``Invalid tool call: <reason>. Reply with
    ...`` and changes nothing but the step count.

    ``info`` after ``step`` contains the keys of the other erlgym environments
    (``action`` is the tool name or None, ``action_valid``, ``action_effective``,
    ``success``, ``feedback``, ``steps``, ``num_invalid_actions``,
    ``num_ineffective_actions``) and ``task_id``, ``answer`` (None until answered),
    ``exact_match`` and ``f1`` (of the answer, False and 0.0 before it),
    ``documents_opened``, ``evidence_opened`` and ``evidence_total``. The last step
    adds ``episode_feedback``, a summary for reflection, for example ``Failed: you
    answered "Oslo" after 4 steps, which is wrong. You opened 1 of the 2 documents that
    contain the needed facts.`` Feedback never states the correct answer, and counts
    the needed documents without naming them.

    ## Version History
    * v0: Initial version.
    """

    metadata: dict[str, Any] = {"render_modes": list(RENDER_MODES), "render_fps": 4}

    action_names = TOOLS

    outcome_type = ToolOutcome
    tool_formats = TOOL_FORMATS
    last_step_hint = "Your next reply must answer: Action: answer[<answer>]."

    def __init__(
        self,
        *,
        tasks: Any = None,
        corpus: str | Path | None = None,
        split: str = "auto",
        eval_fraction: float = DEFAULT_EVAL_FRACTION,
        top_k: int = DEFAULT_TOP_K,
        max_steps: int = DEFAULT_MAX_STEPS,
        page_chars: int = DEFAULT_PAGE_CHARS,
        reward: str = "exact",
        format_penalty: float = 0.0,
        render_mode: str | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is invalid: use one of {SPLITS}")
        is_number = isinstance(eval_fraction, (int, float)) and not isinstance(eval_fraction, bool)
        if not is_number or not 0 < eval_fraction < 1:
            raise ValueError(
                f"eval_fraction={eval_fraction!r} is invalid: use a number between 0 and 1, exclusive"
            )
        self.top_k = _validate_int("top_k", top_k, TOP_K_RANGE)
        self.page_chars = _validate_int("page_chars", page_chars, PAGE_CHARS_RANGE)
        max_steps = validate_max_steps(max_steps)
        if max_steps is None:
            raise ValueError("max_steps=None is invalid: use an int of at least 1")
        if reward not in SCORING_MODES:
            raise ValueError(f"reward={reward!r} is invalid: use one of {SCORING_MODES}")
        self.split = split
        self.eval_fraction = float(eval_fraction)
        self.max_steps = max_steps
        self.reward_mode = reward
        self.format_penalty = validate_format_penalty(format_penalty)
        self.render_mode = validate_render_mode(render_mode)

        self.task_set, self.corpus = load_task_source(tasks, corpus)
        self.train_tasks: list[Task] = []
        self.eval_tasks: list[Task] = []
        for task in self.task_set.tasks:
            if task_split(task.task_id, self.eval_fraction) == "eval":
                self.eval_tasks.append(task)
            else:
                self.train_tasks.append(task)
        self._check_split_has_tasks()

        self._parser = ToolCallParser(TOOLS, TOOL_ARGUMENT_NAMES, answer_tool="answer")
        self.action_space = spaces.Text(max_length=MAX_REPLY_CHARS, min_length=0, charset=PRINTABLE)
        self.observation_space = spaces.Text(
            max_length=MAX_OBSERVATION_CHARS, min_length=1, charset=PRINTABLE
        )

        self.task: Task | None = None
        self._evidence: list[str] = []
        self._reset_episode_state()
        self._episode_over = True
        self._end_flags = (False, False)
        self._warned_after_end = False
        self._last_observation = ""

    def _check_split_has_tasks(self) -> None:
        num_tasks = len(self.task_set.tasks)
        if num_tasks == 0:
            raise ValueError(
                "the task source has no tasks: pass a task set or HotpotQA file with at least one task"
            )
        needed = {"auto": ("train", "eval"), "train": ("train",), "eval": ("eval",), "all": ()}[self.split]
        for name in needed:
            if not (self.train_tasks if name == "train" else self.eval_tasks):
                raise ValueError(
                    f"split={self.split!r} needs tasks in the {name} split, but the hash of the task ids "
                    f"put none of the {num_tasks} tasks there (eval_fraction={self.eval_fraction}): "
                    "pass split='all' or a larger task set"
                )

    def _reset_episode_state(self) -> None:
        self._steps = 0
        self._num_invalid = 0
        self._num_ineffective = 0
        self._success = False
        self._answer: str | None = None
        self._score: AnswerScore | None = None
        self._queries: set[str] = set()
        self._opened: set[str] = set()
        self._shown_pages: set[tuple[str, int]] = set()
        self._in_results: set[str] = set()

    # ------------------------------------------------------------------ episode

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Start an episode on ``options["task"]`` when given, else on the task the seed picks.

        Raises:
            ValueError: If ``options["task"]`` is not a Task, a valid task dict or a
                task id of the task set.
        """
        super().reset(seed=seed)
        task = (options or {}).get("task")
        self.task = self._coerce_task(task) if task is not None else self._select_task(seed)
        evidence = [self.corpus.display_ids.get(doc_id, doc_id) for doc_id in self.task.evidence]
        self._evidence = list(dict.fromkeys(evidence))
        self._reset_episode_state()
        self._episode_over = False
        self._warned_after_end = False
        question = collapse_whitespace(to_printable(self.task.question))
        self._last_observation = fit_observation(f"Question: {question}\n{self._describe_steps_left()}")
        return self._last_observation, {
            "success": False,
            "feedback": "",
            "steps": 0,
            "num_invalid_actions": 0,
            "num_ineffective_actions": 0,
            "task_id": self.task.task_id,
        }

    def _select_task(self, seed: int | None) -> Task:
        if self.split == "all":
            pool = self.task_set.tasks
        elif self.split == "eval" or (self.split == "auto" and seed is not None and seed >= EVAL_SEED_START):
            pool = self.eval_tasks
        else:
            pool = self.train_tasks
        index = seed % len(pool) if seed is not None else int(self.np_random.integers(len(pool)))
        return pool[index]

    def _coerce_task(self, task: Any) -> Task:
        if isinstance(task, Task):
            return task
        if isinstance(task, dict):
            return Task.from_dict(task)
        if isinstance(task, str):
            for candidate in self.task_set.tasks:
                if candidate.task_id == task:
                    return candidate
            raise ValueError(f"options['task']={task!r} is not a task id of this task set")
        raise ValueError(
            f"options['task'] has type {type(task).__name__}: pass a Task, a task dict or a task id"
        )

    # ------------------------------------------------------------------ tools

    def _reward(self, outcome: ToolOutcome) -> float:
        return outcome.score.reward if outcome.score is not None else 0.0

    def _run_tool(self, call: ToolCall) -> ToolOutcome:
        if call.tool == "search":
            return self._search(call.argument)
        if call.tool == "open":
            return self._open(call.argument)
        return self._submit_answer(call.argument)

    def _search(self, argument: str) -> ToolOutcome:
        query = shorten(collapse_whitespace(to_printable(argument)), MAX_QUERY_CHARS)
        documents = self.corpus.search(query, self.top_k)
        is_new_query = query.lower() not in self._queries
        self._queries.add(query.lower())
        if not documents:
            feedback = f"You searched for {quote(query)}: no results."
            return ToolOutcome(True, False, feedback, f"No documents match {quote(query)}. Try other words.")

        terms = query_terms(query)
        lines = [f"Search results for {quote(query)}:"]
        for rank, document in enumerate(documents, start=1):
            self._in_results.add(document.doc_id)
            title = shorten(document.title, MAX_TITLE_CHARS)
            lines.append(f"{rank}. {title} (id: {document.doc_id}): {best_snippet(document, terms)}")
        feedback = f"You searched for {quote(query)}: {count_noun(len(documents), 'result')}."
        return ToolOutcome(True, is_new_query, feedback, "\n".join(lines))

    def _open(self, argument: str) -> ToolOutcome:
        document, page = self.corpus.find(argument), 1
        if document is None and len(argument) <= MAX_PAGE_REFERENCE_CHARS:
            suffix = _PAGE_SUFFIX.match(argument.strip())
            if suffix is not None:
                document, page = self.corpus.find(suffix.group("reference")), int(suffix.group("page"))
        if document is None:
            return self._invalid_outcome(
                f"no document has the id {quote(argument)}: open an id from your search results"
            )

        pages = paginate(document.sentences, self.page_chars)
        if not 1 <= page <= len(pages):
            return self._invalid_outcome(
                f"{document.doc_id} has {count_noun(len(pages), 'page')}: use page 1 to {len(pages)}"
            )
        is_new_page = (document.doc_id, page) not in self._shown_pages
        self._shown_pages.add((document.doc_id, page))
        self._opened.add(document.doc_id)

        title = shorten(document.title, MAX_TITLE_CHARS)
        header = f"{title} (id: {document.doc_id}), page {page} of {len(pages)}"
        lines = [f"{header}:", pages[page - 1] or "(This document has no text.)"]
        if page < len(pages):
            lines.append(f"Next page: Action: open[{document.doc_id} page {page + 1}]")
        return ToolOutcome(True, is_new_page, f"You opened {header}.", "\n".join(lines))

    def _submit_answer(self, argument: str) -> ToolOutcome:
        assert self.task is not None
        self._answer = argument
        # Comparison and count answers come from a closed set, so token overlap is no partial
        # credit: naming both compared entities would otherwise earn an F1 of about 0.5.
        mode = "exact" if self.task.shape in EXACT_ONLY_SHAPES else self.reward_mode
        self._score = score_answer(argument, [self.task.answer, *self.task.aliases], mode)
        self._success = self._score.exact_match
        if self._score.exact_match:
            verdict = "correct"
        elif self._score.reward > 0:
            verdict = f"partly correct (F1 {self._score.f1:.2f})"
        else:
            verdict = "wrong"
        feedback = f"You answered {quote(argument)}: {verdict}."
        return ToolOutcome(True, True, feedback, feedback, terminated=True, score=self._score)

    # ------------------------------------------------------------------ text

    def _task_info(self) -> dict[str, Any]:
        assert self.task is not None
        return {
            "task_id": self.task.task_id,
            "answer": self._answer,
            "exact_match": self._score.exact_match if self._score is not None else False,
            "f1": self._score.f1 if self._score is not None else 0.0,
            "documents_opened": len(self._opened),
            "evidence_opened": len(self._opened.intersection(self._evidence)),
            "evidence_total": len(self._evidence),
        }

    def _summarize_episode(self, truncated: bool) -> str:
        """Write the end-of-episode feedback: the outcome, the evidence read, and the invalid replies."""
        steps = count_noun(self._steps, "step")
        if self._success:
            return f"Succeeded: you answered {quote(self._answer or '')} correctly after {steps}."

        if truncated:
            parts = [f"Failed: step limit of {self.max_steps} reached without an answer."]
        elif self._score is not None and self._score.reward > 0:
            parts = [
                f"Partly correct: you answered {quote(self._answer or '')} after {steps}, which overlaps "
                f"the correct answer (F1 {self._score.f1:.2f}) but does not match it."
            ]
        else:
            parts = [f"Failed: you answered {quote(self._answer or '')} after {steps}, which is wrong."]

        parts.extend(self._describe_evidence_read())
        if self._num_invalid:
            parts.append(f"{count_noun(self._num_invalid, 'invalid tool call')}.")
        return " ".join(parts)

    def _describe_evidence_read(self) -> list[str]:
        """Say how many of the task's evidence documents were opened, without naming them."""
        total = len(self._evidence)
        if total == 0:
            return []
        opened = len(self._opened.intersection(self._evidence))
        if self.task.shape == "count":
            return self._describe_evidence_read_without_counts(opened, total)
        if total == 1:
            verb = "opened" if opened else "did not open"
            sentences = [f"You {verb} the document that contains the needed facts."]
        elif opened == 0:
            sentences = [f"You opened none of the {total} documents that contain the needed facts."]
        elif opened < total:
            sentences = [f"You opened {opened} of the {total} documents that contain the needed facts."]
        else:
            share = "both" if total == 2 else f"all {total}"
            sentences = [f"You opened {share} documents that contain the needed facts."]

        unopened_in_results = [
            doc_id for doc_id in self._evidence if doc_id in self._in_results and doc_id not in self._opened
        ]
        if len(unopened_in_results) == 1:
            sentences.append("1 needed document that you did not open was in your search results.")
        elif unopened_in_results:
            sentences.append(
                f"{len(unopened_in_results)} needed documents that you did not open were in your "
                "search results."
            )
        return sentences

    def _describe_evidence_read_without_counts(self, opened: int, total: int) -> list[str]:
        """Say how much evidence was opened without numbers: a count answer often equals the document count."""
        if opened == 0:
            sentences = ["You opened none of the documents that contain the needed facts."]
        elif opened < total:
            sentences = ["You opened some of the documents that contain the needed facts, not all."]
        else:
            sentences = ["You opened all the documents that contain the needed facts."]
        if any(doc_id in self._in_results and doc_id not in self._opened for doc_id in self._evidence):
            sentences.append("Some needed documents that you did not open were in your search results.")
        return sentences

    # ------------------------------------------------------------------ prompts

    @property
    def system_prompt(self) -> str:
        """System message: the task, the three tools and the reply format."""
        return (
            "Answer the question by searching a collection of documents. Each reply is one step: "
            "at most one short line of reasoning, then one tool call on its own line as "
            f"`{FORMAT_HINT}`. The tools are:\n"
            f"Action: search[<query>] lists the {self.top_k} best-matching documents with their ids.\n"
            "Action: open[<doc id>] shows a document. Add page 2 for its next page: "
            "open[<doc id> page 2].\n"
            "Action: answer[<answer>] gives your final answer and ends the episode. Keep it short: "
            "a name, a date, a number, yes or no.\n"
            f"You have {self.max_steps} steps. Questions often need facts from two documents."
        )

    def format_reply(self, tool: str, argument: str, reasoning: str | None = None) -> str:
        """Write a reply in the reply format, such as ``"Find the film.\\nAction: search[Blue Harbor]"``."""
        line = f"Action: {tool}[{argument}]"
        return line if not reasoning else f"{reasoning}\n{line}"

    def few_shot_messages(self, num_examples: int = DEFAULT_FEW_SHOT_EXAMPLES) -> list[dict[str, str]]:
        """Build a worked episode as alternating user and assistant chat messages.

        The example is a fictional two-hop question, answered with a search, an open
        and an answer. Its observations come from this class, run on a three-document
        corpus with this environment's ``top_k`` and ``page_chars``, so they match the
        real format. ``num_examples`` is the number of (observation, reply) turns, from
        the start of the episode.

        Raises:
            ValueError: If ``num_examples`` is negative or more than 3.
        """
        turns = _example_turns(self.top_k, max(self.max_steps, len(EXAMPLE_REPLIES)), self.page_chars)
        if not 0 <= num_examples <= len(turns):
            raise ValueError(f"num_examples={num_examples} is out of range: use 0 to {len(turns)}")
        messages = []
        for observation, reply in turns[:num_examples]:
            messages.append({"role": "user", "content": observation})
            messages.append({"role": "assistant", "content": reply})
        return messages


def _validate_int(name: str, value: Any, allowed: tuple[int, int]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not allowed[0] <= value <= allowed[1]:
        raise ValueError(f"{name}={value!r} is invalid: use an int from {allowed[0]} to {allowed[1]}")
    return value


# ---------------------------------------------------------------------- worked example

EXAMPLE_DOCUMENTS = (
    Document("blue-harbor", "Blue Harbor", [
        "Blue Harbor is a 1998 drama film directed by Mara Lindqvist.",
        "It follows a fishing family on the Norwegian coast.",
    ]),
    Document("mara-lindqvist", "Mara Lindqvist", [
        "Mara Lindqvist is a Norwegian film director and screenwriter.",
        "She was born in 1961 in Tromso.",
        "Her films include Blue Harbor and Still Water.",
    ]),
    Document("harbor-lights", "Harbor Lights", ["Harbor Lights is a 1963 musical film set in Lisbon."]),
)
EXAMPLE_TASK = Task(
    task_id="example",
    question="In which city was the director of the film Blue Harbor born?",
    answer="Tromso",
    evidence=["blue-harbor", "mara-lindqvist"],
    difficulty={"hops": 2, "documents": 2},
    source="example",
)
EXAMPLE_REPLIES = (
    ("search", "Blue Harbor film director", "I need the director of Blue Harbor first."),
    ("open", "mara-lindqvist", "Mara Lindqvist directed it, so her page should say where she was born."),
    ("answer", "Tromso", "She was born in Tromso."),
)
"""The worked example's replies: tool, argument and the line of reasoning before the call."""


@functools.lru_cache(maxsize=16)
def _example_turns(top_k: int, max_steps: int, page_chars: int) -> tuple[tuple[str, str], ...]:
    """Play the worked example and return its (observation, reply) turns."""
    documents = {document.doc_id: document for document in EXAMPLE_DOCUMENTS}
    task_set = TaskSet(tasks=[EXAMPLE_TASK], documents=documents)
    env = SearchQATextEnv(
        tasks=task_set, split="all", top_k=top_k, max_steps=max_steps, page_chars=page_chars
    )
    observation, _ = env.reset(options={"task": EXAMPLE_TASK})
    turns = []
    for tool, argument, reasoning in EXAMPLE_REPLIES:
        reply = env.format_reply(tool, argument, reasoning)
        turns.append((observation, reply))
        observation = env.step(reply)[0]
    return tuple(turns)
