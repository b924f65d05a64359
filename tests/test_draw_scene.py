"""Tests of the DrawScene environment: clues, the image tool calls, rewards and feedback."""

import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import erlgym.envs  # noqa: F401  (registers the erlgym environments)
from erlgym.bitimage.checkpoint import ImageModelError
from erlgym.bitimage import checkpoint
from erlgym.bitimage.pipeline import train_image_model
from erlgym.bitimage.scenes import ATTRIBUTES as SCENE_ATTRIBUTES
from erlgym.bitimage.scenes import VOCABULARIES, Scene, all_scenes, parse_description
from erlgym.envs.draw_scene import (
    ATTRIBUTES,
    CLUE_TABLES,
    EVAL_SEED_START,
    EXAMPLE_TASK,
    DrawSceneTextEnv,
    DrawTask,
    coerce_task,
    draw_task,
    split_scenes,
)
from test_bitimage_pipeline import tiny_config

ENV_ID = "erlgym/DrawScene-v0"
VOCABULARY_LIST = "shape: circle, square, triangle, cross"
OTHER_WORD = {"shape": "circle", "colour": "red", "position": "center", "size": "small"}
"""A word per attribute to swap in when the target's word differs, else the fallback below."""
FALLBACK_WORD = {"shape": "square", "colour": "blue", "position": "top-left", "size": "large"}


def make_env(**kwargs) -> DrawSceneTextEnv:
    return gymnasium.make(ENV_ID, **kwargs).unwrapped


def draw(description: str) -> str:
    return f"Thinking about the clues.\nAction: draw[{description}]"


def wrong_word(attribute: str, target_word: str) -> str:
    return OTHER_WORD[attribute] if OTHER_WORD[attribute] != target_word else FALLBACK_WORD[attribute]


def play(env, seed, replies):
    trace = [env.reset(seed=seed)]
    for reply in replies:
        trace.append(env.step(reply))
        if trace[-1][2] or trace[-1][3]:
            break
    return trace


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """Train a tiny bitimage model in a few seconds. Its images are noise, so tests check files, not pixels."""
    return train_image_model(tiny_config(), out=tmp_path_factory.mktemp("bitimage") / "model")


# ---------------------------------------------------------------------- contract


@pytest.mark.parametrize("kwargs", [{}, {"direct": True}, {"partial_credit": True, "format_penalty": 0.1}])
def test_check_env_passes(kwargs):
    env = make_env(**kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env)


def test_same_seed_same_episode():
    replies = ["Action: vocabulary", "Action: draw[blue]", draw("large blue circle center")]
    first = play(make_env(), 7, replies)
    second = play(make_env(), 7, replies)
    assert first == second


def test_seeds_vary_targets_and_clues():
    env = make_env()
    observations = {env.reset(seed=seed)[0] for seed in range(40)}
    targets = {env.reset(seed=seed)[1]["target"] for seed in range(40)}
    assert len(observations) > 30
    assert len(targets) > 20


def test_reset_without_model_does_not_import_torch():
    code = (
        "import sys, gymnasium, erlgym.envs\n"
        "env = gymnasium.make('erlgym/DrawScene-v0')\n"
        "env.reset(seed=0)\n"
        "env.step('no tool call')\n"
        "print('torch' in sys.modules)\n"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    assert output.strip() == "False"


# ---------------------------------------------------------------------- clues and targets


def test_clue_tables_match_vocabularies():
    assert ATTRIBUTES == SCENE_ATTRIBUTES
    for attribute in ATTRIBUTES:
        assert tuple(CLUE_TABLES[attribute]) == VOCABULARIES[attribute], attribute


def test_every_word_has_three_clues_without_its_word():
    for attribute, table in CLUE_TABLES.items():
        for word, clues in table.items():
            assert len(clues) >= 3, word
            assert len(set(clues)) == len(clues), word
            for clue in clues:
                assert clue.isascii(), clue
                assert clue.isprintable(), clue
                assert not re.search(rf"\b{word}\b", clue), clue


@pytest.mark.parametrize("scene", all_scenes(), ids=lambda scene: scene.prompt)
def test_every_target_is_solvable(scene):
    env = make_env()
    for indices in _all_clue_indices(scene):
        task = DrawTask(**_scene_words(scene), clue_indices=indices)
        observation, info = env.reset(seed=0, options={"task": task})
        assert info["target"] == scene.prompt
        for attribute, word in _scene_words(scene).items():
            assert CLUE_TABLES[attribute][word][indices[ATTRIBUTES.index(attribute)]] in observation

        _, reward, terminated, truncated, info = env.step(draw(scene.prompt))
        assert reward == 1.0
        assert terminated
        assert not truncated
        assert info["success"]
        assert info["matched_attributes"] == 4


def _scene_words(scene: Scene) -> dict[str, str]:
    return {attribute: getattr(scene, attribute) for attribute in ATTRIBUTES}


def _all_clue_indices(scene: Scene) -> list[tuple[int, int, int, int]]:
    counts = [len(CLUE_TABLES[attribute][getattr(scene, attribute)]) for attribute in ATTRIBUTES]
    return [(0, 0, 0, 0), tuple(count - 1 for count in counts)]


def test_seeded_targets_are_solvable():
    env = make_env()
    for seed in range(30):
        _, info = env.reset(seed=seed)
        assert parse_description(info["target"]).prompt == info["target"]
        reward = env.step(draw(info["target"]))[1]
        assert reward == 1.0, seed


@pytest.mark.parametrize("split", ["train", "eval", "all"])
def test_draw_task_covers_vocabularies(split):
    rng = np.random.default_rng(0)
    tasks = [draw_task(rng, split) for _ in range(2000)]
    for attribute in ATTRIBUTES:
        assert {getattr(task, attribute) for task in tasks} == set(VOCABULARIES[attribute]), attribute


def test_splits_partition_scenes():
    train, evaluation = set(split_scenes("train")), set(split_scenes("eval"))

    assert len(train) == 192
    assert len(evaluation) == 48
    assert not train & evaluation
    assert train | evaluation == set(split_scenes("all"))


def test_draw_task_keeps_split_phrasings():
    rng = np.random.default_rng(1)
    for split in ("train", "eval"):
        scenes = set(split_scenes(split))
        for _ in range(300):
            task = draw_task(rng, split)
            assert tuple(task.attributes().values()) in scenes
            for attribute, index in zip(ATTRIBUTES, task.clue_indices):
                last = len(CLUE_TABLES[attribute][getattr(task, attribute)]) - 1
                assert (index == last) == (split == "eval"), (split, attribute, index)


def test_auto_split_follows_seed():
    env = make_env()
    evaluation = set(split_scenes("eval"))

    trained = [env.reset(seed=seed)[1]["target"] for seed in range(40)]
    held_out = [env.reset(seed=EVAL_SEED_START + seed)[1]["target"] for seed in range(40)]

    assert not any(_words(target) in evaluation for target in trained)
    assert all(_words(target) in evaluation for target in held_out)


def _words(target: str) -> tuple[str, str, str, str]:
    scene = parse_description(target)
    return tuple(getattr(scene, attribute) for attribute in ATTRIBUTES)


def test_fixed_split_ignores_seed():
    env = make_env(split="train")
    evaluation = set(split_scenes("eval"))

    targets = [env.reset(seed=EVAL_SEED_START + seed)[1]["target"] for seed in range(40)]

    assert not any(_words(target) in evaluation for target in targets)
    with pytest.raises(ValueError, match="split='test' is invalid"):
        DrawSceneTextEnv(split="test")


def test_few_shot_example_is_a_train_scene():
    assert tuple(EXAMPLE_TASK.attributes().values()) in set(split_scenes("train"))
    for attribute, index in zip(ATTRIBUTES, EXAMPLE_TASK.clue_indices):
        assert index < len(CLUE_TABLES[attribute][getattr(EXAMPLE_TASK, attribute)]) - 1


def test_direct_mode_states_words():
    env = make_env(direct=True)
    observation, _ = env.reset(seed=0, options={"task": Scene("cross", "white", "bottom-left", "small")})

    assert "- Shape: cross." in observation
    assert "- Colour: white." in observation
    assert "- Position: bottom-left." in observation
    assert "- Size: small." in observation


def test_coerce_task_rejects_bad_input():
    with pytest.raises(ValueError, match="colour='pink' is invalid"):
        coerce_task({"shape": "circle", "colour": "pink", "position": "center", "size": "small"})
    with pytest.raises(ValueError, match="is missing size"):
        coerce_task({"shape": "circle", "colour": "red", "position": "center"})
    with pytest.raises(ValueError, match="clue index 5"):
        coerce_task({"shape": "circle", "colour": "red", "position": "center", "size": "small",
                     "clue_indices": (0, 5, 0, 0)})
    with pytest.raises(ValueError, match="has type int"):
        coerce_task(3)


# ---------------------------------------------------------------------- rewards and feedback


@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_wrong_attribute_fails_without_revealing_target(attribute):
    env = make_env()
    _, info = env.reset(seed=5)
    target = parse_description(info["target"])
    drawn = _scene_words(target)
    drawn[attribute] = wrong_word(attribute, drawn[attribute])

    _, reward, terminated, _, info = env.step(draw(" ".join(drawn.values())))
    feedback = info["episode_feedback"]

    assert reward == 0.0
    assert terminated
    assert not info["success"]
    assert info["matched_attributes"] == 3
    assert feedback.startswith(f"Failed: the drawn {attribute} ({drawn[attribute]}) does not match its clue.")
    assert not re.search(rf"\b{getattr(target, attribute)}\b", feedback)


def test_wrong_attributes_listed_together():
    env = make_env()
    env.reset(seed=0, options={"task": Scene("circle", "red", "top-left", "large")})

    info = env.step(draw("large blue square top-left"))[4]

    assert info["episode_feedback"] == (
        "Failed: the drawn shape (square) and colour (blue) do not match their clues. "
        "The position and size were right."
    )


def test_partial_credit_gives_fraction_matched():
    env = make_env(partial_credit=True)
    for description, expected in [
        ("large red circle top-left", 1.0),
        ("large red circle center", 0.75),
        ("small blue circle center", 0.25),
        ("small blue square center", 0.0),
    ]:
        env.reset(seed=0, options={"task": Scene("circle", "red", "top-left", "large")})
        assert env.step(draw(description))[1] == expected, description


def test_missing_size_reads_as_large():
    env = make_env()
    env.reset(seed=0, options={"task": Scene("triangle", "yellow", "center", "large")})

    _, reward, _, _, info = env.step(draw("a yellow triangle in the middle"))

    assert reward == 1.0
    assert info["drawn"] == "large yellow triangle center"


# ---------------------------------------------------------------------- invalid replies


@pytest.mark.parametrize("reply, reason", [
    ("I think it is a red circle.", "no tool call found in your reply"),
    ("Action: paint[red circle center]", "'paint' is not a tool: use vocabulary or draw"),
    ("Action: draw[]", "draw needs a description, as in draw[...]"),
    ("Action: draw", "draw needs a description, as in draw[...]"),
    ("", "no tool call found in your reply"),
])
def test_malformed_reply_gets_feedback(reply, reason):
    env = make_env(format_penalty=0.5)
    env.reset(seed=0)

    observation, reward, terminated, truncated, info = env.step(reply)

    assert info["feedback"].startswith(f"Invalid tool call: {reason}.")
    assert "Action: draw[" in info["feedback"]
    assert reward == -0.5
    assert not terminated
    assert not truncated
    assert not info["action_valid"]
    assert info["action"] is None
    assert info["num_invalid_actions"] == 1
    assert observation.endswith("Steps left: 2.")


@pytest.mark.parametrize("description, error", [
    ("navy circle center", "unknown word 'navy'"),
    ("red circle", "has no position"),
    ("red blue circle center", "names two values of colour"),
    ("red circle center " + "very " * 60, "more than 200"),
])
def test_invalid_description_returns_tool_error(description, error):
    env = make_env()
    env.reset(seed=0)

    observation, reward, terminated, _, info = env.step(draw(description))

    assert info["feedback"].startswith("The image tool rejected the description:")
    assert error in info["feedback"]
    assert error in observation
    assert reward == 0.0
    assert not terminated
    assert not info["action_valid"]
    assert info["steps"] == 1


def test_unknown_word_lists_vocabulary():
    env = make_env()
    env.reset(seed=0)

    info = env.step(draw("tiny green triangle bottom-right"))[4]

    assert VOCABULARY_LIST in info["feedback"]
    assert "size: small, large" in info["feedback"]


def test_non_ascii_description_is_folded():
    env = make_env()
    env.reset(seed=0)

    observation, _, _, _, info = env.step(draw("rød sirkel ☀ center"))

    assert observation in env.observation_space
    assert info["feedback"].isascii()


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(reply=st.text() | st.text(min_size=1, max_size=20).map(lambda chunk: chunk * 5_000)
       | st.text().map(lambda text: f"Action: draw[{text}]") | st.text().map(lambda text: f"vocabulary[{text}]"))
def test_step_never_raises_on_text(reply):
    env = make_env(max_steps=2)
    env.reset(seed=0)

    observation, reward, terminated, truncated, info = env.step(reply)

    assert observation in env.observation_space
    assert isinstance(reward, float)
    assert isinstance(info["feedback"], str)


# ---------------------------------------------------------------------- tools and step limit


@pytest.mark.parametrize("reply", ["Action: vocabulary", "Action: Vocabulary[]", "vocabulary[]",
                                   "**Action:** vocabulary()", "Action: vocabulary[all words]"])
def test_vocabulary_call_variants(reply):
    env = make_env()
    env.reset(seed=0)

    observation, reward, terminated, _, info = env.step(reply)

    assert info["action"] == "vocabulary"
    assert info["action_valid"]
    assert info["action_effective"]
    assert VOCABULARY_LIST in observation
    assert reward == 0.0
    assert not terminated


def test_vocabulary_call_not_a_prefix_match():
    env = make_env()
    env.reset(seed=0)

    info = env.step("Action: vocabularyx")[4]

    assert not info["action_valid"]


def test_step_limit_truncates_without_drawing():
    env = make_env(max_steps=2)
    env.reset(seed=0)

    first = env.step("Action: vocabulary")
    observation, reward, terminated, truncated, info = env.step("Action: vocabulary")

    assert first[0].endswith("Steps left: 1. Your next reply must draw: Action: draw[<description>].")
    assert truncated
    assert not terminated
    assert reward == 0.0
    assert not info["action_effective"]
    assert info["num_ineffective_actions"] == 1
    assert observation.endswith("Step limit of 2 reached.")
    assert info["episode_feedback"] == "Failed: step limit of 2 reached without a drawing."


def test_episode_feedback_counts_rejected_descriptions():
    env = make_env()
    env.reset(seed=0, options={"task": Scene("circle", "red", "top-left", "large")})
    env.step("no call")
    env.step(draw("scarlet circle top-left"))

    info = env.step(draw("large red circle top-left"))[4]

    assert info["episode_feedback"] == (
        "Succeeded: your drawing of a large red circle top-left matches every clue. "
        "2 invalid tool calls, 1 of them a description the image tool rejected."
    )


def test_step_after_end_changes_nothing():
    env = make_env()
    env.reset(seed=0)
    observation = env.step(draw("large red circle top-left"))[0]

    again = env.step(draw("large red circle top-left"))

    assert again[0] == observation
    assert again[1] == 0.0
    assert again[2]
    assert again[4]["feedback"].startswith("The episode has ended")


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="max_steps=0"):
        DrawSceneTextEnv(max_steps=0)
    with pytest.raises(ValueError, match="format_penalty=-1"):
        DrawSceneTextEnv(format_penalty=-1)
    with pytest.raises(ImageModelError, match="not found"):
        DrawSceneTextEnv(model="/nonexistent/bitimage-model")


# ---------------------------------------------------------------------- prompts


def test_system_prompt_names_tools():
    prompt = make_env(max_steps=4).system_prompt

    assert "Action: draw[<size> <colour> <shape> <position>]" in prompt
    assert "Action: vocabulary[]" in prompt
    assert "You have 4 steps." in prompt


def test_few_shot_example_solves_its_task():
    env = make_env()
    messages = env.few_shot_messages()
    clues = EXAMPLE_TASK.clues()

    assert len(messages) == 6
    assert clues["shape"] == "the shape of a yield road sign"
    assert clues["size"] == "no bigger than a postage stamp on an envelope"
    assert clues["shape"] in messages[0]["content"]
    assert "Valid words are" in messages[4]["content"]
    assert messages[5]["content"].endswith(f"Action: draw[{EXAMPLE_TASK.prompt}]")
    with pytest.raises(ValueError, match="use 0 to 3"):
        env.few_shot_messages(4)


# ---------------------------------------------------------------------- images


def test_no_model_writes_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = make_env()
    env.reset(seed=0, options={"task": Scene("square", "purple", "center", "small")})

    info = env.step(draw("small purple square center"))[4]

    assert info["image_path"] is None
    assert env.last_image.shape == (32, 32, 3)
    assert env.last_image[16, 16].tolist() != [0, 0, 0]
    assert list(tmp_path.iterdir()) == []


def test_no_model_with_image_dir_writes_png(tmp_path):
    env = make_env(image_dir=tmp_path / "images")
    env.reset(seed=0, options={"task": Scene("square", "purple", "center", "small")})

    observation, _, _, _, info = env.step(draw("small purple square center"))
    path = Path(info["image_path"])

    assert path.parent == tmp_path / "images"
    assert path.name in observation
    with Image.open(path) as image:
        assert image.size == (128, 128)


@pytest.mark.slow
def test_model_draw_writes_png(tiny_model, tmp_path):
    env = make_env(model=str(tiny_model), image_dir=tmp_path)
    env.reset(seed=3, options={"task": Scene("cross", "green", "top-right", "large")})

    observation, reward, terminated, _, info = env.step(draw("large green cross top-right"))
    path = Path(info["image_path"])

    assert reward == 1.0
    assert terminated
    assert path.is_file()
    assert path.parent == tmp_path
    assert path.name in observation
    assert env.last_image.shape == (32, 32, 3)


@pytest.mark.slow
def test_bundled_model_draws_with_checkpoint(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "BUNDLED_CHECKPOINT", tiny_model)
    env = make_env(model="bundled", image_dir=tmp_path)
    env.reset(seed=3, options={"task": Scene("cross", "green", "top-right", "large")})

    _, reward, _, _, info = env.step(draw("large green cross top-right"))

    assert env.use_bundled_model
    assert reward == 1.0
    assert Path(info["image_path"]).parent == tmp_path


def test_bundled_model_missing_raises(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "BUNDLED_CHECKPOINT", tmp_path / "checkpoint")

    with pytest.raises(ImageModelError, match="no bundled bitimage checkpoint is installed"):
        DrawSceneTextEnv(model="bundled")


@pytest.mark.slow
def test_model_draw_is_deterministic_per_seed(tiny_model, tmp_path):
    images = []
    for folder in ("first", "second"):
        env = make_env(model=str(tiny_model), image_dir=tmp_path / folder)
        env.reset(seed=3)
        env.step(draw("small blue circle center"))
        images.append(env.last_image)

    assert (images[0] == images[1]).all()


@pytest.mark.slow
def test_model_without_image_dir_uses_temp_folder(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    env = make_env(model=str(tiny_model))
    env.reset(seed=0)

    info = env.step(draw("small blue circle center"))[4]

    assert Path(info["image_path"]).is_file()
    assert Path(info["image_path"]).parent.parent == tmp_path
    assert Path(info["image_path"]).parent.name.startswith("erlgym-draw-scene-")


@pytest.mark.slow
def test_model_rejects_description_with_tool_error(tiny_model, tmp_path):
    env = make_env(model=str(tiny_model), image_dir=tmp_path)
    env.reset(seed=0)

    info = env.step(draw("navy circle center"))[4]

    assert "unknown word 'navy'" in info["feedback"]
    assert VOCABULARY_LIST in info["feedback"]
    assert info["image_path"] is None
    assert list(tmp_path.iterdir()) == []


def test_trains_one_erl_step(action_model_dir, tmp_path):
    """erlgym's trainer runs on DrawScene: attempts, reflections and retries with the tiny action model."""
    import json

    from erlgym.erl.run import train
    from tiny_model import tiny_train_config

    run_dir = train(tiny_train_config(action_model_dir, env="erlgym/DrawScene-v0", env_kwargs={}, steps=1,
                                      output_dir=str(tmp_path / "run")))

    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert record["step"] == 1
    assert 0.0 <= record["rollout/first_success_rate"] <= 1.0
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"


def test_parser_accepts_empty_argument_only_where_allowed():
    from erlgym.envs.tool_calls import ToolCallParser

    parser = ToolCallParser(("draw", "vocabulary"), no_argument_tools=("vocabulary",))

    for reply in ("Action: vocabulary", "Action: vocabulary[]", "vocabulary[]"):
        assert parser.parse(reply).call is not None
        assert parser.parse(reply).call.argument == ""
    assert parser.parse("Action: draw[]").call is None
    assert "draw needs" in parser.parse("Action: draw[]").error
    with pytest.raises(ValueError, match="not among the tools"):
        ToolCallParser(("draw",), no_argument_tools=("vocabulary",))


def test_unwritable_image_dir_raises(tmp_path):
    file = tmp_path / "square.png"
    file.write_bytes(b"png")

    with pytest.raises(ValueError, match="is not a writable folder"):
        DrawSceneTextEnv(image_dir=file)
    assert file.read_bytes() == b"png"


@pytest.mark.slow
def test_shared_image_dir_keeps_every_drawing(tiny_model, tmp_path):
    first = make_env(model=str(tiny_model), image_dir=tmp_path)
    second = make_env(model=str(tiny_model), image_dir=tmp_path)
    paths = []
    for env, seed in ((first, 1), (second, 2)):
        env.reset(seed=seed, options={"task": Scene("circle", "red", "center", "large")})
        paths.append(env.step(draw("red circle center"))[4]["image_path"])

    assert paths[0] != paths[1]
    assert len(list(tmp_path.iterdir())) == 2


@pytest.mark.slow
def test_close_deletes_temporary_image_folder(tiny_model):
    env = make_env(model=str(tiny_model))
    env.reset(seed=0, options={"task": Scene("circle", "red", "center", "large")})
    path = Path(env.step(draw("red circle center"))[4]["image_path"])
    assert path.is_file()

    env.close()

    assert not path.parent.exists()


def test_image_judge_rewards_correct_render():
    env = make_env(judge="image")
    env.reset(seed=0, options={"task": Scene("triangle", "yellow", "top-right", "small")})

    _, reward, terminated, _, info = env.step(draw("small yellow triangle top-right"))

    assert reward == 1.0
    assert terminated
    assert info["seen"] == info["drawn"]


@pytest.mark.slow
def test_image_judge_reads_pixels_not_words(tiny_model, tmp_path):
    # The tiny model's images are noise, so the verifier reads some other scene than the words.
    env = make_env(model=str(tiny_model), image_dir=tmp_path, judge="image", partial_credit=True)
    rewards, feedback = [], []
    for seed in range(4):
        env.reset(seed=seed, options={"task": Scene("cross", "green", "top-left", "large")})
        _, reward, _, _, info = env.step(draw("large green cross top-left"))
        rewards.append(reward)
        feedback.append(info["episode_feedback"])
        assert info["drawn"] == "large green cross top-left"
        assert reward == info["matched_attributes"] / 4

    assert min(rewards) < 1.0
    assert any("The image shows a" in text for text in feedback)


def test_invalid_judge_raises():
    with pytest.raises(ValueError, match="judge='pixels' is invalid"):
        DrawSceneTextEnv(judge="pixels")
