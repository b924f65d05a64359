"""FrozenLake as a text environment: ``erlgym/FrozenLake-v0``.

The grid semantics follow Gymnasium's ``FrozenLake-v1`` (checked against Gymnasium 1.4,
``gymnasium/envs/toy_text/frozen_lake.py``): on a non-slippery map, the same map and
moves give the same positions, rewards and terminations. Maps are generated per
episode, or fixed by name or by rows.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import deque
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np

from erlgym.envs.base import TextEnv, Transition

logger = logging.getLogger(__name__)

UP = "up"
DOWN = "down"
LEFT = "left"
RIGHT = "right"
ACTIONS = {UP: ("u",), DOWN: ("d",), LEFT: ("l",), RIGHT: ("r",)}
MOVES = {UP: (-1, 0), DOWN: (1, 0), LEFT: (0, -1), RIGHT: (0, 1)}
_EDGE_NAMES = {UP: "top edge", DOWN: "bottom edge", LEFT: "left edge", RIGHT: "right edge"}
GYMNASIUM_ACTION_ORDER = (LEFT, DOWN, RIGHT, UP)
"""Directions by Gymnasium's action index. A slip turns to the neighbours in this order."""

START = "S"
FROZEN = "F"
HOLE = "H"
GOAL = "G"
MAP_TILES = START + FROZEN + HOLE + GOAL

PLAIN_SYMBOLS = {"player": "P", "start": "S", "frozen": "_", "hole": "O", "goal": "G"}
_TILE_ROLES = {START: "start", FROZEN: "frozen", HOLE: "hole", GOAL: "goal"}

MAP_NAMES = ("4x4", "8x8")
MAPS_RESOURCE = "levels/maps/gymnasium_toy_text_maps.json"

DEFAULT_SIZE = (2, 9)
DEFAULT_FROZEN_PROB = (0.7, 0.9)
SIZE_RANGE = (2, 16)
"""Allowed side lengths of generated maps."""
FROZEN_PROB_RANGE = (0.5, 1.0)
"""Allowed frozen-tile probabilities. Below 0.5, large maps are rarely solvable."""
MAX_DESC_SIDE = 64
"""Maximum rows and columns of a given map, so its observation fits the observation space."""
MAX_GENERATION_ATTEMPTS = 10_000


def load_gymnasium_map(map_name: str) -> tuple[str, ...]:
    """Return the rows of Gymnasium's named FrozenLake map, ``"4x4"`` or ``"8x8"``.

    The maps are read from the JSON file shipped in this package, transcribed from
    Gymnasium's source under the MIT license (``levels/maps/LICENSE_Gymnasium_MIT.txt``).

    Raises:
        ValueError: If ``map_name`` is not one of :data:`MAP_NAMES`.
    """
    if map_name not in MAP_NAMES:
        raise ValueError(f"map_name={map_name!r} is invalid: use one of {MAP_NAMES}")
    return _load_gymnasium_maps()[map_name]


@functools.cache
def _load_gymnasium_maps() -> dict[str, tuple[str, ...]]:
    text = resources.files("erlgym.envs").joinpath(MAPS_RESOURCE).read_text(encoding="utf-8")
    maps = json.loads(text)["frozen_lake"]["maps"]
    return {name: tuple(rows) for name, rows in maps.items()}


def generate_random_map(
    rng: np.random.Generator,
    size: int,
    frozen_prob: float,
    max_attempts: int = MAX_GENERATION_ATTEMPTS,
) -> tuple[str, ...]:
    """Generate a solvable square map with random start and goal cells.

    Each cell is frozen with probability ``frozen_prob``, else a hole. Two distinct
    cells become the start and the goal. The map is redrawn until a breadth-first
    search finds a path from start to goal over frozen cells, so every returned map is
    solvable. Over 300 maps of size 16 with ``frozen_prob=0.5``, the hardest allowed
    setting, a map took 5.5 draws on average and 32 at most.

    Args:
        rng: Source of all randomness, so one seed gives one map.
        size: Number of rows and of columns, at least 2.
        frozen_prob: Probability that a cell other than start and goal is frozen.
        max_attempts: Number of draws before giving up.

    Returns:
        The map as rows of ``S``, ``F``, ``H`` and ``G``.

    Raises:
        RuntimeError: If no solvable map was drawn in ``max_attempts`` draws.
    """
    for attempt in range(1, max_attempts + 1):
        frozen = rng.random((size, size)) < frozen_prob
        grid = [[FROZEN if is_frozen else HOLE for is_frozen in row] for row in frozen]
        start, goal = rng.choice(size * size, size=2, replace=False)
        grid[start // size][start % size] = START
        grid[goal // size][goal % size] = GOAL
        rows = tuple("".join(row) for row in grid)
        if find_shortest_path_length(rows) is not None:
            logger.debug("drew a solvable %dx%d map in %d draws", size, size, attempt)
            return rows
    raise RuntimeError(
        f"no solvable {size}x{size} map in {max_attempts} draws with "
        f"frozen_prob={frozen_prob}: raise frozen_prob"
    )


def find_shortest_path_length(desc: Sequence[str]) -> int | None:
    """Return the fewest moves from the start to a goal avoiding holes, or None if none exists."""
    num_rows, num_cols = len(desc), len(desc[0])
    start = find_tile(desc, START)
    distances = {start: 0}
    queue = deque([start])
    while queue:
        row, col = queue.popleft()
        if desc[row][col] == GOAL:
            return distances[(row, col)]
        for d_row, d_col in MOVES.values():
            nxt = (row + d_row, col + d_col)
            if (
                0 <= nxt[0] < num_rows
                and 0 <= nxt[1] < num_cols
                and nxt not in distances
                and desc[nxt[0]][nxt[1]] != HOLE
            ):
                distances[nxt] = distances[(row, col)] + 1
                queue.append(nxt)
    return None


def find_tile(desc: Sequence[str], tile: str) -> tuple[int, int]:
    """Return the (row, column) of the first ``tile`` in reading order.

    Raises:
        ValueError: If the map contains no such tile.
    """
    for row, line in enumerate(desc):
        col = line.find(tile)
        if col >= 0:
            return row, col
    raise ValueError(f"map has no {tile!r} tile")


def validate_desc(desc: Sequence[str]) -> tuple[str, ...]:
    """Return the map as a tuple of rows if it is well formed, else raise ValueError.

    A map has 1 to 64 rows of equal length (1 to 64), made of ``S``, ``F``, ``H`` and
    ``G``, with exactly one ``S`` and at least one ``G``.
    """
    if isinstance(desc, str) or not isinstance(desc, Sequence) or not desc:
        raise ValueError(f"desc={desc!r} is invalid: use a non-empty list of row strings")
    rows = tuple(desc)
    widths = {len(row) if isinstance(row, str) else -1 for row in rows}
    if len(widths) != 1 or not 1 <= widths.pop() <= MAX_DESC_SIDE or len(rows) > MAX_DESC_SIDE:
        raise ValueError(
            f"desc={desc!r} is invalid: use 1 to {MAX_DESC_SIDE} strings of equal length "
            f"1 to {MAX_DESC_SIDE}"
        )
    text = "".join(rows)
    bad_tiles = sorted(set(text) - set(MAP_TILES))
    if bad_tiles:
        raise ValueError(f"desc contains invalid tiles {bad_tiles}: use only {MAP_TILES}")
    if text.count(START) != 1 or GOAL not in text:
        raise ValueError(
            f"desc={desc!r} is invalid: it needs exactly one {START!r} and at least one {GOAL!r}, "
            f"got {text.count(START)} and {text.count(GOAL)}"
        )
    return rows


def validate_range(
    name: str, value: Any, kind: type, allowed: tuple[float, float]
) -> tuple[Any, Any]:
    """Return ``value`` as a (low, high) pair inside ``allowed``, else raise ValueError.

    ``value`` is one number of type ``kind`` (used as both bounds) or a pair of them.
    """
    pair = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    numbers = (int, np.integer) if kind is int else (int, float, np.integer, np.floating)
    is_valid = (
        len(pair) == 2
        and all(isinstance(v, numbers) and not isinstance(v, bool) for v in pair)
        and allowed[0] <= pair[0] <= pair[1] <= allowed[1]
    )
    if not is_valid:
        raise ValueError(
            f"{name}={value!r} is invalid: use one {kind.__name__} or a (low, high) pair "
            f"with {allowed[0]} <= low <= high <= {allowed[1]}"
        )
    return kind(pair[0]), kind(pair[1])


def draw_static_rows(desc: Sequence[str], symbol_map: dict[str, str]) -> list[str]:
    """Draw the map's tiles with the episode's symbols, without the player."""
    tile_symbols = {tile: symbol_map[role] for tile, role in _TILE_ROLES.items()}
    return ["".join(tile_symbols[tile] for tile in row) for row in desc]


def draw_grid(static_rows: Sequence[str], position: tuple[int, int], player_symbol: str) -> str:
    """Return the grid text with the player drawn over its cell."""
    row, col = position
    rows = list(static_rows)
    line = rows[row]
    rows[row] = line[:col] + player_symbol + line[col + 1 :]
    return "\n".join(rows)


def describe_legend(symbol_map: dict[str, str]) -> str:
    """Return the one-line legend shown under the grid in plain mode."""
    return (
        f"Legend: {symbol_map['player']} you, {symbol_map['start']} start, "
        f"{symbol_map['frozen']} ice, {symbol_map['hole']} hole, {symbol_map['goal']} goal"
    )


# Worked examples for few_shot_messages: map, player cell, feedback line shown above the
# grid (None on the first observation), the correct action and one line of reasoning.
FEW_SHOT_EXAMPLES = (
    (("SFF", "HHF", "FFG"), (0, 0), None, RIGHT, "G is down-right and O is below me, so I go right."),
    (("SHF", "FHF", "FFG"), (1, 0), "You moved down.", DOWN, "O is to my right, so I go down first."),
    (
        ("FFFS", "FHHF", "FFFF", "GHFF"),
        (0, 2),
        "Moving up had no effect: you are at the top edge.",
        LEFT,
        "G is down-left and O is below me, so I go left.",
    ),
)


class FrozenLakeTextEnv(TextEnv):
    """Cross a frozen lake from the start to the goal without falling into a hole.

    ## Description
    The lake is a grid of frozen tiles and holes. The player starts on the start tile
    and moves one cell per action. Stepping onto a hole ends the episode in failure,
    stepping onto the goal ends it in success. With ``is_slippery=False`` (the
    default), the grid behaves exactly like Gymnasium's ``FrozenLake-v1`` with
    ``is_slippery=False`` on the same map. Rows and columns in feedback are counted
    from 1, with row 1 at the top.

    ## Action Space
    ``spaces.Text`` over printable ASCII, up to 4096 characters: the agent's reply. The
    parser reads one of four actions from it: ``up``, ``down``, ``left``, ``right``
    (aliases ``u``, ``d``, ``l``, ``r``). ``step`` accepts any ``str``.

    ## Observation Space
    ``spaces.Text`` over printable ASCII, up to 8192 characters, described under Text
    protocol.

    ## Starting State
    The player is on the start tile. Without ``desc`` or ``map_name``, each reset
    generates a new map with :func:`generate_random_map`: a square side drawn
    uniformly from ``size``, a frozen-tile probability drawn uniformly from
    ``frozen_prob``, and random distinct start and goal cells. Generated maps are
    solvable by construction: they are redrawn until a breadth-first search finds a
    path. ``reset(options={"task": rows_or_map_name})`` plays the given map for one
    episode.

    ## Rewards
    1.0 for reaching the goal, else 0.0. A reply with no valid action gets
    ``-format_penalty`` and leaves the player in place.

    ## Episode End
    Terminated: the player steps onto a hole (``success`` False) or the goal
    (``success`` True). Truncated: ``max_steps`` steps were taken without either.
    Invalid replies count as steps.

    ## Arguments
    * ``desc``: the map as rows of ``S`` (start), ``F`` (frozen), ``H`` (hole) and ``G``
      (goal), with exactly one ``S``. Maps without a path are accepted.
    * ``map_name``: ``"4x4"`` or ``"8x8"``, Gymnasium's maps. Not together with ``desc``.
    * ``size``: side of generated maps, one int or a (low, high) pair, 2 to 16.
      Default (2, 9). Ignored when a map is given.
    * ``frozen_prob``: probability that a generated cell is frozen, one float or a
      (low, high) pair, 0.5 to 1.0. Default (0.7, 0.9). Ignored when a map is given.
    * ``is_slippery``: if True, each move goes in the intended direction or one of the
      two perpendicular ones, each with probability 1/3, as in Gymnasium. The draw
      uses the env's ``np_random``, whose stream differs from Gymnasium's.
    * ``symbols``: ``"plain"`` or ``"hidden"``, see Text protocol.
    * ``max_steps``: step limit per episode. Default None: twice the shortest path
      length plus 2 (14 on the 4x4 map), which leaves room for mistakes while keeping
      episodes short, because every step is a model generation. Maps without a path
      get twice the sum of rows and columns. Slippery episodes may need a larger limit.
    * ``format_penalty``: subtracted from the reward of an invalid reply. Default 0.0.
    * ``render_mode``: None or ``"ansi"``.

    ## Text protocol
    An observation is the grid, one row per line, preceded after each step by a
    feedback line. In plain mode, ``P`` is the player, ``S`` the start, ``_`` ice,
    ``O`` a hole and ``G`` the goal, and a legend line follows the grid::

        You moved right.
        S_P_
        _O_O
        ___O
        O__G
        Legend: P you, S start, _ ice, O hole, G goal

    In hidden mode the five symbols are distinct upper-case letters drawn from the
    episode's seed, there is no legend, and the system prompt states only the goal.
    Feedback keeps its plain words in both modes, because feedback is how the agent
    learns the hidden rules.

    A reply names its action as ``Action: <up|down|left|right>``, as
    ``<action>right</action>``, or as the bare word; the full rules are in
    :mod:`erlgym.envs.parser`. Feedback lines are ``You moved right.``, ``Moving left
    had no effect: you are at the left edge.``, ``You moved down and fell into a
    hole.``, ``You moved right and reached the goal.``, with slippery moves reported
    as ``You tried to move up but slid left.``. An invalid reply gets ``Invalid
    action: <reason>. Reply with `Action: <up|down|left|right>`.``.

    ## Version History
    * v0: Initial version.
    """

    actions = ACTIONS
    symbol_roles = PLAIN_SYMBOLS

    def __init__(
        self,
        *,
        desc: Sequence[str] | None = None,
        map_name: str | None = None,
        size: int | tuple[int, int] = DEFAULT_SIZE,
        frozen_prob: float | tuple[float, float] = DEFAULT_FROZEN_PROB,
        is_slippery: bool = False,
        symbols: str = "plain",
        max_steps: int | None = None,
        format_penalty: float = 0.0,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(
            symbols=symbols,
            max_steps=max_steps,
            format_penalty=format_penalty,
            render_mode=render_mode,
        )
        if desc is not None and map_name is not None:
            raise ValueError(
                f"desc and map_name={map_name!r} are both set: pass at most one of them"
            )
        self.size_range = validate_range("size", size, int, SIZE_RANGE)
        self.frozen_prob_range = validate_range("frozen_prob", frozen_prob, float, FROZEN_PROB_RANGE)
        if not isinstance(is_slippery, (bool, np.bool_)):
            raise ValueError(f"is_slippery={is_slippery!r} is invalid: use True or False")
        self.is_slippery = bool(is_slippery)

        self.fixed_desc: tuple[str, ...] | None = None
        if map_name is not None:
            self.fixed_desc = load_gymnasium_map(map_name)
        elif desc is not None:
            self.fixed_desc = validate_desc(desc)

        self.desc: tuple[str, ...] = ()
        self.position = (0, 0)
        self.shortest_path_length: int | None = None
        self._static_rows: list[str] = []

    # ------------------------------------------------------------------ episode

    def _start_episode(self, task: Any) -> None:
        if task is not None:
            self.desc = self._coerce_task(task)
        elif self.fixed_desc is not None:
            self.desc = self.fixed_desc
        else:
            self.desc = self._generate_map()
        self.position = find_tile(self.desc, START)
        self.shortest_path_length = find_shortest_path_length(self.desc)
        self._static_rows = draw_static_rows(self.desc, self.symbol_map)

    def _coerce_task(self, task: Any) -> tuple[str, ...]:
        if isinstance(task, str):
            return load_gymnasium_map(task)
        return validate_desc(task)

    def _generate_map(self) -> tuple[str, ...]:
        low, high = self.size_range
        size = int(self.np_random.integers(low, high + 1))
        low_prob, high_prob = self.frozen_prob_range
        frozen_prob = float(self.np_random.uniform(low_prob, high_prob))
        return generate_random_map(self.np_random, size, frozen_prob)

    def _default_step_limit(self) -> int:
        if self.shortest_path_length is None:
            return 2 * (len(self.desc) + len(self.desc[0]))
        return 2 * self.shortest_path_length + 2

    # ------------------------------------------------------------------ dynamics

    def _apply_action(self, action: str) -> Transition:
        direction = self._draw_direction(action) if self.is_slippery else action
        row, col = self.position
        d_row, d_col = MOVES[direction]
        new_row = min(max(row + d_row, 0), len(self.desc) - 1)
        new_col = min(max(col + d_col, 0), len(self.desc[0]) - 1)
        if direction == action:
            moved = f"You moved {direction}"
        else:
            moved = f"You tried to move {action} but slid {direction}"

        if (new_row, new_col) == (row, col):
            if direction == action:
                return Transition(False, f"Moving {action} had no effect: you are at the {_EDGE_NAMES[action]}.")
            return Transition(False, f"{moved} and stayed at the {_EDGE_NAMES[direction]}.")

        self.position = (new_row, new_col)
        tile = self.desc[new_row][new_col]
        if tile == HOLE:
            return Transition(
                True,
                f"{moved} and fell into a hole.",
                terminated=True,
                outcome=f"you fell into a hole at row {new_row + 1}, column {new_col + 1}",
            )
        if tile == GOAL:
            return Transition(True, f"{moved} and reached the goal.", terminated=True, success=True)
        return Transition(True, f"{moved}.")

    def _draw_direction(self, action: str) -> str:
        index = GYMNASIUM_ACTION_ORDER.index(action)
        offset = int(self.np_random.integers(3)) - 1
        return GYMNASIUM_ACTION_ORDER[(index + offset) % 4]

    # ------------------------------------------------------------------ text

    def _render_state(self) -> str:
        grid = draw_grid(self._static_rows, self.position, self.symbol_map["player"])
        if self.symbols == "hidden":
            return grid
        return grid + "\n" + describe_legend(self.symbol_map)

    def _describe_rules(self) -> str:
        rules = (
            "You are P on a frozen lake grid: S is the start, _ is ice, O is a hole and G "
            "is the goal. Each action moves you one cell up, down, left or right. Reach G "
            "to win. Stepping into O ends the episode with no reward. Moving off the grid "
            "has no effect."
        )
        if self.is_slippery:
            rules += " The ice is slippery: a move may slide you sideways instead."
        return rules

    def _describe_goal(self) -> str:
        return (
            "You move on a grid of letters, one cell per action. Reach the goal cell to "
            "win. The meaning of the letters is not given: work it out from the feedback."
        )

    def _build_few_shot_examples(self) -> list[tuple[str, str]]:
        symbol_map = self.build_example_symbol_map()
        examples = []
        for desc, position, feedback, action, reasoning in FEW_SHOT_EXAMPLES:
            grid = draw_grid(draw_static_rows(desc, symbol_map), position, symbol_map["player"])
            if self.symbols == "plain":
                observation = grid + "\n" + describe_legend(symbol_map)
                reply = self.format_reply(action, reasoning)
            else:
                observation = grid
                reply = self.format_reply(action)
            if feedback is not None:
                observation = feedback + "\n" + observation
            examples.append((observation, reply))
        return examples

