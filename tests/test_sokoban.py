"""Tests for the Sokoban text environment, ``erlgym/Sokoban-v0``."""

from __future__ import annotations

import dataclasses
import string
import warnings

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erlgym.envs import sokoban_levels, sokoban_solver
from erlgym.envs.sokoban import (
    FEW_SHOT_EXAMPLES,
    FILE_LEVEL_STEP_LIMIT,
    PLAIN_SYMBOLS,
    SokobanTextEnv,
)
from erlgym.envs.sokoban_levels import LevelFormatError, SokobanState, generate_room

# Player in the middle with a box on every side but the left:
#   up: box with floor beyond, right: box with a target beyond,
#   down: box with another box beyond. Left is floor, then wall.
PUSH_BOARD = """\
#######
#    .#
## $  #
#  @$.#
#  $  #
#  $. #
#.    #
#######
"""

CORRIDOR = "######\n#@$ .#\n######"


def make_env(**kwargs) -> SokobanTextEnv:
    return gymnasium.make("erlgym/Sokoban-v0", **kwargs).unwrapped


def plain_grid(env: SokobanTextEnv) -> str:
    return sokoban_levels.format_board(env.level, env.state)


def play(env: SokobanTextEnv, moves: list[str]):
    result = None
    for move in moves:
        result = env.step(f"Action: {move.capitalize()}")
    return result


# ---------------------------------------------------------------------------
# Gymnasium contract


@pytest.mark.parametrize("symbols", ["plain", "hidden"])
def test_check_env_on_generated_rooms(symbols):
    env = make_env(symbols=symbols)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env)


@pytest.mark.parametrize("symbols", ["plain", "hidden"])
def test_check_env_on_boxoban_levels(symbols):
    env = make_env(symbols=symbols, level_collection="boxoban-medium")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env)


def test_make_returns_sokoban_env():
    env = make_env()

    assert isinstance(env, SokobanTextEnv)
    assert env.action_names == ("up", "down", "left", "right")


# ---------------------------------------------------------------------------
# Seeds and symbol modes


@pytest.mark.parametrize("symbols", ["plain", "hidden"])
def test_same_seed_same_room(symbols):
    first, _ = make_env(symbols=symbols).reset(seed=5)
    second, _ = make_env(symbols=symbols).reset(seed=5)

    assert first == second


def test_different_seeds_different_rooms():
    env = make_env()
    boards = set()
    for seed in range(12):
        env.reset(seed=seed)
        boards.add(plain_grid(env))

    assert len(boards) >= 10


def test_plain_and_hidden_share_the_room():
    plain = make_env(symbols="plain")
    hidden = make_env(symbols="hidden")
    plain.reset(seed=9)
    hidden.reset(seed=9)

    assert plain.level == hidden.level
    assert plain.solution == hidden.solution


def test_hidden_observation_maps_back_to_plain():
    env = make_env(symbols="hidden")
    observation, _ = env.reset(seed=4)
    letter_to_role = {letter: role for role, letter in env.symbol_map.items()}
    role_to_plain = dict(PLAIN_SYMBOLS)
    decoded = "\n".join(
        "".join(role_to_plain[letter_to_role[letter]] for letter in row)
        for row in observation.splitlines()
    )

    assert decoded == plain_grid(env).replace(" ", "_")


def test_hidden_observation_uses_only_letters():
    env = make_env(symbols="hidden")
    for seed in range(5):
        observation, _ = env.reset(seed=seed)

        assert set(observation) <= set(string.ascii_uppercase) | {"\n"}, seed
        assert "Legend" not in observation, seed
        assert len(set(env.symbol_map.values())) == len(PLAIN_SYMBOLS), seed


def test_hidden_letters_vary_with_seed():
    env = make_env(symbols="hidden")
    maps = set()
    for seed in range(6):
        env.reset(seed=seed)
        maps.add(tuple(sorted(env.symbol_map.items())))

    assert len(maps) >= 5


def test_plain_observation_has_grid_and_legend():
    env = make_env()
    observation, _ = env.reset(seed=0)
    lines = observation.splitlines()

    assert lines[-1].startswith("Legend: @ you")
    assert "\n".join(lines[:-1]) == plain_grid(env).replace(" ", "_")


def test_hidden_system_prompt_states_no_rules():
    prompt = make_env(symbols="hidden").system_prompt

    assert "box" not in prompt.lower()
    assert "target" not in prompt.lower()
    assert "Action: <up|down|left|right>" in prompt


def test_plain_system_prompt_is_short():
    prompt = make_env().system_prompt

    assert len(prompt.split()) <= 150
    assert "push" in prompt.lower()


# ---------------------------------------------------------------------------
# Push rules through step

PUSH_CASES = [
    # action, effective, feedback, player after, box moved (from, to) or None
    ("left", True, "You moved left.", (3, 2), None),
    ("up", True, "You pushed a box up.", (2, 3), ((2, 3), (1, 3))),
    ("right", True, "You pushed a box right onto a target.", (3, 4), ((3, 4), (3, 5))),
    (
        "down",
        False,
        "Moving down had no effect: the box cannot be pushed into another box.",
        (3, 3),
        None,
    ),
]


@pytest.mark.parametrize(("action", "effective", "feedback", "player", "box_move"), PUSH_CASES)
def test_push_rules_through_step(action, effective, feedback, player, box_move):
    env = make_env()
    env.reset(seed=0, options={"task": PUSH_BOARD})
    boxes_before = env.state.boxes
    observation, reward, terminated, _, info = env.step(f"Action: {action}")

    assert info["action_effective"] is effective
    assert info["feedback"] == feedback
    assert observation.splitlines()[0] == feedback
    assert env.state.player == player
    assert reward == 0.0
    assert not terminated
    if box_move is None:
        assert env.state.boxes == boxes_before
    else:
        old, new = box_move
        assert env.state.boxes == (boxes_before - {old}) | {new}


def test_move_into_wall_has_no_effect():
    env = make_env()
    env.reset(seed=0, options={"task": "#####\n#@$.#\n#####"})
    _, _, _, _, info = env.step("left")

    assert not info["action_effective"]
    assert info["feedback"] == "Moving left had no effect: a wall is there."
    assert info["num_ineffective_actions"] == 1


def test_push_into_wall_has_no_effect():
    env = make_env()
    env.reset(seed=0, options={"task": "######\n#  $@#\n#   .#\n######"})
    play(env, ["left", "left"])
    _, _, _, _, info = env.step("left")

    assert not info["action_effective"]
    assert info["feedback"] == "Moving left had no effect: the box cannot be pushed into a wall."


def test_push_off_target_is_reported():
    env = make_env()
    env.reset(seed=0, options={"task": "#######\n#@* . #\n#  $  #\n#######"})
    _, _, _, _, info = env.step("right")

    assert info["feedback"] == "You pushed a box right off its target."


def test_push_into_dead_cell_is_reported():
    env = make_env()
    env.reset(seed=0, options={"task": "######\n#    #\n# $@ #\n#   .#\n######"})
    _, _, _, _, info = env.step("left")

    assert info["feedback"] == "You pushed a box left. That box can no longer reach a target."


def test_invalid_action_leaves_state_unchanged():
    env = make_env(format_penalty=0.25)
    observation, _ = env.reset(seed=2)
    state = env.state
    after, reward, terminated, truncated, info = env.step("I am not sure what to do")

    assert env.state == state
    assert after.splitlines()[1:] == observation.splitlines()
    assert after.splitlines()[0].startswith("Invalid action:")
    assert reward == -0.25
    assert not info["action_valid"]
    assert info["num_invalid_actions"] == 1
    assert info["steps"] == 1
    assert not terminated
    assert not truncated


# ---------------------------------------------------------------------------
# Episode end


def test_solving_ends_with_reward_and_summary():
    env = make_env()
    env.reset(seed=0, options={"task": CORRIDOR})
    _, reward, terminated, truncated, info = play(env, ["right", "right"])

    assert reward == 1.0
    assert terminated
    assert not truncated
    assert info["success"]
    assert info["feedback"] == "You pushed a box right onto a target. All boxes are on targets."
    assert info["episode_feedback"] == "Succeeded in 2 moves."


def test_generated_room_summary_names_shortest_solution():
    env = make_env()
    env.reset(seed=1)
    moves = len(env.solution)
    _, _, _, _, info = play(env, env.solution)

    assert info["episode_feedback"] == (
        f"Succeeded in {moves} moves. The shortest solution has {moves} moves."
    )


def test_step_limit_summary_counts_boxes_and_blocked_moves():
    env = make_env(max_steps=5)
    env.reset(seed=0, options={"task": "########\n#@$  . #\n#  $ . #\n########"})
    _, reward, terminated, truncated, info = play(env, ["up", "left", "right", "right", "right"])

    assert reward == 0.0
    assert truncated
    assert not terminated
    summary = info["episode_feedback"]
    assert summary.startswith("Failed: step limit of 5 reached after 5 moves.")
    assert "2 actions had no effect." in summary
    assert "1 of 2 boxes on targets." in summary
    assert "Blocked moves: 2 into a wall." in summary


def test_step_limit_summary_names_box_pushed_into_wall():
    env = make_env(max_steps=3)
    env.reset(seed=0, options={"task": "#####\n#$@ #\n#.  #\n#####"})
    _, _, _, truncated, info = play(env, ["left", "right", "down"])

    assert truncated
    summary = info["episode_feedback"]
    assert "0 of 1 boxes on targets." in summary
    assert "Blocked moves: 1 pushing a box into a wall." in summary


def test_step_limit_summary_names_stuck_box():
    env = make_env(max_steps=2)
    env.reset(seed=0, options={"task": "######\n#    #\n# $@ #\n#   .#\n######"})
    _, _, _, truncated, info = play(env, ["left", "left"])

    assert truncated
    assert "1 box is stuck where no push can bring it to a target." in info["episode_feedback"]
    assert "Blocked moves: 1 pushing a box into a wall." in info["episode_feedback"]


def test_default_step_limit_for_generated_rooms():
    env = make_env()
    for seed in range(5):
        env.reset(seed=seed)

        assert env.step_limit == 2 * len(env.solution) + 10, seed


def test_default_step_limit_for_file_levels():
    env = make_env(level_collection="grigr2001")
    env.reset(seed=0)

    assert env.solution is None
    assert env.step_limit == FILE_LEVEL_STEP_LIMIT


def test_max_steps_overrides_default_limit():
    env = make_env(max_steps=7)
    env.reset(seed=0)

    assert env.step_limit == 7


# ---------------------------------------------------------------------------
# Solutions replay through the environment


def test_solver_solutions_replay_through_env():
    env = make_env(num_boxes=2, max_solution_moves=25)
    for seed in range(20):
        env.reset(seed=seed)
        _, reward, terminated, _, info = play(env, env.solution)

        assert reward == 1.0, seed
        assert terminated, seed
        assert info["success"], seed
        assert info["steps"] == len(env.solution), seed


@pytest.mark.parametrize(("collection", "index"), [("grigr2001", 62), ("boxoban-medium", 2)])
def test_solver_solves_file_level_through_env(collection, index):
    env = make_env(level_collection=collection, level_index=index, max_steps=500)
    env.reset(seed=0)
    solution = sokoban_solver.solve(env.level, max_nodes=20_000)
    _, reward, terminated, _, _ = play(env, solution)

    assert reward == 1.0
    assert terminated


# ---------------------------------------------------------------------------
# Level sources and tasks


def test_level_collection_with_index():
    env = make_env(level_collection="grigr2001", level_index=0)
    env.reset(seed=3)

    assert env.level.name == "Bardak #01"


def test_level_collection_index_drawn_from_seed():
    env = make_env(level_collection="boxoban-medium")
    names = set()
    for seed in range(5):
        env.reset(seed=seed)
        names.add(env.level.name)
    again = make_env(level_collection="boxoban-medium")
    again.reset(seed=4)

    assert len(names) >= 4
    assert again.level == env.level


def test_level_file_argument(tmp_path):
    path = tmp_path / "two.xsb"
    path.write_text("; a\n" + CORRIDOR + "\n\n; b\n#####\n#@$.#\n#####\n")
    env = make_env(level_file=path, level_index=1)
    observation, _ = env.reset(seed=0)

    assert env.level.name == "b"
    assert observation.splitlines()[1] == "#@$.#"


def test_malformed_level_file_raises_at_construction(tmp_path):
    path = tmp_path / "bad.xsb"
    path.write_text("#####\n#@$ #\n#####\n")

    with pytest.raises(
        LevelFormatError, match=f"{path.name}:1: box count 1 differs from target count 0"
    ):
        make_env(level_file=path)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"level_file": "x.xsb", "level_collection": "grigr2001"},
        {"level_index": 0},
        {"level_collection": "grigr2001", "level_index": 100},
        {"level_collection": "grigr2001", "level_index": -1},
        {"level_collection": "sokoban-classic"},
        {"num_boxes": 0},
        {"min_side": 9, "max_side": 8},
        {"min_solution_moves": 30, "max_solution_moves": 20},
    ],
)
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        SokobanTextEnv(**kwargs)


def test_oversized_board_rejected(tmp_path):
    path = tmp_path / "huge.xsb"
    wide = "#" * 120
    path.write_text(
        "\n".join([wide, "#@$." + " " * 115 + "#"] + ["#" + " " * 118 + "#"] * 60 + [wide])
    )

    with pytest.raises(ValueError, match="characters"):
        make_env(level_file=path)


def test_task_int_is_generation_seed():
    env = make_env(num_boxes=2)
    env.reset(seed=0, options={"task": 17})
    room = generate_room(17, num_boxes=2)

    assert env.level == room.level
    assert env.solution == room.solution


def test_task_int_is_index_for_collections():
    env = make_env(level_collection="grigr2001")
    env.reset(seed=0, options={"task": 99})

    assert env.level.name == "Only you #100"


def test_task_text_board():
    env = make_env()
    observation, _ = env.reset(seed=0, options={"task": CORRIDOR})

    assert observation.splitlines()[:3] == ["######", "#@$_.#", "######"]
    assert env.step_limit == FILE_LEVEL_STEP_LIMIT


def test_task_level_object():
    level = sokoban_levels.load_collection("boxoban-medium")[7]
    env = make_env()
    env.reset(seed=0, options={"task": level})

    assert env.level is level


def test_task_dict_selects_collection():
    env = make_env()
    env.reset(seed=0, options={"task": {"level_collection": "grigr2001", "level_index": 1}})

    assert env.level.name == "Original conversion (42) #02"


def test_task_applies_to_one_episode():
    env = make_env()
    env.reset(seed=0, options={"task": CORRIDOR})
    env.reset(seed=0)

    assert env.level != sokoban_levels.parse_levels(CORRIDOR)[0]
    assert env.solution is not None


@pytest.mark.parametrize(
    "task",
    [
        True,
        2.5,
        "no board here",
        CORRIDOR + "\n\n" + CORRIDOR,
        {"level_index": 1},
        {"level_collection": "grigr2001", "seed": 1},
    ],
)
def test_invalid_task_raises(task):
    env = make_env()

    with pytest.raises(ValueError):
        env.reset(seed=0, options={"task": task})


# ---------------------------------------------------------------------------
# Text protocol


def test_aliases_and_tags_are_accepted():
    env = make_env()
    env.reset(seed=0, options={"task": CORRIDOR})
    _, _, _, _, info = env.step("<action>r</action>")

    assert info["action"] == "right"
    assert info["action_effective"]


def test_render_ansi_returns_grid():
    env = make_env(render_mode="ansi")
    observation, _ = env.reset(seed=0)

    assert env.render() == observation


@pytest.mark.parametrize("symbols", ["plain", "hidden"])
def test_few_shot_actions_start_shortest_solutions(symbols):
    env = make_env(symbols=symbols)
    messages = env.few_shot_messages()
    levels = [sokoban_levels.parse_levels(board)[0] for board, *_ in FEW_SHOT_EXAMPLES]
    replies = [message["content"] for message in messages[1::2]]

    assert len(messages) == 6
    for level, reply in zip(levels, replies, strict=True):
        lines = reply.splitlines()
        action = lines[-1].removeprefix("Action: ").lower()
        after, _ = sokoban_levels.apply_move(level, level.initial_state, action)
        moved = dataclasses.replace(level, player=after.player, boxes=after.boxes)

        assert len(lines) <= 2
        assert lines[-1].startswith("Action: ")
        assert len(sokoban_solver.solve(moved)) == len(sokoban_solver.solve(level)) - 1


def test_hidden_few_shot_observations_use_letters():
    env = make_env(symbols="hidden")
    observations = [message["content"] for message in env.few_shot_messages()[0::2]]
    for observation, (board, feedback, _, _) in zip(observations, FEW_SHOT_EXAMPLES, strict=True):
        lines = observation.splitlines()
        grid = lines[1:] if feedback is not None else lines

        assert len(grid) == len(board.splitlines())
        assert set("".join(grid)) <= set(string.ascii_uppercase)


def test_step_after_episode_end_changes_nothing():
    env = make_env()
    env.reset(seed=0, options={"task": CORRIDOR})
    play(env, ["right", "right"])
    state = env.state
    _, reward, terminated, _, _ = env.step("left")

    assert env.state == state
    assert reward == 0.0
    assert terminated


@pytest.mark.parametrize("symbols", ["plain", "hidden"])
def test_step_never_raises_on_text(symbols):
    env = make_env(symbols=symbols, max_steps=50)
    env.reset(seed=0)

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(reply=st.text() | st.sampled_from(["up", "Action: Left", "d", "<action>right</action>"]))
    def step_once(reply):
        observation, reward, terminated, truncated, info = env.step(reply)

        assert observation in env.observation_space
        assert isinstance(reward, float)
        assert isinstance(env.state, SokobanState)
        assert info["steps"] <= env.step_limit
        if terminated or truncated:
            assert "episode_feedback" in info
            env.reset()

    step_once()
