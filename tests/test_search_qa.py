"""Tests of the SearchQA environment, its tool-call parser and its answer scoring."""

import builtins
import dataclasses
import io
import json
import os
import warnings
from importlib import resources

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import erlgym.envs  # noqa: F401  (registers the erlgym environments)
from erlgym.envs.answer_scoring import F1_THRESHOLD, f1_score, normalize_answer, score_answer
from erlgym.envs.search_corpus import SNIPPET_CHARS, paginate, task_split, to_printable
from erlgym.envs.search_qa import EVAL_SEED_START, EXAMPLE_DOCUMENTS, EXAMPLE_TASK, SearchQATextEnv
from erlgym.envs.tool_calls import ToolCall, ToolCallParser
from erlgym.redsearch.graph import Document
from erlgym.redsearch.tasks import Task, TaskSet, TaskSetError

ENV_ID = "erlgym/SearchQA-v0"
SAMPLE_QUESTIONS = resources.files("erlgym.envs").joinpath("levels", "hotpotqa", "hotpotqa_train_sample100.json")
TOOL_FORMATS = "Reply with `Action: search[<query>]`, `Action: open[<doc id>]` or `Action: answer[<answer>]`."

# Task 3 of the bundled HotpotQA sample, a bridge question over two paragraphs.
LELAND_TASK_ID = "5a8718c25542991e771816c7"
LELAND_QUESTION = "Who directed the film that was shot in or around Leland, North Carolina in 1986"


def example_task_set(**task_changes) -> TaskSet:
    """Copy the worked example's three documents and question into a task set."""
    documents = {document.doc_id: dataclasses.replace(document) for document in EXAMPLE_DOCUMENTS}
    return TaskSet(tasks=[dataclasses.replace(EXAMPLE_TASK, **task_changes)], documents=documents)


def example_env(**kwargs) -> SearchQATextEnv:
    env = SearchQATextEnv(tasks=example_task_set(), split="all", **kwargs)
    env.reset(seed=0)
    return env


def long_document_task_set() -> TaskSet:
    sentences = [f"Sentence number {index} talks about the harbor of Port Vela." for index in range(30)]
    documents = {
        "port-vela": Document("port-vela", "Port Vela", sentences),
        "port-vela-museum": Document("port-vela-museum", "Port Vela Museum", ["The museum opened in 1901."]),
    }
    task = Task(task_id="vela", question="When did the Port Vela museum open?", answer="1901",
                evidence=["port-vela-museum"])
    return TaskSet(tasks=[task], documents=documents)


def play(env, seed, replies):
    trace = [env.reset(seed=seed)]
    for reply in replies:
        trace.append(env.step(reply))
        if trace[-1][2] or trace[-1][3]:
            break
    return trace


@pytest.fixture(scope="module")
def sample_env():
    """The environment on the bundled HotpotQA sample, with every task in its pool."""
    return SearchQATextEnv(split="all")


# ---------------------------------------------------------------- Gymnasium checks


@pytest.mark.parametrize("reward", ["exact", "f1"])
def test_check_env_passes(reward):
    env = gymnasium.make(ENV_ID, reward=reward, render_mode="ansi").unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env)


def test_make_without_tasks_plays_bundled_sample():
    env = gymnasium.make(ENV_ID).unwrapped
    observation, info = env.reset(seed=0)
    assert isinstance(env, SearchQATextEnv)
    assert len(env.task_set.tasks) == 100
    assert len(env.corpus.documents) == 994
    assert observation.startswith("Question: ")
    assert observation.endswith("\nSteps left: 8.")
    assert info["task_id"] == env.train_tasks[0].task_id


def test_make_vec_sync_steps_batch():
    envs = gymnasium.make_vec(ENV_ID, num_envs=2, vectorization_mode="sync")
    observations, _ = envs.reset(seed=0)
    assert len(observations) == 2
    observations, rewards, _, _, infos = envs.step(("Action: search[film director]", "no idea"))
    assert observations[0].startswith('Search results for "film director":')
    assert observations[1].startswith("Invalid tool call: no tool call found in your reply.")
    assert list(infos["action_valid"]) == [True, False]
    assert list(rewards) == [0.0, 0.0]
    envs.close()


def test_observations_are_printable_ascii(sample_env):
    for seed in range(0, 100, 7):
        observation, _ = sample_env.reset(seed=seed)
        assert observation in sample_env.observation_space
        observation = sample_env.step(f"Action: search[{sample_env.task.question}]")[0]
        assert observation in sample_env.observation_space
        doc_id = observation.split("(id: ")[1].split(")")[0]
        observation = sample_env.step(f"Action: open[{doc_id}]")[0]
        assert observation in sample_env.observation_space


def test_to_printable_folds_unicode():
    assert to_printable("Alû – ‘Nüwa’ ß") == "Alu - 'Nuwa' ss"
    assert to_printable("Wangliang (魍魎 or 罔两)") == "Wangliang (? or ?)"
    assert to_printable("tab\tnew\nline\x00end\u2028") == "tab\tnew\nline end "


# ---------------------------------------------------------------- task sources


def test_task_set_folder_source(tmp_path):
    folder = example_task_set().save(tmp_path / "example")
    for tasks in (str(folder), str(folder / "tasks.jsonl"), folder):
        env = SearchQATextEnv(tasks=tasks, split="all")
        observation, _ = env.reset(seed=0)
        assert observation.startswith(f"Question: {EXAMPLE_TASK.question}\n")
        assert set(env.corpus.documents) == {"blue-harbor", "mara-lindqvist", "harbor-lights"}


def test_hotpotqa_file_source_with_corpus(tmp_path):
    question = {
        "_id": "q1", "question": "Where is the Vela lighthouse?", "answer": "Cape Orin", "type": "bridge",
        "level": "easy", "supporting_facts": [["Vela lighthouse", 0]],
        "context": [["Vela lighthouse", ["The Vela lighthouse stands on Cape Orin."]]],
    }
    questions_path = tmp_path / "questions.json"
    questions_path.write_text(json.dumps([question]))
    corpus_path = tmp_path / "corpus.json"
    corpus_path.write_text(json.dumps({"Cape Orin": ["Cape Orin is a headland."]}))
    for tasks in (str(questions_path), f"hotpotqa:{questions_path}"):
        env = SearchQATextEnv(tasks=tasks, corpus=str(corpus_path), split="all")
        assert set(env.corpus.documents) == {"vela-lighthouse", "cape-orin"}
        assert env.task_set.tasks[0].evidence == ["vela-lighthouse"]


def test_loaded_files_are_cached_until_changed(tmp_path):
    folder = example_task_set().save(tmp_path / "example")
    first = SearchQATextEnv(tasks=str(folder), split="all")
    second = SearchQATextEnv(tasks=str(folder), split="all")
    assert first.corpus is second.corpus

    example_task_set(question="Where was Mara Lindqvist born, in one word?").save(folder)
    os.utime(folder / "tasks.jsonl", ns=(1, 1))
    third = SearchQATextEnv(tasks=str(folder), split="all")
    assert third.corpus is not first.corpus
    assert third.task_set.tasks[0].question == "Where was Mara Lindqvist born, in one word?"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"tasks": "no/such/folder"}, TaskSetError, "tasks='no/such/folder' not found"),
        ({"tasks": "hotpotqa:no/such/file.json"}, TaskSetError, "not found"),
        ({"tasks": 3}, ValueError, "tasks=3 is invalid"),
        ({"corpus": "corpus.json"}, ValueError, "corpus needs tasks"),
        ({"split": "test"}, ValueError, "split='test' is invalid"),
        ({"eval_fraction": 1.0}, ValueError, "eval_fraction=1.0 is invalid"),
        ({"eval_fraction": 0}, ValueError, "eval_fraction=0 is invalid"),
        ({"top_k": 0}, ValueError, "top_k=0 is invalid: use an int from 1 to 20"),
        ({"top_k": 2.0}, ValueError, "top_k=2.0 is invalid"),
        ({"page_chars": 50}, ValueError, "page_chars=50 is invalid: use an int from 200 to 6000"),
        ({"max_steps": 0}, ValueError, "max_steps=0 is invalid"),
        ({"max_steps": None}, ValueError, "max_steps=None is invalid"),
        ({"reward": "bleu"}, ValueError, "reward='bleu' is invalid"),
        ({"format_penalty": -1}, ValueError, "format_penalty=-1 is invalid"),
        ({"render_mode": "human"}, ValueError, "render_mode='human' is invalid"),
    ],
)
def test_constructor_rejects_invalid_argument(kwargs, error, message):
    with pytest.raises(error, match=message):
        SearchQATextEnv(**kwargs)


def test_corpus_with_task_set_folder_rejected(tmp_path):
    folder = example_task_set().save(tmp_path / "example")
    with pytest.raises(ValueError, match="corpus works only with a HotpotQA questions file"):
        SearchQATextEnv(tasks=str(folder), corpus=str(tmp_path / "corpus.json"))


def test_invalid_hotpotqa_file_names_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"_id": "q1",')
    with pytest.raises(TaskSetError, match="broken.json: invalid JSON at line 1"):
        SearchQATextEnv(tasks=str(path))


# ---------------------------------------------------------------- seeds and splits


def test_same_seed_same_episode():
    replies = ["Action: search[Leland film 1986]", "junk", "Action: open[maximum-overdrive]",
               "Action: search[director]", "Action: answer[Stephen King]"]
    for seed in (0, 5, EVAL_SEED_START + 3):
        first = play(SearchQATextEnv(), seed, replies)
        second = play(SearchQATextEnv(), seed, replies)
        assert first == second


def test_seed_picks_task_modulo_pool(sample_env):
    tasks = sample_env.task_set.tasks
    for seed in (0, 1, 57, 99, 100, 250):
        sample_env.reset(seed=seed)
        assert sample_env.task is tasks[seed % len(tasks)]


def test_consecutive_seeds_cover_pool():
    env = SearchQATextEnv(split="train")
    seen = set()
    for seed in range(len(env.train_tasks)):
        env.reset(seed=seed)
        seen.add(env.task.task_id)
    assert seen == {task.task_id for task in env.train_tasks}


def test_auto_split_switches_at_eval_seeds():
    env = SearchQATextEnv()
    eval_ids = {task.task_id for task in env.eval_tasks}
    for seed in range(40):
        env.reset(seed=seed)
        assert env.task.task_id not in eval_ids
    for seed in range(EVAL_SEED_START, EVAL_SEED_START + 40):
        env.reset(seed=seed)
        assert env.task is env.eval_tasks[seed % len(env.eval_tasks)]


def test_eval_seed_start_matches_trainer():
    from erlgym.erl.config import EVAL_SEED_OFFSET

    assert EVAL_SEED_START == EVAL_SEED_OFFSET


def test_split_depends_on_task_id_only():
    env = SearchQATextEnv()
    reordered = TaskSet(tasks=list(reversed(env.task_set.tasks)), documents=env.task_set.documents)
    other = SearchQATextEnv(tasks=reordered)
    assert {task.task_id for task in other.eval_tasks} == {task.task_id for task in env.eval_tasks}
    assert 10 <= len(env.eval_tasks) <= 30
    assert len(env.eval_tasks) + len(env.train_tasks) == 100
    assert not {task.task_id for task in env.eval_tasks} & {task.task_id for task in env.train_tasks}
    assert [task_split(task.task_id) for task in env.eval_tasks] == ["eval"] * len(env.eval_tasks)


def test_eval_fraction_moves_tasks():
    small = SearchQATextEnv(eval_fraction=0.1)
    large = SearchQATextEnv(eval_fraction=0.5)
    assert {task.task_id for task in small.eval_tasks} < {task.task_id for task in large.eval_tasks}


def test_empty_split_rejected():
    train_id = next(f"task-{index}" for index in range(100) if task_split(f"task-{index}") == "train")
    task_set = TaskSet(tasks=[Task(task_id=train_id, question="q?", answer="a")], documents={})
    for split in ("eval", "auto"):
        with pytest.raises(ValueError, match=f"split='{split}' needs tasks in the eval split"):
            SearchQATextEnv(tasks=task_set, split=split)
    SearchQATextEnv(tasks=task_set, split="train")


def test_reset_without_seed_draws_from_pool():
    env = SearchQATextEnv(split="eval")
    eval_ids = {task.task_id for task in env.eval_tasks}
    env.reset(seed=3)
    drawn = set()
    for _ in range(30):
        env.reset()
        drawn.add(env.task.task_id)
    assert drawn <= eval_ids
    assert len(drawn) > 5


def test_task_option_runs_given_task(sample_env):
    observation, info = sample_env.reset(seed=0, options={"task": EXAMPLE_TASK})
    assert observation.startswith(f"Question: {EXAMPLE_TASK.question}\n")
    assert info["task_id"] == "example"
    sample_env.reset(options={"task": LELAND_TASK_ID})
    assert sample_env.task.question == LELAND_QUESTION
    sample_env.reset(options={"task": {"task_id": "d", "question": "Who?", "answer": "Me"}})
    assert sample_env.task.answer == "Me"


@pytest.mark.parametrize(
    ("task", "message"),
    [("no-such-id", "is not a task id of this task set"), (7, "options\\['task'\\] has type int")],
)
def test_task_option_rejects_unknown_task(sample_env, task, message):
    with pytest.raises(ValueError, match=message):
        sample_env.reset(options={"task": task})


# ---------------------------------------------------------------- search


def test_search_finds_evidence_by_title(sample_env):
    env = SearchQATextEnv(split="all", top_k=10)
    for task in env.task_set.tasks:
        for doc_id in task.evidence:
            title = env.corpus.documents[doc_id].title
            assert doc_id in [document.doc_id for document in env.corpus.search(title, 10)], title


def test_search_result_lines(sample_env):
    sample_env.reset(options={"task": LELAND_TASK_ID})
    observation, reward, _, _, info = sample_env.step("Action: search[Leland North Carolina]")
    lines = observation.split("\n")
    assert lines[0] == 'Search results for "Leland North Carolina":'
    assert lines[1] == (
        "1. Leland, North Carolina (id: leland-north-carolina): "
        "Leland is a town in Brunswick County, North Carolina, United States."
    )
    assert len(lines) == 1 + 5 + 1
    assert all(line.startswith(f"{rank}. ") for rank, line in enumerate(lines[1:6], start=1))
    assert all(len(line.split("): ", 1)[1]) <= SNIPPET_CHARS for line in lines[1:6])
    assert lines[-1] == "Steps left: 7."
    assert reward == 0.0
    assert info["action"] == "search"
    assert info["action_effective"]
    assert info["feedback"] == 'You searched for "Leland North Carolina": 5 results.'


def test_snippet_is_best_matching_sentence(sample_env):
    sample_env.reset(options={"task": LELAND_TASK_ID})
    observation = sample_env.step("Action: search[movies shot around Leland]")[0]
    line = next(line for line in observation.split("\n") if "(id: leland-north-carolina)" in line)
    snippet = line.split("(id: leland-north-carolina): ")[1]
    assert snippet.startswith('A number of movies, such as "Maximum Overdrive" (1986)')
    assert snippet.endswith("...")
    assert len(snippet) <= SNIPPET_CHARS


def test_snippet_matches_plural_words(sample_env):
    sample_env.reset(seed=0)
    observation = sample_env.step("Action: search[Gallu demon]")[0]
    assert "1. Alu (id: alu): In Akkadian and Sumerian mythology, it is associated with other demons like Gallu" in observation


def test_search_without_results_is_ineffective():
    env = example_env()
    observation, reward, _, _, info = env.step("Action: search[zzzz qqqq]")
    assert observation.startswith('No documents match "zzzz qqqq". Try other words.\n')
    assert info["action_valid"]
    assert not info["action_effective"]
    assert info["num_ineffective_actions"] == 1
    assert reward == 0.0


def test_repeated_search_is_ineffective():
    env = example_env()
    first = env.step("Action: search[Blue Harbor]")
    second = env.step("Action: search[blue harbor]")
    assert first[4]["action_effective"]
    assert not second[4]["action_effective"]
    assert second[0].split("\n")[1:4] == first[0].split("\n")[1:4]


# ---------------------------------------------------------------- open


def test_open_shows_pages():
    env = SearchQATextEnv(tasks=long_document_task_set(), split="all", page_chars=200, max_steps=20)
    env.reset(seed=0)
    document = env.corpus.documents["port-vela"]
    pages = paginate(document.sentences, 200)
    observation, _, _, _, info = env.step("Action: open[port-vela]")
    lines = observation.split("\n")
    assert len(pages) > 3
    assert lines[0] == f"Port Vela (id: port-vela), page 1 of {len(pages)}:"
    assert lines[1] == pages[0]
    assert lines[2] == "Next page: Action: open[port-vela page 2]"
    assert info["feedback"] == f"You opened Port Vela (id: port-vela), page 1 of {len(pages)}."

    texts = [pages[0]]
    for page in range(2, len(pages) + 1):
        observation = env.step(f"Action: open[port-vela page {page}]")[0]
        assert observation.startswith(f"Port Vela (id: port-vela), page {page} of {len(pages)}:\n")
        texts.append(observation.split("\n")[1])
    assert " ".join(texts) == document.text
    assert "Next page" not in observation


def test_open_page_out_of_range_is_invalid():
    env = SearchQATextEnv(tasks=long_document_task_set(), split="all", page_chars=200, format_penalty=0.1)
    env.reset(seed=0)
    observation, reward, _, _, info = env.step("Action: open[port-vela page 99]")
    assert observation.startswith("Invalid tool call: port-vela has ")
    assert ": use page 1 to " in observation
    assert reward == -0.1
    assert not info["action_valid"]
    assert info["documents_opened"] == 0


@pytest.mark.parametrize("page", ["0", "-1", "+0"])
def test_open_page_below_one_is_invalid(page):
    env = SearchQATextEnv(tasks=long_document_task_set(), split="all", page_chars=200)
    env.reset(seed=0)
    observation = env.step(f"Action: open[port-vela page {page}]")[0]
    assert observation.startswith("Invalid tool call: port-vela has ")
    assert ": use page 1 to " in observation
    assert "no document has the id" not in observation


def test_paginate_splits_between_sentences():
    sentences = ["a" * 90 + ".", "b" * 90 + ".", "c" * 90 + "."]
    assert paginate(sentences, 200) == [sentences[0] + " " + sentences[1], sentences[2]]
    assert paginate([], 200) == [""]
    long_sentence = " ".join(["word"] * 100)
    pages = paginate([long_sentence], 200)
    assert all(len(page) <= 200 for page in pages)
    assert " ".join(pages) == long_sentence


@pytest.mark.parametrize(
    "reply",
    ["Action: open[Mara Lindqvist]", "Action: open[MARA-LINDQVIST]", "Action: open['mara-lindqvist'.]",
     "open: mara-lindqvist", "Action: open[mara-lindqvist, page 1]", "Action: open[mara-lindqvist p. 1]"],
)
def test_open_accepts_title_and_variants(reply):
    env = example_env()
    observation, _, _, _, info = env.step(reply)
    assert observation.startswith("Mara Lindqvist (id: mara-lindqvist), page 1 of 1:\n")
    assert info["documents_opened"] == 1


def test_reopening_page_is_ineffective():
    env = example_env()
    assert env.step("Action: open[blue-harbor]")[4]["action_effective"]
    assert not env.step("Action: open[blue-harbor]")[4]["action_effective"]


def test_path_like_ids_never_read_files(tmp_path, monkeypatch):
    secret = tmp_path / "secret.txt"
    secret.write_text("The secret is 4242.")
    env = SearchQATextEnv(tasks=example_task_set(), split="all")
    env.reset(seed=0)
    relative = os.path.relpath(secret)
    references = [f"../{relative}", relative, str(secret), f"file://{secret}", "../../etc/passwd",
                  "/etc/passwd", "~/.bashrc", f"{secret} page 1"]

    def fail_on_file_access(*args, **kwargs):
        raise AssertionError(f"step opened a file: {args!r}")

    monkeypatch.setattr(builtins, "open", fail_on_file_access)
    monkeypatch.setattr(io, "open", fail_on_file_access)
    monkeypatch.setattr(os, "open", fail_on_file_access)
    for reference in references:
        observation, _, _, _, info = env.step(f"Action: open[{reference}]")
        assert observation.startswith("Invalid tool call: no document has the id ")
        assert "4242" not in observation
        assert not info["action_valid"]
        env.reset(seed=0)


# ---------------------------------------------------------------- malformed replies


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("", "no tool call found in your reply"),
        ("I think the answer is Tromso.", "no tool call found in your reply"),
        ("Action: lookup[Tromso]", "'lookup' is not a tool: use search, open or answer"),
        ("Action: Right", "'Right' is not a tool: use search, open or answer"),
        ("Action:", "no tool name after 'Action:': use search, open or answer"),
        ("Action: search[]", "search needs a query, as in search[...]"),
        ("Action: search[  ]", "search needs a query, as in search[...]"),
        ("Action: open", "open needs a document id, as in open[...]"),
        ("Action: answer[\"\"]", "answer needs an answer, as in answer[...]"),
        ("Action: open[nowhere]", 'no document has the id "nowhere": open an id from your search results'),
        ("Action: search[x]\nAction: jump[y]", "'jump' is not a tool: use search, open or answer"),
    ],
)
def test_malformed_reply_gets_feedback(reply, reason):
    env = example_env(format_penalty=0.5)
    observation, reward, terminated, truncated, info = env.step(reply)
    assert observation == f"Invalid tool call: {reason}. {TOOL_FORMATS}\nSteps left: 7."
    assert info["feedback"] == f"Invalid tool call: {reason}. {TOOL_FORMATS}"
    assert reward == -0.5
    assert not terminated
    assert not truncated
    assert info["action"] is None
    assert not info["action_valid"]
    assert info["num_invalid_actions"] == 1
    assert info["documents_opened"] == 0


def test_malformed_reply_echo_is_printable():
    env = example_env()
    observation = env.step("Action: open[\u9b4d\u9b4e\x00" + "x" * 500 + "]")[0]
    assert observation in env.observation_space
    assert len(observation.split("\n")[0]) < 300


@pytest.mark.parametrize(
    ("reply", "tool", "argument"),
    [
        ("Action: search[Blue Harbor]", "search", "Blue Harbor"),
        ("**Action:** search[Blue Harbor]", "search", "Blue Harbor"),
        ("Action: `search[Blue Harbor]`", "search", "Blue Harbor"),
        ("action = SEARCH[Blue Harbor]", "search", "Blue Harbor"),
        ("Action: search: Blue Harbor", "search", "Blue Harbor"),
        ('Action: search("Blue Harbor")', "search", "Blue Harbor"),
        ("Action: search Blue Harbor", "search", "Blue Harbor"),
        ("search[Blue Harbor]", "search", "Blue Harbor"),
        ("- Search: Blue Harbor", "search", "Blue Harbor"),
        ("Answer: Columbus, Ohio.", "answer", "Columbus, Ohio."),
        ("Action: answer[Foo [bar]] done", "answer", "Foo [bar]"),
        ("Action: answer[unclosed bracket", "answer", "unclosed bracket"),
        ("Action: answer[Legal action: none]", "answer", "Legal action: none"),
        ("Let me search.\nAction: search[a]\nThen open it.\nAction: open[b]", "open", "b"),
        ("Action: answer[x]\nAction: search[y]", "search", "y"),
    ],
)
def test_parser_reads_variants(reply, tool, argument):
    result = ToolCallParser(("search", "open", "answer")).parse(reply)
    assert result.error is None
    assert result.call.tool == tool
    assert result.call.argument == argument


@pytest.mark.parametrize(
    ("reply", "argument"),
    [
        ("I need the director.\n\nThe answer is: Mara Lindqvist.", "Mara Lindqvist"),
        ("The final answer is Tromso", "Tromso"),
        ("**Final answer:** 1961.", "1961"),
        ("The answer is: Oslo.\nAction: search[Oslo]", None),
    ],
)
def test_parser_reads_stated_answers(reply, argument):
    result = ToolCallParser(("search", "open", "answer"), answer_tool="answer").parse(reply)

    assert result.error is None
    if argument is None:
        # A later tool call wins over a stated answer.
        assert result.call.tool == "search"
    else:
        assert result.call == ToolCall("answer", argument)


def test_prose_mentioning_the_answer_is_no_call():
    parser = ToolCallParser(("search", "open", "answer"), answer_tool="answer")

    assert parser.parse("The answer lies in the documents.").error == "no tool call found in your reply"
    assert parser.parse("The answer is").error == "no tool call found in your reply"


def test_stated_answers_need_answer_tool():
    parser = ToolCallParser(("search", "open", "answer"))

    assert parser.parse("The answer is: Oslo.").error == "no tool call found in your reply"


def test_parser_ignores_prose_about_tools():
    parser = ToolCallParser(("search", "open", "answer"))
    for reply in ("Search results show the film.", "I will open the page next", "Searching: later"):
        assert parser.parse(reply).error == "no tool call found in your reply"


def test_parser_reads_only_reply_prefix():
    parser = ToolCallParser(("search", "open", "answer"))
    assert parser.parse("x" * 5000 + "\nAction: search[a]").error == "no tool call found in your reply"


# ---------------------------------------------------------------- answers and rewards


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The Beatles", "beatles"),
        ("  a   spirit. ", "spirit"),
        ("An Apple, the Pear", "apple pear"),
        ("Saint-Denis", "saintdenis"),
        ("Alû", "alu"),
        ("Nüwa’s “Song” – live", "nuwas song live"),
        ("theater", "theater"),
        ("Columbus, Ohio", "columbus ohio"),
        ("", ""),
    ],
)
def test_normalize_answer(text, normalized):
    assert normalize_answer(text) == normalized


@pytest.mark.parametrize(
    ("prediction", "gold", "f1"),
    [
        ("Stephen King", "Stephen King", 1.0),
        ("King", "Stephen King", 2 / 3),
        ("the writer Stephen King", "Stephen King", 0.8),
        ("Columbus", "Columbus, Ohio", 2 / 3),
        ("Paris", "Stephen King", 0.0),
        ("no", "no", 1.0),
        ("no, it is not", "no", 0.0),
        ("yes", "yes it is", 0.0),
        ("The", "the", 1.0),
    ],
)
def test_f1_score(prediction, gold, f1):
    assert f1_score(prediction, gold) == pytest.approx(f1)


def test_score_answer_modes():
    exact = score_answer("stephen king.", ["Stephen King"], "exact")
    partial = score_answer("King", ["Stephen King"], "f1")
    below = score_answer("a novel by King and others who wrote it", ["Stephen King"], "f1")
    alias = score_answer("SK", ["Stephen King", "S.K."], "exact")
    assert (exact.exact_match, exact.f1, exact.reward) == (True, 1.0, 1.0)
    assert partial.reward == pytest.approx(2 / 3)
    assert not partial.exact_match
    assert below.f1 < F1_THRESHOLD
    assert below.reward == 0.0
    assert alias.exact_match
    assert score_answer("King", ["Stephen King"], "exact").reward == 0.0


def test_score_answer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mode='bleu' is invalid"):
        score_answer("a", ["a"], "bleu")
    with pytest.raises(ValueError, match="gold_answers is empty"):
        score_answer("a", [], "exact")


@pytest.mark.parametrize(
    ("reply", "reward", "success"),
    [("Action: answer[tromso]", 1.0, True), ("Action: answer[The Tromso.]", 1.0, True),
     ("Action: answer[Oslo]", 0.0, False)],
)
def test_exact_reward_on_answer(reply, reward, success):
    env = example_env()
    observation, step_reward, terminated, truncated, info = env.step(reply)
    assert step_reward == reward
    assert terminated
    assert not truncated
    assert info["success"] is success
    assert info["exact_match"] is success


def test_f1_reward_on_partial_answer():
    env = SearchQATextEnv(tasks=example_task_set(), split="all", reward="f1")
    env.reset(seed=0, options={"task": Task(task_id="t", question="Who?", answer="Mara Lindqvist")})
    observation, reward, terminated, _, info = env.step("Action: answer[Lindqvist]")
    assert reward == pytest.approx(2 / 3)
    assert terminated
    assert not info["success"]
    assert info["f1"] == pytest.approx(2 / 3)
    assert observation == 'You answered "Lindqvist": partly correct (F1 0.67).'
    assert info["episode_feedback"].startswith(
        'Partly correct: you answered "Lindqvist" after 1 step, which overlaps the correct answer (F1 0.67) '
        "but does not match it."
    )


@pytest.mark.parametrize("shape", ["comparison", "count"])
def test_f1_reward_exact_for_closed_answers(shape):
    env = SearchQATextEnv(tasks=example_task_set(), split="all", reward="f1")
    task = Task(task_id="t", question="Who was born first, Mara Lindqvist or Jon Berg?", answer="Mara Lindqvist",
                shape=shape)
    env.reset(seed=0, options={"task": task})

    _, reward, terminated, _, info = env.step("Action: answer[Mara Lindqvist or Jon Berg]")

    assert reward == 0.0
    assert terminated
    assert info["f1"] > 0.3


def test_aliases_count_as_correct():
    env = SearchQATextEnv(tasks=example_task_set(), split="all")
    task = Task(task_id="t", question="Which city?", answer="Tromso", aliases=["Tromsø municipality"])
    env.reset(seed=0, options={"task": task})
    assert env.step("Action: answer[Tromso Municipality]")[1] == 1.0


# ---------------------------------------------------------------- episode end and feedback


def test_step_limit_truncates_without_answer():
    env = example_env(max_steps=3)
    env.step("Action: search[Blue Harbor]")
    observation, _, _, _, _ = env.step("Action: open[blue-harbor]")
    assert observation.endswith("\nSteps left: 1. Your next reply must answer: Action: answer[<answer>].")
    observation, reward, terminated, truncated, info = env.step("Action: search[Mara Lindqvist]")
    assert reward == 0.0
    assert not terminated
    assert truncated
    assert observation.endswith("\nStep limit of 3 reached.")
    assert info["feedback"].endswith(" Step limit of 3 reached.")
    assert info["episode_feedback"] == (
        "Failed: step limit of 3 reached without an answer. You opened 1 of the 2 documents that contain "
        "the needed facts. 1 needed document that you did not open was in your search results."
    )


def test_wrong_answer_feedback_names_answer_not_gold():
    env = example_env()
    env.step("nothing useful")
    _, _, _, _, info = env.step("Action: answer[Oslo]")
    assert info["feedback"] == 'You answered "Oslo": wrong.'
    assert info["episode_feedback"] == (
        'Failed: you answered "Oslo" after 2 steps, which is wrong. You opened none of the 2 documents that '
        "contain the needed facts. 1 invalid tool call."
    )
    assert "Tromso" not in info["episode_feedback"]


def test_answer_feedback_folds_accents():
    env = SearchQATextEnv(tasks=example_task_set(answer="Bölzend Trulstixwick"), split="all")
    env.reset(seed=0)
    _, reward, _, _, info = env.step("Action: answer[Bölzend Trulstixwick]")
    assert reward == 1.0
    assert info["feedback"] == 'You answered "Bolzend Trulstixwick": correct.'


def test_count_question_feedback_states_no_document_count():
    # A count answer often equals the number of evidence documents.
    env = SearchQATextEnv(tasks=example_task_set(shape="count", answer="2"), split="all")
    env.reset(seed=0)
    env.step("Action: open[blue-harbor]")
    info = env.step("Action: answer[5]")[4]

    assert "You opened some of the documents that contain the needed facts, not all." in info["episode_feedback"]
    assert "2" not in info["episode_feedback"].replace("after 2 steps", "")


def test_feedback_counts_evidence_opened():
    env = example_env()
    env.step("Action: open[blue-harbor]")
    env.step("Action: open[mara-lindqvist]")
    info = env.step("Action: answer[Bergen]")[4]
    assert info["evidence_opened"] == 2
    assert info["evidence_total"] == 2
    assert info["episode_feedback"] == (
        'Failed: you answered "Bergen" after 3 steps, which is wrong. '
        "You opened both documents that contain the needed facts."
    )


def test_feedback_for_single_evidence_document():
    env = SearchQATextEnv(tasks=long_document_task_set(), split="all")
    env.reset(seed=0)
    env.step("Action: search[Port Vela museum]")
    info = env.step("Action: answer[1850]")[4]
    assert info["episode_feedback"] == (
        'Failed: you answered "1850" after 2 steps, which is wrong. You did not open the document that '
        "contains the needed facts. 1 needed document that you did not open was in your search results."
    )


def test_success_feedback():
    env = example_env()
    env.step("Action: search[Blue Harbor film director]")
    env.step("Action: open[mara-lindqvist]")
    observation, reward, terminated, _, info = env.step("Action: answer[Tromso]")
    assert observation == 'You answered "Tromso": correct.'
    assert reward == 1.0
    assert terminated
    assert info["episode_feedback"] == 'Succeeded: you answered "Tromso" correctly after 3 steps.'


def test_failure_feedback_never_states_gold_answer(sample_env):
    for task in sample_env.task_set.tasks:
        gold = normalize_answer(task.answer)
        if gold in ("yes", "no"):
            continue  # "no" is also an ordinary word of the feedback
        sample_env.reset(options={"task": task})
        observation = sample_env.step(f"Action: search[{task.question}]")[0]
        doc_id = observation.split("(id: ")[1].split(")")[0]
        sample_env.step(f"Action: open[{doc_id}]")
        info = sample_env.step("Action: answer[zzz]")[4]
        assert f" {gold} " not in f" {normalize_answer(info['episode_feedback'])} ", task.task_id


def test_step_after_end_changes_nothing():
    env = example_env()
    final = env.step("Action: answer[Tromso]")
    observation, reward, terminated, truncated, info = env.step("Action: answer[Oslo]")
    assert observation == final[0]
    assert reward == 0.0
    assert terminated
    assert not truncated
    assert info["success"]
    assert info["feedback"].startswith("The episode has ended.")


def test_step_before_reset_raises():
    env = SearchQATextEnv(tasks=example_task_set(), split="all")
    with pytest.raises(gymnasium.error.ResetNeeded):
        env.step("Action: search[x]")


def test_step_rejects_non_string():
    env = example_env()
    with pytest.raises(TypeError, match="got bytes"):
        env.step(b"Action: search[x]")


def test_render_ansi_returns_last_observation():
    env = SearchQATextEnv(tasks=example_task_set(), split="all", render_mode="ansi")
    observation, _ = env.reset(seed=0)
    assert env.render() == observation
    observation = env.step("Action: search[Blue Harbor]")[0]
    assert env.render() == observation
    assert example_env().render() is None


# ---------------------------------------------------------------- prompts


def test_system_prompt_names_tools_and_limits():
    prompt = SearchQATextEnv(top_k=3, max_steps=6).system_prompt
    assert "`Action: <tool>[<argument>]`" in prompt
    assert "Action: search[<query>] lists the 3 best-matching documents" in prompt
    assert "Action: open[<doc id>]" in prompt
    assert "Action: answer[<answer>]" in prompt
    assert "You have 6 steps." in prompt
    assert len(prompt.split()) < 120


def test_few_shot_episode_is_real_and_correct():
    env = SearchQATextEnv()
    messages = env.few_shot_messages()
    assert [message["role"] for message in messages] == ["user", "assistant"] * 3

    replay = example_env()
    observation = replay.reset(seed=0, options={"task": EXAMPLE_TASK})[0]
    reward = 0.0
    for user, assistant in zip(messages[::2], messages[1::2]):
        assert user["content"] == observation
        assert assistant["content"].count("\n") == 1
        observation, reward, terminated, _, info = replay.step(assistant["content"])
        assert info["action_valid"]
    assert reward == 1.0
    assert terminated


def test_few_shot_follows_env_settings():
    messages = SearchQATextEnv(top_k=2, max_steps=5).few_shot_messages()
    results = messages[2]["content"].split("\n")
    assert len(results) == 1 + 2 + 1
    assert results[-1] == "Steps left: 4."


def test_few_shot_count_out_of_range():
    env = SearchQATextEnv()
    assert len(env.few_shot_messages(1)) == 2
    with pytest.raises(ValueError, match="num_examples=4 is out of range: use 0 to 3"):
        env.few_shot_messages(4)


# ---------------------------------------------------------------- a full episode


def test_scripted_agent_answers_hotpotqa_question():
    env = gymnasium.make(ENV_ID, split="all").unwrapped
    observation, _ = env.reset(options={"task": LELAND_TASK_ID})
    assert observation == f"Question: {LELAND_QUESTION}\nSteps left: 8."

    # Hop 1: the town's page names the film shot there in 1986.
    observation, *_ = env.step("I should look up Leland first.\nAction: search[Leland, North Carolina]")
    assert "(id: leland-north-carolina)" in observation
    observation, *_ = env.step("Action: open[leland-north-carolina]")
    assert '"Maximum Overdrive" (1986)' in observation

    # Hop 2: the film's page names its director.
    observation, *_ = env.step("The film is Maximum Overdrive.\nAction: search[Maximum Overdrive film]")
    assert "(id: maximum-overdrive)" in observation
    observation, _, _, _, info = env.step("Action: open[maximum-overdrive]")
    assert "written and directed by Stephen King" in observation
    assert info["evidence_opened"] == 2

    observation, reward, terminated, truncated, info = env.step("It was directed by Stephen King.\nAction: answer[Stephen King]")
    assert reward == 1.0
    assert terminated
    assert not truncated
    assert info["success"]
    assert info["steps"] == 5
    assert info["episode_feedback"] == 'Succeeded: you answered "Stephen King" correctly after 5 steps.'


# ---------------------------------------------------------------- training


def test_train_step_on_hotpotqa_sample(action_model_dir, tmp_path):
    from erlgym.erl.run import train
    from tiny_model import tiny_train_config

    env_kwargs = {"tasks": f"hotpotqa:{SAMPLE_QUESTIONS}", "max_steps": 2}
    config = tiny_train_config(action_model_dir, env=ENV_ID, env_kwargs=env_kwargs, steps=1,
                               output_dir=str(tmp_path / "run"))
    run_dir = train(config)

    status = json.loads((run_dir / "run.json").read_text())
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert status["status"] == "completed"
    assert len(metrics) == 1
    assert 0.0 <= metrics[0]["rollout/invalid_action_rate"] <= 1.0
