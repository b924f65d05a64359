"""Tests for Sokoban level parsing, the push rules, room generation and the solver."""

from __future__ import annotations

import re
from collections import deque

import pytest

from erlgym.envs import sokoban_levels, sokoban_solver
from erlgym.envs.sokoban_levels import (
    LevelFormatError,
    MoveOutcome,
    SokobanLevel,
    apply_move,
    format_board,
    generate_room,
    is_solved,
    load_collection,
    load_level_file,
    parse_levels,
    replay,
)

CORRIDOR = "#####\n#@$.#\n#####\n"


def parse_one(text: str) -> SokobanLevel:
    levels = parse_levels(text)
    assert len(levels) == 1
    return levels[0]


def shortest_solution_length(level: SokobanLevel) -> int | None:
    """Breadth-first search over single moves, independent of the solver."""
    start = level.initial_state
    seen = {start}
    queue = deque([(start, 0)])
    while queue:
        state, depth = queue.popleft()
        if is_solved(level, state):
            return depth
        for direction in sokoban_levels.DIRECTIONS:
            next_state, outcome = apply_move(level, state, direction)
            if outcome.changed_state and next_state not in seen:
                seen.add(next_state)
                queue.append((next_state, depth + 1))
    return None


# ---------------------------------------------------------------------------
# Packaged collections


def test_grigr2001_parses_all_boards():
    levels = load_collection("grigr2001")

    assert len(levels) == 100
    for level in levels:
        assert level.boxes, level.name
        assert len(level.boxes) == len(level.targets), level.name
        assert level.player not in level.walls, level.name
        assert not level.boxes & level.walls, level.name


def test_grigr2001_titles_and_sizes():
    levels = load_collection("grigr2001")

    assert levels[0].name == "Bardak #01"
    assert levels[99].name == "Only you #100"
    assert (levels[0].height, levels[0].width) == (16, 19)
    assert levels[0].source.endswith("Grigr2001_100.xsb:13")


def test_grigr2001_ragged_rows_padded_with_wall_outside():
    level = load_collection("grigr2001")[1]
    rows = format_board(level).splitlines()

    assert len({len(row) for row in rows}) == 1
    assert rows[0] == "#" * level.width
    # The board's second row in the file is "  ####      #####", with floor outside the walls.
    assert rows[1].startswith("######")


def test_boxoban_parses_all_boards():
    levels = load_collection("boxoban-medium")

    assert len(levels) == 1000
    for level in levels:
        assert (level.height, level.width) == (10, 10), level.name
        assert len(level.boxes) == 4, level.name
        assert len(level.targets) == 4, level.name


def test_boxoban_names_are_header_numbers():
    levels = load_collection("boxoban-medium")

    assert [level.name for level in levels[:3]] == ["0", "1", "2"]
    assert levels[999].name == "999"


def test_unknown_collection_raises():
    with pytest.raises(ValueError, match="grigr2001"):
        load_collection("sokoban-classic")


def test_format_board_round_trips_every_grigr_level():
    for level in load_collection("grigr2001"):
        reparsed = parse_one(format_board(level))
        assert reparsed.walls == level.walls, level.name
        assert reparsed.boxes == level.boxes, level.name
        assert reparsed.targets == level.targets, level.name
        assert reparsed.player == level.player, level.name


# ---------------------------------------------------------------------------
# Parsing details


def test_parse_reads_every_symbol():
    level = parse_one("#######\n#+$.*$#\n#     #\n#######\n")

    assert level.player == (1, 1)
    assert level.targets == {(1, 1), (1, 3), (1, 4)}
    assert level.boxes == {(1, 2), (1, 4), (1, 5)}
    assert (0, 0) in level.walls
    assert (2, 1) not in level.walls


def test_parse_accepts_floor_aliases():
    dashes = parse_one("#####\n#@$.#\n#-_-#\n#####\n")
    spaces = parse_one("#####\n#@$.#\n#   #\n#####\n")

    assert dashes.walls == spaces.walls
    assert (2, 2) not in dashes.walls


def test_parse_pads_ragged_rows():
    level = parse_one("####\n#@$.#\n#####\n")

    assert level.width == 5
    assert (0, 4) in level.walls


def test_parse_skips_metadata_and_comment_blocks():
    text = (
        "; first\n"
        "#####\n#@$.#\n#####\n"
        "Author: someone\n"
        "Title: Corridor\n"
        "Comment:\n"
        "#@$.#\n"
        "color blue\n"
        "Comment-End:\n"
        "\n"
        "; second\n"
        "######\n#@ $.#\n######\n"
    )
    levels = parse_levels(text)

    assert len(levels) == 2
    assert levels[0].name == "Corridor"
    assert levels[1].name == "second"
    assert levels[1].width == 6


def test_parse_names_untitled_boards_by_position():
    levels = parse_levels(CORRIDOR + "\n" + CORRIDOR)

    assert [level.name for level in levels] == ["1", "2"]


def test_parse_tolerates_crlf(tmp_path):
    path = tmp_path / "crlf.xsb"
    path.write_bytes(("; one\r\n" + CORRIDOR.replace("\n", "\r\n")).encode())
    level = load_level_file(path)[0]

    assert level == parse_levels("; one\n" + CORRIDOR, source=str(path))[0]
    assert level.width == 5


def test_level_file_source_names_path_and_line(tmp_path):
    path = tmp_path / "one.xsb"
    path.write_text("; header\n\n" + CORRIDOR)

    assert load_level_file(path)[0].source == f"{path}:3"


MALFORMED_BOARDS = [
    ("no player", "; x\n#####\n# $.#\n#####\n", 2, "no player"),
    ("two players", "#####\n#@$.#\n#@  #\n#####\n", 3, "second player in column 2"),
    (
        "box target mismatch",
        "#####\n#@$$#\n#  .#\n#####\n",
        1,
        "box count 2 differs from target count 1",
    ),
    ("no boxes", "####\n#@ #\n####\n", 1, "no boxes"),
    ("unknown character", "#####\n#@$.#\n# x #\n#####\n", 3, "unknown character 'x' in column 3"),
    ("open border", "#####\n#@$. \n#####\n", 2, "not enclosed by walls"),
]


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [case[1:] for case in MALFORMED_BOARDS],
    ids=[c[0] for c in MALFORMED_BOARDS],
)
def test_malformed_board_error_names_file_and_line(tmp_path, text, line, problem):
    path = tmp_path / "bad.xsb"
    path.write_text(text)

    with pytest.raises(LevelFormatError) as caught:
        load_level_file(path)

    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert problem in message
    assert caught.value.line == line


def test_malformed_board_after_good_one_reports_its_line(tmp_path):
    path = tmp_path / "second_bad.xsb"
    path.write_text("; 0\n" + CORRIDOR + "\n; 1\n#####\n#@$ #\n#####\n")

    with pytest.raises(
        LevelFormatError,
        match="^" + re.escape(f"{path}:7: box count 1 differs from target count 0"),
    ):
        load_level_file(path)


def test_file_without_boards_raises(tmp_path):
    path = tmp_path / "empty.xsb"
    path.write_text("; only a comment\nTitle: nothing\n")

    with pytest.raises(LevelFormatError, match="no Sokoban board found") as caught:
        load_level_file(path)
    assert str(caught.value).startswith(str(path))


# ---------------------------------------------------------------------------
# Push rules

RULES_BOARD = """\
#######
#     #
# $$  #
#  @$ #
#  $ ##
#  $ .#
#.... #
#######
"""

PUSH_CASES = [
    # direction, expected outcome, expected player, box that moved (from, to) or None
    ("left", MoveOutcome.MOVED, (3, 2), None),
    ("right", MoveOutcome.PUSHED, (3, 4), ((3, 4), (3, 5))),
    ("up", MoveOutcome.PUSHED, (2, 3), ((2, 3), (1, 3))),
    ("down", MoveOutcome.BOX_BLOCKED_BY_BOX, (3, 3), None),
]


@pytest.mark.parametrize(("direction", "outcome", "player", "box_move"), PUSH_CASES)
def test_push_rules(direction, outcome, player, box_move):
    level = parse_one(RULES_BOARD)
    state, result = apply_move(level, level.initial_state, direction)

    assert result is outcome
    assert state.player == player
    if box_move is None:
        assert state.boxes == level.boxes
    else:
        old, new = box_move
        assert state.boxes == (level.boxes - {old}) | {new}


def test_move_into_wall_is_blocked():
    level = parse_one("#####\n#@$.#\n#####\n")
    state, outcome = apply_move(level, level.initial_state, "left")

    assert outcome is MoveOutcome.BLOCKED_BY_WALL
    assert state == level.initial_state


def test_push_box_into_wall_is_blocked():
    level = parse_one("#####\n#.$@#\n#####\n")
    moved, _ = apply_move(level, level.initial_state, "left")
    state, outcome = apply_move(level, moved, "left")

    assert outcome is MoveOutcome.BOX_BLOCKED_BY_WALL
    assert state == moved


def test_walking_away_never_pulls_box():
    level = parse_one("######\n#.$@ #\n######\n")
    state, outcome = apply_move(level, level.initial_state, "right")

    assert outcome is MoveOutcome.MOVED
    assert state.boxes == level.boxes


def test_push_onto_target_solves():
    level = parse_one(CORRIDOR)
    state, outcome = apply_move(level, level.initial_state, "right")

    assert outcome is MoveOutcome.PUSHED
    assert is_solved(level, state)
    assert not is_solved(level, level.initial_state)


# ---------------------------------------------------------------------------
# Generation


def test_generate_room_is_deterministic():
    first = generate_room(7, num_boxes=2)
    second = generate_room(7, num_boxes=2)

    assert first.level == second.level
    assert first.solution == second.solution


def test_generate_room_varies_with_seed():
    boards = {format_board(generate_room(seed).level) for seed in range(20)}

    assert len(boards) >= 18


@pytest.mark.parametrize("num_boxes", [1, 2, 3])
def test_generated_solutions_replay_to_success(num_boxes):
    for seed in range(40):
        room = generate_room(seed, num_boxes=num_boxes, max_solution_moves=15)
        level = room.level

        assert len(level.boxes) == num_boxes, seed
        assert len(level.targets) == num_boxes, seed
        assert 1 <= len(room.solution) <= 15, seed
        assert not is_solved(level, level.initial_state), seed
        assert is_solved(level, replay(level, room.solution)), seed


def test_generated_room_shape():
    for seed in range(30):
        level = generate_room(seed, min_side=6, max_side=8).level
        side = level.height
        border = {(0, i) for i in range(side)} | {(side - 1, i) for i in range(side)}
        border |= {(i, 0) for i in range(side)} | {(i, side - 1) for i in range(side)}

        assert 6 <= side <= 8, seed
        assert level.width == side, seed
        assert border <= level.walls, seed
        assert len(level.walls) > len(border), seed


def test_generated_room_respects_min_solution_moves():
    for seed in range(10):
        room = generate_room(seed, min_solution_moves=6, max_solution_moves=12)

        assert 6 <= len(room.solution) <= 12, seed


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_side": 4},
        {"min_side": 8, "max_side": 6},
        {"num_boxes": 0},
        {"min_solution_moves": 5, "max_solution_moves": 4},
        {"floor_fraction": 0.0},
        {"num_boxes": 12, "min_side": 5, "max_side": 5},
    ],
)
def test_generate_room_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        generate_room(0, **kwargs)


def test_generate_room_gives_up_after_max_attempts():
    with pytest.raises(RuntimeError, match="max_attempts"):
        generate_room(0, min_solution_moves=19, max_solution_moves=20, max_attempts=1)


# ---------------------------------------------------------------------------
# Solver


def test_solver_matches_breadth_first_search_on_generated_rooms():
    for seed in range(30):
        room = generate_room(seed, num_boxes=1 + seed % 2)
        solution = sokoban_solver.solve(room.level)

        assert solution is not None, seed
        assert len(solution) == shortest_solution_length(room.level), seed


@pytest.mark.parametrize("name", ["Cherta #56", "Vverh #63", "Miner #72", "Zerkalo #77"])
def test_solver_solves_small_grigr_levels(name):
    level = next(level for level in load_collection("grigr2001") if level.name == name)
    solution = sokoban_solver.solve(level, max_nodes=20_000)

    assert solution is not None
    assert is_solved(level, replay(level, solution))


@pytest.mark.parametrize("index", [2, 15, 21])
def test_solver_solves_easy_boxoban_levels(index):
    level = load_collection("boxoban-medium")[index]
    solution = sokoban_solver.solve(level, max_nodes=20_000)

    assert solution is not None
    assert is_solved(level, replay(level, solution))


def test_solver_budget_results_replay_to_success():
    levels = load_collection("boxoban-medium")[:10]
    results = [sokoban_solver.solve(level, max_nodes=1_000) for level in levels]

    assert any(solution is not None for solution in results)
    for level, solution in zip(levels, results, strict=True):
        if solution is not None:
            assert is_solved(level, replay(level, solution)), level.name


def test_solver_returns_none_for_box_in_corner():
    level = parse_one("#####\n#$ .#\n# @ #\n#####\n")

    assert sokoban_solver.solve(level) is None


def test_solver_returns_none_for_closed_off_target():
    level = parse_one("#######\n#@ $#.#\n#######\n")

    assert sokoban_solver.solve(level) is None


def test_solver_returns_none_when_budget_runs_out():
    level = load_collection("boxoban-medium")[2]

    assert sokoban_solver.solve(level, max_nodes=1) is None


def test_solver_returns_empty_list_for_solved_level():
    level = parse_one("#####\n#@* #\n#####\n")

    assert sokoban_solver.solve(level) == []


def test_solver_walks_around_to_push():
    level = parse_one("######\n#.$  #\n#   @#\n######\n")
    solution = sokoban_solver.solve(level)

    assert solution is not None
    assert len(solution) == 3
    assert solution[-1] == "left"
    assert is_solved(level, replay(level, solution))


def test_solver_allows_block_of_boxes_on_targets():
    level = parse_one("######\n#*   #\n#.$@ #\n#    #\n######\n")

    assert sokoban_solver.solve(level) == ["left"]


def test_solver_is_optimal_with_adjacent_boxes():
    level = parse_one("#######\n# @   #\n# $$  #\n#     #\n# ..  #\n#######\n")
    solution = sokoban_solver.solve(level)

    assert solution is not None
    assert len(solution) == shortest_solution_length(level)
    assert is_solved(level, replay(level, solution))


def test_dead_cells_are_corners_and_dead_walls():
    level = parse_one("######\n#@   #\n# $. #\n#    #\n######\n")
    dead = sokoban_solver.find_dead_cells(level)

    assert {(1, 1), (1, 4), (3, 1), (3, 4)} <= dead
    assert (2, 3) not in dead
    assert (2, 2) not in dead
    assert (1, 3) in dead
