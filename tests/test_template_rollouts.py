"""Tests of STATe templates inside rollouts, ERL steps and training runs.

The policy is the tiny action model (see ``tiny_model.py``) on small FrozenLake maps. Its
tokenizer was trained on FrozenLake texts only, so template text tokenizes into many short
pieces, which is enough to check where the prefilled ids go.
"""

import json
import shutil

import pytest
import torch

from erlgym.erl.algorithm import FIRST_ATTEMPT, REFLECTION, RETRY, EnvPool, StepSettings, collect_step
from erlgym.erl.config import ConfigError, TrainConfig
from erlgym.erl.diversity import distinct_n, group_diversity
from erlgym.erl.memory import ReflectionMemory
from erlgym.erl.models import load_model
from erlgym.erl.prefill import CONTROLLER_STATE_FILE, TEMPLATE_RECORDS_FILE, TemplatePrefill, build_prefill
from erlgym.erl.rollout import Episode, GenerationConfig, RolloutEngine
from erlgym.erl.run import RunError, train
from erlgym.templates import ForcedController, TemplateLibrary, load_library
from tiny_model import ACTION_ENV_ID, ACTION_ENV_KWARGS, tiny_train_config

TASK_SEEDS = [100, 101, 102]
GROUP = 3

LIBRARY = TemplateLibrary.from_dict({
    "name": "probe",
    "dimensions": [
        {"id": "plan", "choices": [
            {"id": "left", "definition": "Lean left.", "guidance": "I go left", "check": "left"},
            {"id": "down", "definition": "Lean down.", "guidance": "I go down", "check": "down"},
        ]},
        {"id": "opening", "choices": [
            {"id": "act", "definition": "Open the action line.", "prefix": "Act"},
            {"id": "free", "definition": "No prefix."},
        ]},
    ],
})


@pytest.fixture(scope="module")
def action_model(action_model_dir):
    return load_model(str(action_model_dir))


def make_engine(loaded, max_new_tokens: int = 8) -> RolloutEngine:
    return RolloutEngine(loaded.model, loaded.tokenizer, GenerationConfig(max_new_tokens=max_new_tokens,
                                                                          temperature=1.0))


def play(engine: RolloutEngine, seeds: list[int], templates: TemplatePrefill) -> list[Episode]:
    pool = EnvPool(ACTION_ENV_ID, ACTION_ENV_KWARGS)
    episodes = [engine.start_episode(env, seed, env.unwrapped.system_prompt, env.unwrapped.few_shot_messages())
                for env, seed in zip(pool.take(len(seeds)), seeds)]
    engine.run(episodes, templates=templates)
    return episodes


# ---------------------------------------------------------------- rollouts


def test_prefill_masked_before_each_reply(action_model):
    torch.manual_seed(0)
    prefill = build_prefill("frozenlake", "uniform", action_model.tokenizer, seed=0)
    episodes = play(make_engine(action_model), [200, 201, 202], prefill)

    for episode in episodes:
        assert len(episode.turn_templates) == episode.turns
        # Each reply is a maximal run of mask-1 ids, and the turn's template ids sit just before it, masked.
        reply_starts = [i for i, bit in enumerate(episode.env_mask) if bit == 1 and (i == 0 or episode.env_mask[i - 1] == 0)]
        assert len(reply_starts) == episode.turns
        for start, template in zip(reply_starts, episode.turn_templates):
            ids = prefill.prefill_ids(template)
            assert ids, "every bundled FrozenLake template has prefill text"
            assert episode.completion_ids[start - len(ids): start] == ids
            assert set(episode.env_mask[start - len(ids): start]) == {0}
        assert episode.completion_ids[: len(prefill.prefill_ids(episode.turn_templates[0]))] == \
            prefill.prefill_ids(episode.turn_templates[0])
        assert sum(episode.env_mask) == episode.generated_tokens


def test_reply_text_starts_with_prefill(action_model):
    torch.manual_seed(1)
    forced = TemplatePrefill(LIBRARY, ForcedController(LIBRARY, ["plan=left,opening=act"]), action_model.tokenizer)
    episodes = play(make_engine(action_model), [200, 201], forced)
    for episode in episodes:
        assistant_texts = [message["content"] for message in episode.messages if message["role"] == "assistant"]
        assert assistant_texts[-episode.turns:] == episode.replies  # after the few-shot examples
        for reply in episode.replies:
            assert reply.startswith("I go left\nAct")
        assert all(set(turn) == {"plan"} for turn in episode.followed)
        assert [template.key for template in episode.turn_templates] == ["plan=left,opening=act"] * episode.turns


def test_followed_reads_generated_text_only(action_model):
    # The guidance "I go left" contains "left", but only the generated text counts as following it.
    torch.manual_seed(2)
    forced = TemplatePrefill(LIBRARY, ForcedController(LIBRARY, ["plan=left,opening=free"]), action_model.tokenizer)
    episodes = play(make_engine(action_model), [200, 201, 202, 203], forced)
    for episode in episodes:
        assert len(episode.generated_replies) == len(episode.followed) == episode.turns
        for reply, generated, turn in zip(episode.replies, episode.generated_replies, episode.followed):
            assert reply.startswith("I go left\n")
            assert not generated.startswith("I go left")
            assert turn["plan"] == ("left" in generated.lower())


def test_no_templates_leaves_rollout_unchanged(action_model):
    engine = make_engine(action_model)
    torch.manual_seed(3)
    pool = EnvPool(ACTION_ENV_ID, ACTION_ENV_KWARGS)
    episodes = [engine.start_episode(env, seed, env.unwrapped.system_prompt, env.unwrapped.few_shot_messages())
                for env, seed in zip(pool.take(2), [200, 201])]
    engine.run(episodes)
    for episode in episodes:
        assert episode.turn_templates == []
        assert episode.followed == []
        assert sum(episode.env_mask) == episode.generated_tokens
        assert len(episode.actions) == episode.turns


# ---------------------------------------------------------------- ERL step


@pytest.fixture(scope="module")
def templated_step(action_model):
    torch.manual_seed(0)
    actions = build_prefill("frozenlake", "ucb", action_model.tokenizer, seed=0)
    reflections = build_prefill("reflection", "uniform", action_model.tokenizer, seed=0)
    pool = EnvPool(ACTION_ENV_ID, ACTION_ENV_KWARGS)
    settings = StepSettings(group_size=GROUP, reflection=True, reflection_max_new_tokens=8,
                            drop_zero_advantage=False)
    result = collect_step(make_engine(action_model), pool, TASK_SEEDS, ReflectionMemory(capacity=8), settings,
                          step=1, action_templates=actions, reflection_templates=reflections)
    pool.close()
    return result, actions, reflections


def test_step_records_every_trajectory(templated_step):
    result, _, _ = templated_step
    kinds = [record["kind"] for record in result.template_records]
    assert kinds.count(FIRST_ATTEMPT) == len(TASK_SEEDS) * GROUP
    assert kinds.count(RETRY) == kinds.count(REFLECTION)
    assert kinds.count(RETRY) >= 1, "the tiny model fails some first attempts on these seeds"
    library = load_library("frozenlake")
    for record in result.template_records:
        if record["kind"] == REFLECTION:
            assert len(record["templates"]) == 1
            continue
        assert len(record["templates"]) == len(record["actions"]) == len(record["followed"]) >= 1
        for key in record["templates"]:
            library.parse(key)
        assert record["group"] == f"1:{record['task_seed']}:{record['kind']}"


def test_step_updates_bandit_counts(templated_step):
    result, actions, _ = templated_step
    episodes = [record for record in result.template_records if record["kind"] != REFLECTION]
    # Each episode counts one pull for every distinct strategy its turns used.
    used = [{key.split(",")[0] for key in record["templates"]} for record in episodes]
    assert actions.controller.pulls["strategy"].sum() == sum(len(choices) for choices in used)
    rewarded = sum(record["reward"] * len(choices) for record, choices in zip(episodes, used))
    assert actions.controller.reward_sums["strategy"].sum() == pytest.approx(rewarded)


def test_reflection_prefill_in_prompt_not_completion(templated_step, action_model):
    result, _, reflections = templated_step
    samples = [sample for sample in result.samples if sample.kind == REFLECTION]
    records = [record for record in result.template_records if record["kind"] == REFLECTION]
    assert len(samples) == len(records)
    library = reflections.library
    for sample, record in zip(samples, records):
        ids = reflections.prefill_ids(library.parse(record["templates"][0]))
        assert sample.prompt_ids[-len(ids):] == ids
        assert sample.completion_ids[: len(ids)] != ids
        assert set(sample.env_mask) == {1}


def test_retry_note_starts_with_prefix(templated_step):
    result, _, reflections = templated_step
    library = reflections.library
    texts = [record for record in result.records if record["kind"] == REFLECTION]
    prefixes = [library.prefix(library.parse(record["templates"][0]))
                for record in result.template_records if record["kind"] == REFLECTION]
    for record, prefix in zip(texts, prefixes):
        assert record["reflection"].startswith(prefix.strip())


def test_step_reports_diversity_and_followed_rate(templated_step):
    metrics = templated_step[0].metrics
    assert 1 <= metrics["diversity/distinct_action_sequences"] <= GROUP
    assert 1 <= metrics["diversity/distinct_final_states"] <= GROUP
    assert 0 <= metrics["diversity/distinct_2"] <= 1
    assert 0 <= metrics["templates/followed_rate"] <= 1


# ---------------------------------------------------------------- diversity


def test_distinct_n():
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert distinct_n(["a b", "a b"], 2) == pytest.approx(1 / 2)
    assert distinct_n(["a"], 2) == 0.0
    with pytest.raises(ValueError):
        distinct_n(["a"], 0)


def test_group_diversity_counts_distinct():
    group = [Episode(env=None, seed=0, messages=[], prompt_ids=[], actions=["up", "left"], final_observation="x",
                     generated_replies=["go up", "go left"]),
             Episode(env=None, seed=0, messages=[], prompt_ids=[], actions=["up", "left"], final_observation="y",
                     generated_replies=["go up", "go left"]),
             Episode(env=None, seed=0, messages=[], prompt_ids=[], actions=["down"], final_observation="y",
                     generated_replies=["down"])]
    measures = group_diversity(group)
    assert measures["distinct_action_sequences"] == 2
    assert measures["distinct_final_states"] == 2
    assert measures["distinct_2"] == pytest.approx(2 / 4)


# ---------------------------------------------------------------- training runs


def test_config_rejects_template_mistakes(action_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="templates: template library 'nope' not found"):
        tiny_train_config(action_model_dir, templates="nope").validate()
    with pytest.raises(ConfigError, match="'steered' needs --template-weights"):
        tiny_train_config(action_model_dir, templates="frozenlake", template_controller="steered").validate()
    with pytest.raises(ConfigError, match="'forced' needs --template-sequence"):
        tiny_train_config(action_model_dir, templates="frozenlake", template_controller="forced").validate()
    with pytest.raises(ConfigError, match="unknown choice 'fly'"):
        tiny_train_config(action_model_dir, templates="frozenlake", template_controller="forced",
                          template_sequence="strategy=fly,opening=free").validate()
    with pytest.raises(ConfigError, match="need --templates"):
        tiny_train_config(action_model_dir, template_sequence="x").validate()


def test_config_rejects_unused_template_options(action_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="no effect without reflections"):
        tiny_train_config(action_model_dir, method="grpo", reflection_templates="reflection").validate()
    with pytest.raises(ConfigError, match="no effect without reflections"):
        tiny_train_config(action_model_dir, retry_context="attempt", reflection_templates="reflection").validate()
    with pytest.raises(ConfigError, match="read only by the steered controller"):
        tiny_train_config(action_model_dir, templates="auto", template_controller="ucb",
                          template_weights=str(tmp_path / "steering.json")).validate()
    with pytest.raises(ConfigError, match="read only by the forced controller"):
        tiny_train_config(action_model_dir, templates="auto",
                          template_sequence="strategy=close-gap,opening=free").validate()


def test_forced_sequence_applies_to_actions_only(action_model_dir):
    config = tiny_train_config(action_model_dir, templates="frozenlake", reflection_templates="reflection",
                               template_controller="forced",
                               template_sequence="strategy=plan-route,opening=free").validate()
    plans = config.template_controllers()
    assert plans["actions"][1:] == ("forced", None, "strategy=plan-route,opening=free")
    assert plans["reflections"] == ("reflection", "uniform", None, None)


@pytest.fixture(scope="module")
def templated_run(action_model_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("templated") / "run"
    config = tiny_train_config(action_model_dir, output_dir=str(run_dir), templates="frozenlake",
                               reflection_templates="reflection", template_controller="thompson")
    return train(config)


def strategy_pulls(records: list[dict]) -> int:
    """Return the bandit pulls of the strategy dimension the action records imply: distinct strategies per episode."""
    return sum(len({key.split(",")[0] for key in record["templates"]})
               for record in records if record["library"] == "frozenlake")


def read_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_writes_template_files(templated_run):
    records = read_lines(templated_run / TEMPLATE_RECORDS_FILE)
    assert {record["step"] for record in records} == {1, 2}
    assert {record["library"] for record in records} <= {"frozenlake", "reflection"}
    assert (templated_run / "templates" / "actions.json").is_file()
    assert load_library(templated_run / "templates" / "reflections.json").name == "reflection"
    state = json.loads((templated_run / "checkpoints" / "checkpoint-2" / CONTROLLER_STATE_FILE).read_text())
    assert state["actions"]["kind"] == "thompson"
    assert sum(state["actions"]["pulls"]["strategy"]) == strategy_pulls(records)


def test_resume_restores_controllers(templated_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(templated_run, run_dir)
    shutil.rmtree(run_dir / "checkpoints" / "checkpoint-2")
    saved = json.loads((run_dir / "config.json").read_text())
    train(TrainConfig.from_dict({**saved, "output_dir": str(run_dir), "steps": 3}), resume=True)

    records = read_lines(run_dir / TEMPLATE_RECORDS_FILE)
    assert sorted({record["step"] for record in records}) == [1, 2, 3]
    assert len([r for r in records if r["step"] == 1]) == len(
        [r for r in read_lines(templated_run / TEMPLATE_RECORDS_FILE) if r["step"] == 1])
    # The resumed controller counts every turn of steps 1 to 3: restored counts plus new ones.
    state = json.loads((run_dir / "checkpoints" / "checkpoint-3" / CONTROLLER_STATE_FILE).read_text())
    assert sum(state["actions"]["pulls"]["strategy"]) == strategy_pulls(records)


def test_resume_rejects_corrupt_controller_file(templated_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(templated_run, run_dir)
    (run_dir / "checkpoints" / "checkpoint-2" / CONTROLLER_STATE_FILE).write_text("{broken")
    saved = json.loads((run_dir / "config.json").read_text())
    with pytest.raises(RunError, match="Cannot read the template controllers"):
        train(TrainConfig.from_dict({**saved, "output_dir": str(run_dir), "steps": 3}), resume=True)


def test_analyze_reads_a_real_run(templated_run, tmp_path):
    from erlgym.erl.cli import main

    out = tmp_path / "analysis"
    assert main(["templates", "analyze", str(templated_run), "--out", str(out), "--bootstrap", "20"]) == 0
    analysis = json.loads((out / "analysis.json").read_text())
    records = read_lines(templated_run / TEMPLATE_RECORDS_FILE)
    assert (out / "report.md").read_text().strip()
    # Steering weights fitted on the run load into the controller the next run would use.
    from erlgym.templates import SteeredController

    SteeredController.from_file(load_library("frozenlake"), out / "steering.json")
    assert json.dumps(analysis)  # every number is plain JSON
    assert len(records) > 0


def test_resume_rejects_changed_library(action_model_dir, tmp_path):
    library_file = tmp_path / "mine.json"
    library_file.write_text(json.dumps(LIBRARY.to_dict()))
    run_dir = tmp_path / "run"
    train(tiny_train_config(action_model_dir, output_dir=str(run_dir), method="grpo", steps=1,
                            templates=str(library_file)))
    assert load_library(run_dir / "templates" / "actions.json").to_dict() == LIBRARY.to_dict()

    changed = LIBRARY.to_dict()
    changed["dimensions"][0]["choices"][0]["guidance"] = "I go right"
    library_file.write_text(json.dumps(changed))
    saved = json.loads((run_dir / "config.json").read_text())
    with pytest.raises(RunError, match="differs from .*actions.json, the copy this run started with"):
        train(TrainConfig.from_dict({**saved, "steps": 2}), resume=True)
