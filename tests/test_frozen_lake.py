"""Tests of the FrozenLake text environment."""

import importlib
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.envs.toy_text.frozen_lake import MAPS as GYMNASIUM_MAPS
from gymnasium.utils.env_checker import check_env

import erlgym.envs
from erlgym.envs.frozen_lake import (
    FEW_SHOT_EXAMPLES,
    FrozenLakeTextEnv,
    generate_random_map,
    load_gymnasium_map,
)
from erlgym.envs.parser import parse_action

ENV_ID = "erlgym/FrozenLake-v0"
# Gymnasium's integer actions: LEFT=0, DOWN=1, RIGHT=2, UP=3.
GYMNASIUM_ACTIONS = {0: "left", 1: "down", 2: "right", 3: "up"}
PLAIN_SYMBOLS = set("PS_OG")


def strip_feedback(observation: str) -> str:
    """Return the grid and legend of a step observation, without its feedback line."""
    return observation.split("\n", 1)[1]


def grid_lines(observation: str) -> list[str]:
    return [line for line in observation.split("\n") if not line.startswith("Legend:")]


def reachable_cells(desc) -> set[tuple[int, int]]:
    """Flood-fill the non-hole cells reachable from S, independently of the env's BFS."""
    start = next((r, c) for r, row in enumerate(desc) for c, tile in enumerate(row) if tile == "S")
    seen, stack = {start}, [start]
    while stack:
        r, c = stack.pop()
        if desc[r][c] == "G":
            continue
        for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            inside = 0 <= nr < len(desc) and 0 <= nc < len(desc[0])
            if inside and (nr, nc) not in seen and desc[nr][nc] != "H":
                seen.add((nr, nc))
                stack.append((nr, nc))
    return seen


def distances_to_goal(desc) -> dict[tuple[int, int], int]:
    """Breadth-first distances from every safe cell to the nearest goal."""
    goals = [(r, c) for r, row in enumerate(desc) for c, tile in enumerate(row) if tile == "G"]
    distances = {goal: 0 for goal in goals}
    frontier = list(goals)
    while frontier:
        next_frontier = []
        for r, c in frontier:
            for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                inside = 0 <= nr < len(desc) and 0 <= nc < len(desc[0])
                if inside and (nr, nc) not in distances and desc[nr][nc] != "H":
                    distances[(nr, nc)] = distances[(r, c)] + 1
                    next_frontier.append((nr, nc))
        frontier = next_frontier
    return distances


# ---------------------------------------------------------------- Gymnasium checks


@pytest.mark.parametrize("symbols", ["plain", "hidden"])
def test_check_env_passes(symbols):
    env = gymnasium.make(ENV_ID, symbols=symbols).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env)


def test_make_builds_registered_env():
    env = gymnasium.make(ENV_ID, map_name="4x4")
    observation, _ = env.reset(seed=0)
    assert isinstance(env.unwrapped, FrozenLakeTextEnv)
    assert observation.startswith("P___\n_O_O\n___O\nO__G")


def test_make_vec_sync_steps_batch():
    envs = gymnasium.make_vec(ENV_ID, num_envs=2, vectorization_mode="sync", map_name="4x4")
    observations, _ = envs.reset(seed=0)
    assert len(observations) == 2
    observations, rewards, terminated, truncated, infos = envs.step(("Action: Right", "no idea"))
    assert observations[0].startswith("You moved right.")
    assert observations[1].startswith("Invalid action:")
    assert list(infos["action_valid"]) == [True, False]
    assert list(rewards) == [0.0, 0.0]
    envs.close()


def test_registration_is_idempotent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.reload(erlgym.envs)
        erlgym.envs.register_envs()
    assert gymnasium.spec(ENV_ID).entry_point == "erlgym.envs.frozen_lake:FrozenLakeTextEnv"


# ---------------------------------------------------------------- maps


@pytest.mark.parametrize("map_name", ["4x4", "8x8"])
def test_packaged_maps_match_gymnasium(map_name):
    assert list(load_gymnasium_map(map_name)) == GYMNASIUM_MAPS[map_name]


@pytest.mark.parametrize("size", range(2, 10))
def test_generated_maps_are_solvable(size):
    rng = np.random.default_rng(size)
    for _ in range(60):
        frozen_prob = rng.uniform(0.5, 0.9)
        desc = generate_random_map(rng, size, frozen_prob)
        text = "".join(desc)
        goal = next((r, c) for r, row in enumerate(desc) for c, tile in enumerate(row) if tile == "G")
        assert len(desc) == size
        assert all(len(row) == size for row in desc)
        assert text.count("S") == 1
        assert text.count("G") == 1
        assert set(text) <= set("SFHG")
        assert goal in reachable_cells(desc)


def test_episode_maps_are_solvable_within_limit():
    env = FrozenLakeTextEnv()
    sides = set()
    for seed in range(300):
        env.reset(seed=seed)
        sides.add(len(env.desc))
        assert env.desc[0] and len(env.desc) == len(env.desc[0])
        assert env.shortest_path_length is not None
        assert env.step_limit == 2 * env.shortest_path_length + 2
    assert sides == set(range(2, 10))


def test_generate_map_gives_up_after_max_attempts():
    with pytest.raises(RuntimeError, match="no solvable 9x9 map in 1 draws"):
        generate_random_map(np.random.default_rng(0), 9, 0.0, max_attempts=1)


def test_fixed_size_and_prob_are_used():
    env = FrozenLakeTextEnv(size=5, frozen_prob=1.0)
    env.reset(seed=1)
    assert len(env.desc) == 5
    assert "H" not in "".join(env.desc)


# ---------------------------------------------------------------- Gymnasium equivalence


def generated_desc(seed: int, size: int) -> list[str]:
    return list(generate_random_map(np.random.default_rng(seed), size, 0.75))


@pytest.mark.parametrize(
    "desc",
    [GYMNASIUM_MAPS["4x4"], GYMNASIUM_MAPS["8x8"], generated_desc(1, 5), generated_desc(2, 7)],
    ids=["4x4", "8x8", "generated5", "generated7"],
)
def test_moves_match_gymnasium_frozen_lake(desc):
    ours = FrozenLakeTextEnv(desc=desc, max_steps=1000)
    theirs = gymnasium.make("FrozenLake-v1", desc=desc, is_slippery=False).unwrapped
    num_cols = len(desc[0])
    rng = np.random.default_rng(0)
    num_episodes = 0
    for _ in range(150):
        ours.reset(seed=0)
        state, _ = theirs.reset(seed=0)
        assert ours.position == divmod(state, num_cols)
        for action in rng.integers(4, size=40):
            state, their_reward, their_end, _, _ = theirs.step(int(action))
            _, our_reward, our_end, truncated, info = ours.step(f"Action: {GYMNASIUM_ACTIONS[int(action)]}")
            assert ours.position == divmod(state, num_cols)
            assert our_reward == their_reward
            assert our_end == their_end
            assert not truncated
            assert info["success"] == (their_reward == 1.0)
            if their_end:
                num_episodes += 1
                break
    assert num_episodes > 50


# ---------------------------------------------------------------- determinism and symbols


def play(env, seed, replies):
    observations = [env.reset(seed=seed)[0]]
    for reply in replies:
        observation, reward, terminated, truncated, info = env.step(reply)
        observations.append((observation, reward, terminated, truncated, info))
        if terminated or truncated:
            break
    return observations


@pytest.mark.parametrize("symbols", ["plain", "hidden"])
def test_same_seed_same_episode(symbols):
    replies = ["Action: Right", "Action: Down", "junk", "Action: Left", "Action: Down"] * 3
    first = play(FrozenLakeTextEnv(symbols=symbols, is_slippery=True), 7, replies)
    second = play(FrozenLakeTextEnv(symbols=symbols, is_slippery=True), 7, replies)
    assert first == second


def test_different_seeds_draw_different_maps():
    env = FrozenLakeTextEnv()
    maps = set()
    for seed in range(20):
        env.reset(seed=seed)
        maps.add(env.desc)
    assert len(maps) > 15


def test_hidden_mode_remaps_symbols():
    plain = FrozenLakeTextEnv(size=6, frozen_prob=0.7)
    hidden = FrozenLakeTextEnv(size=6, frozen_prob=0.7, symbols="hidden")
    mappings = set()
    for seed in range(10):
        plain_observation, _ = plain.reset(seed=seed)
        hidden_observation, _ = hidden.reset(seed=seed)
        symbol_map = hidden.symbol_map
        letters = set(symbol_map.values())
        translation = str.maketrans({plain.symbol_map[role]: symbol_map[role] for role in symbol_map})
        assert hidden.desc == plain.desc
        assert len(letters) == 5
        assert all(letter.isupper() and letter.isalpha() for letter in letters)
        assert not letters & PLAIN_SYMBOLS
        assert "Legend" not in hidden_observation
        assert grid_lines(hidden_observation) == grid_lines(plain_observation.translate(translation))
        mappings.add(tuple(symbol_map.values()))
    assert len(mappings) > 5


def test_hidden_mode_hides_rules():
    hidden = FrozenLakeTextEnv(symbols="hidden")
    plain = FrozenLakeTextEnv()
    assert "hole" in plain.system_prompt
    assert "hole" not in hidden.system_prompt
    assert "O is" not in hidden.system_prompt
    assert "goal" in hidden.system_prompt
    assert "Action: <up|down|left|right>" in hidden.system_prompt


@pytest.mark.parametrize("symbols", ["plain", "hidden"])
@pytest.mark.parametrize("is_slippery", [False, True])
def test_system_prompt_is_short(symbols, is_slippery):
    prompt = FrozenLakeTextEnv(symbols=symbols, is_slippery=is_slippery).system_prompt
    assert len(prompt.split()) < 120


# ---------------------------------------------------------------- steps and feedback


def test_invalid_action_leaves_state_unchanged():
    env = FrozenLakeTextEnv(map_name="4x4")
    observation, _ = env.reset(seed=0)
    next_observation, reward, terminated, truncated, info = env.step("I am not sure.")
    assert env.position == (0, 0)
    assert strip_feedback(next_observation) == observation
    assert next_observation.startswith(
        "Invalid action: no action found in your reply. Reply with `Action: <up|down|left|right>`."
    )
    assert reward == 0.0
    assert not terminated
    assert not truncated
    assert info["action"] is None
    assert not info["action_valid"]
    assert not info["action_effective"]
    assert info["steps"] == 1
    assert info["num_invalid_actions"] == 1


def test_format_penalty_applies_to_invalid_only():
    env = FrozenLakeTextEnv(map_name="4x4", format_penalty=0.25)
    env.reset(seed=0)
    assert env.step("Action: jump")[1] == -0.25
    assert env.step("Action: right")[1] == 0.0


def test_edge_move_is_ineffective():
    env = FrozenLakeTextEnv(map_name="4x4")
    env.reset(seed=0)
    observation, _, _, _, info = env.step("Action: up")
    assert observation.startswith("Moving up had no effect: you are at the top edge.\nP___")
    assert info["action_valid"]
    assert not info["action_effective"]
    assert info["num_ineffective_actions"] == 1


def test_hole_ends_episode_with_feedback():
    env = FrozenLakeTextEnv(desc=["SF", "HG"])
    env.reset(seed=0)
    env.step("nothing")
    env.step("Action: right")
    env.step("Action: right")
    observation, reward, terminated, truncated, info = env.step("Action: left")
    observation, reward, terminated, truncated, info = env.step("Action: down")
    assert observation.startswith("You moved down and fell into a hole.\n")
    assert reward == 0.0
    assert terminated
    assert not truncated
    assert not info["success"]
    assert info["episode_feedback"] == (
        "Failed: you fell into a hole at row 2, column 1 after 4 moves. "
        "1 invalid action. 1 action had no effect."
    )


def test_goal_ends_episode_with_success():
    env = FrozenLakeTextEnv(desc=["SFF", "FFG"])
    env.reset(seed=0)
    env.step("Action: right")
    env.step("Action: right")
    observation, reward, terminated, truncated, info = env.step("Action: down")
    assert observation.startswith("You moved down and reached the goal.\nS_")
    assert reward == 1.0
    assert terminated
    assert not truncated
    assert info["success"]
    assert info["episode_feedback"] == "Succeeded in 3 moves."


def test_step_limit_truncates_with_feedback():
    env = FrozenLakeTextEnv(map_name="4x4", max_steps=3)
    env.reset(seed=0)
    env.step("Action: right")
    env.step("Action: up")
    observation, reward, terminated, truncated, info = env.step("???")
    assert observation.startswith("Invalid action:")
    assert "Step limit of 3 reached." in info["feedback"]
    assert not terminated
    assert truncated
    assert info["episode_feedback"] == (
        "Failed: step limit of 3 reached after 2 moves. 1 invalid action. 1 action had no effect."
    )


def test_default_step_limit_on_gymnasium_map():
    env = FrozenLakeTextEnv(map_name="4x4")
    env.reset(seed=0)
    assert env.step_limit == 14


def test_step_after_end_changes_nothing():
    env = FrozenLakeTextEnv(desc=["SG"])
    env.reset(seed=0)
    final_observation, _, _, _, _ = env.step("right")
    observation, reward, terminated, truncated, info = env.step("Action: left")
    assert observation == final_observation
    assert reward == 0.0
    assert terminated
    assert not truncated
    assert info["steps"] == 1
    assert info["feedback"].startswith("The episode has ended.")


def test_step_before_reset_raises():
    with pytest.raises(gymnasium.error.ResetNeeded):
        FrozenLakeTextEnv().step("Action: up")


def test_step_rejects_non_string():
    env = FrozenLakeTextEnv()
    env.reset(seed=0)
    with pytest.raises(TypeError, match="got int"):
        env.step(2)


def test_task_option_overrides_map():
    env = FrozenLakeTextEnv(map_name="8x8")
    env.reset(seed=0, options={"task": ["FSG"]})
    assert env.desc == ("FSG",)
    assert env.position == (0, 1)
    env.reset(seed=0, options={"task": "4x4"})
    assert env.desc == tuple(GYMNASIUM_MAPS["4x4"])
    env.reset(seed=0)
    assert env.desc == tuple(GYMNASIUM_MAPS["8x8"])


def test_slippery_moves_follow_gymnasium_odds():
    env = FrozenLakeTextEnv(desc=["FFFFF"] * 2 + ["FFSFF"] + ["FFFFF"] * 2 + ["GFFFF"], is_slippery=True)
    env.reset(seed=3)
    outcomes = {"up": 0, "left": 0, "right": 0}
    for _ in range(900):
        env.reset()
        env.step("Action: up")
        row, col = env.position
        outcome = {(1, 2): "up", (2, 1): "left", (2, 3): "right"}[(row, col)]
        outcomes[outcome] += 1
    for count in outcomes.values():
        assert 230 < count < 370


def test_slippery_feedback_names_slide():
    env = FrozenLakeTextEnv(desc=["FFF", "FSF", "FFG"], is_slippery=True)
    env.reset(seed=0)
    feedback = set()
    for _ in range(40):
        env.reset()
        feedback.add(env.step("Action: up")[4]["feedback"])
    assert feedback == {"You moved up.", "You tried to move up but slid left.", "You tried to move up but slid right."}


def test_render_ansi_returns_state():
    env = FrozenLakeTextEnv(map_name="4x4", render_mode="ansi")
    observation, _ = env.reset(seed=0)
    assert env.render() == observation
    assert FrozenLakeTextEnv().render() is None


# ---------------------------------------------------------------- few-shot examples


def test_few_shot_replies_follow_shortest_path():
    env = FrozenLakeTextEnv()
    messages = env.few_shot_messages()
    assert [message["role"] for message in messages] == ["user", "assistant"] * 3
    for (desc, position, _, action, _), reply in zip(FEW_SHOT_EXAMPLES, messages[1::2]):
        parsed = parse_action(reply["content"], env.actions)
        d_row, d_col = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}[parsed.action]
        distances = distances_to_goal(desc)
        next_cell = (position[0] + d_row, position[1] + d_col)
        assert parsed.action == action
        assert reply["content"].count("\n") <= 1
        assert distances[next_cell] == distances[position] - 1


def test_few_shot_observations_match_env_format():
    env = FrozenLakeTextEnv(desc=["SFF", "HHF", "FFG"])
    observation, _ = env.reset(seed=0)
    assert env.few_shot_messages(1)[0]["content"] == observation


def test_few_shot_hidden_mode_has_no_plain_symbols():
    messages = FrozenLakeTextEnv(symbols="hidden").few_shot_messages()
    first_grid = messages[0]["content"].split("\n")
    assert messages[1]["content"] == "Action: Right"
    assert "Legend" not in messages[0]["content"]
    assert not set("".join(first_grid)) & PLAIN_SYMBOLS


def test_few_shot_count_out_of_range():
    with pytest.raises(ValueError, match="num_examples=4 is out of range: use 0 to 3"):
        FrozenLakeTextEnv().few_shot_messages(4)


# ---------------------------------------------------------------- constructor checks


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"symbols": "secret"}, "symbols='secret' is invalid"),
        ({"max_steps": 0}, "max_steps=0 is invalid: use an int of at least 1"),
        ({"max_steps": 2.5}, "max_steps=2.5 is invalid"),
        ({"format_penalty": -0.1}, "format_penalty=-0.1 is invalid: use a finite number of at least 0.0"),
        ({"format_penalty": float("nan")}, "format_penalty=nan is invalid"),
        ({"render_mode": "human"}, "render_mode='human' is invalid: use None or 'ansi'"),
        ({"size": 1}, r"size=1 is invalid: use one int or a \(low, high\) pair with 2 <= low <= high <= 16"),
        ({"size": (5, 3)}, r"size=\(5, 3\) is invalid"),
        ({"size": (2, 17)}, r"size=\(2, 17\) is invalid"),
        ({"frozen_prob": 0.2}, r"frozen_prob=0.2 is invalid: .* 0.5 <= low <= high <= 1.0"),
        ({"frozen_prob": (0.9, 0.8)}, r"frozen_prob=\(0.9, 0.8\) is invalid"),
        ({"is_slippery": "yes"}, "is_slippery='yes' is invalid: use True or False"),
        ({"map_name": "5x5"}, r"map_name='5x5' is invalid: use one of \('4x4', '8x8'\)"),
        ({"map_name": "4x4", "desc": ["SG"]}, "desc and map_name='4x4' are both set"),
        ({"desc": ["SF", "G"]}, "strings of equal length"),
        ({"desc": "SFG"}, "desc='SFG' is invalid: use a non-empty list"),
        ({"desc": ["SXG"]}, r"invalid tiles \['X'\]"),
        ({"desc": ["SFS", "FFG"]}, "needs exactly one 'S' and at least one 'G', got 2 and 1"),
        ({"desc": ["SFF"]}, "got 1 and 0"),
    ],
)
def test_constructor_rejects_invalid_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FrozenLakeTextEnv(**kwargs)
