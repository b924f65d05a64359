"""Sokoban boards: the level model, the push rules, XSB parsing and room generation.

A level file is read as XSB, the common plain-text Sokoban format:

    #  wall            .  target          @  player
    ' ', '-' or '_'    $  box             +  player on a target
       floor           *  box on a target

Boards are separated by blank lines, comment lines that start with ``;``, or
metadata lines such as ``Title: Bardak #01``. Lines between ``Comment:`` and
``Comment-End:`` are skipped. Boxoban files (``; N`` before each 10 by 10 board)
are XSB files of this kind, so one parser reads both. Rows shorter than the widest
row of their board are padded with floor, and floor that the player cannot reach
(outside the outer walls) becomes wall, so every parsed level is a rectangle of
walls and reachable cells.

Cells are ``(row, column)`` pairs with ``(0, 0)`` at the top left.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib.resources
import logging
import re
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from erlgym.envs import sokoban_solver

logger = logging.getLogger(__name__)

Cell = tuple[int, int]

WALL = "#"
FLOOR = " "
TARGET = "."
BOX = "$"
BOX_ON_TARGET = "*"
PLAYER = "@"
PLAYER_ON_TARGET = "+"
FLOOR_ALIASES = "-_"
BOARD_CHARACTERS = (
    WALL + FLOOR + TARGET + BOX + BOX_ON_TARGET + PLAYER + PLAYER_ON_TARGET + FLOOR_ALIASES
)

# Row and column offsets of one move, keyed by the action names of the parser.
DIRECTIONS: dict[str, Cell] = {
    "up": (-1, 0),
    "down": (1, 0),
    "left": (0, -1),
    "right": (0, 1),
}

DEFAULT_FLOOR_FRACTION = 0.65
"""Share of a generated room's interior that is floor; the rest is interior wall."""

# Packaged collections: name -> path under envs/levels/sokoban.
COLLECTIONS: dict[str, str] = {
    "grigr2001": "Grigr2001_100.xsb",
    "boxoban-medium": "boxoban-medium/train-000.txt",
}

_METADATA_LINE = re.compile(r"^\s*([A-Za-z][A-Za-z -]*):(.*)$")


class LevelFormatError(ValueError):
    """Error for a level file or board that cannot be read.

    The message starts with ``file:line:`` (or ``file:`` when no line applies).
    """

    def __init__(self, source: str, line: int | None, problem: str):
        location = source if line is None else f"{source}:{line}"
        super().__init__(f"{location}: {problem}")
        self.source = source
        self.line = line
        self.problem = problem


@dataclasses.dataclass(frozen=True)
class SokobanState:
    """The changing part of a game: where the player and the boxes are."""

    player: Cell
    boxes: frozenset[Cell]


@dataclasses.dataclass(frozen=True)
class SokobanLevel:
    """A Sokoban board: the fixed layout and the starting positions.

    ``walls`` includes every cell the player cannot reach, so any cell that is not a
    wall is floor. ``source`` is ``"path:line"`` of the board's first row for file
    levels and ``"generated (seed N)"`` for generated rooms.
    """

    height: int
    width: int
    walls: frozenset[Cell]
    targets: frozenset[Cell]
    boxes: frozenset[Cell]
    player: Cell
    name: str = ""
    source: str = ""

    @property
    def initial_state(self) -> SokobanState:
        return SokobanState(self.player, self.boxes)


class MoveOutcome(enum.Enum):
    """Result of one move: whether the player moved, pushed a box, or was blocked and by what."""

    MOVED = "moved"
    PUSHED = "pushed"
    BLOCKED_BY_WALL = "blocked by a wall"
    BOX_BLOCKED_BY_WALL = "box blocked by a wall"
    BOX_BLOCKED_BY_BOX = "box blocked by another box"

    @property
    def changed_state(self) -> bool:
        return self in (MoveOutcome.MOVED, MoveOutcome.PUSHED)


class GeneratedRoom(NamedTuple):
    """A generated level with one of its shortest solutions, as direction names."""

    level: SokobanLevel
    solution: list[str]


# ---------------------------------------------------------------------------
# Rules


def step_cell(cell: Cell, direction: str) -> Cell:
    """Return the cell next to ``cell`` in ``direction`` ("up", "down", "left" or "right")."""
    dr, dc = DIRECTIONS[direction]
    return (cell[0] + dr, cell[1] + dc)


def apply_move(
    level: SokobanLevel, state: SokobanState, direction: str
) -> tuple[SokobanState, MoveOutcome]:
    """Apply one move under the standard push rules and return the new state and what happened.

    The player moves onto any free cell (floor or target). Moving into a box pushes it
    one cell when the cell behind it is free, meaning neither a wall nor another box.
    Boxes are never pulled, and a blocked move returns ``state`` unchanged.
    """
    ahead = step_cell(state.player, direction)
    if ahead in level.walls:
        return state, MoveOutcome.BLOCKED_BY_WALL
    if ahead not in state.boxes:
        return SokobanState(ahead, state.boxes), MoveOutcome.MOVED

    behind = step_cell(ahead, direction)
    if behind in level.walls:
        return state, MoveOutcome.BOX_BLOCKED_BY_WALL
    if behind in state.boxes:
        return state, MoveOutcome.BOX_BLOCKED_BY_BOX
    boxes = (state.boxes - {ahead}) | {behind}
    return SokobanState(ahead, boxes), MoveOutcome.PUSHED


def is_solved(level: SokobanLevel, state: SokobanState) -> bool:
    """Return whether every box is on a target."""
    return state.boxes == level.targets


def replay(level: SokobanLevel, moves: Iterable[str]) -> SokobanState:
    """Apply ``moves`` from the level's start and return the final state."""
    state = level.initial_state
    for direction in moves:
        state, _ = apply_move(level, state, direction)
    return state


# ---------------------------------------------------------------------------
# Text


def format_board(
    level: SokobanLevel, state: SokobanState | None = None, symbols: dict[str, str] | None = None
) -> str:
    """Draw the board as rows of text, in XSB symbols unless ``symbols`` remaps them.

    ``symbols`` maps each XSB symbol (``#``, `` ``, ``.``, ``$``, ``*``, ``@``, ``+``)
    to the character to print. ``state`` defaults to the level's start.
    """
    state = state or level.initial_state
    symbols = symbols or {
        symbol: symbol
        for symbol in WALL + FLOOR + TARGET + BOX + BOX_ON_TARGET + PLAYER + PLAYER_ON_TARGET
    }
    rows = []
    for row in range(level.height):
        cells = [symbols[symbol_at(level, state, (row, column))] for column in range(level.width)]
        rows.append("".join(cells))
    return "\n".join(rows)


def symbol_at(level: SokobanLevel, state: SokobanState, cell: Cell) -> str:
    """Return the XSB symbol of ``cell`` in ``state``."""
    if cell in level.walls:
        return WALL
    on_target = cell in level.targets
    if cell == state.player:
        return PLAYER_ON_TARGET if on_target else PLAYER
    if cell in state.boxes:
        return BOX_ON_TARGET if on_target else BOX
    return TARGET if on_target else FLOOR


# ---------------------------------------------------------------------------
# Parsing


@dataclasses.dataclass
class _RawBoard:
    rows: list[tuple[int, str]]
    name: str
    title: str = ""


def parse_levels(text: str, source: str = "<string>") -> list[SokobanLevel]:
    """Parse every board in an XSB or Boxoban text.

    Raises:
        LevelFormatError: a board is malformed or the text contains no board. The message
            names ``source`` and the line number of the problem.
    """
    raw_boards = list(split_boards(text.splitlines()))
    if not raw_boards:
        raise LevelFormatError(
            source, None, "no Sokoban board found, expected XSB rows such as '#@$.#'"
        )
    return [build_level(raw.rows, source, raw.title or raw.name) for raw in raw_boards]


def split_boards(lines: list[str]) -> Iterator[_RawBoard]:
    """Group the board rows of an XSB text and attach each board's name.

    A board's name is its ``Title:`` line when one follows the board, else the last
    ``;`` comment before it, else its position in the file starting from 1.
    """
    rows: list[tuple[int, str]] = []
    last_comment = ""
    last_board: _RawBoard | None = None
    in_comment_block = False
    count = 0

    def finish_board() -> _RawBoard | None:
        nonlocal rows, count
        if not rows:
            return None
        count += 1
        board = _RawBoard(rows, last_comment or str(count))
        rows = []
        return board

    for number, line in enumerate(lines, start=1):
        line = line.rstrip()
        stripped = line.strip()

        if in_comment_block:
            in_comment_block = stripped.lower() != "comment-end:"
            continue

        metadata = _METADATA_LINE.match(line)
        is_row = not metadata and stripped and not stripped.startswith(";") and is_board_row(line)
        if is_row:
            rows.append((number, line))
            continue

        board = finish_board()
        if board is not None:
            yield board
            last_board = board
            last_comment = ""

        if stripped.startswith(";"):
            last_comment = stripped.lstrip(";").strip()
        elif metadata:
            key, value = metadata.group(1).strip().lower(), metadata.group(2).strip()
            if key == "comment" and not value:
                in_comment_block = True
            elif key == "title" and last_board is not None and not last_board.title:
                last_board.title = value

    board = finish_board()
    if board is not None:
        yield board


def is_board_row(line: str) -> bool:
    """Return whether a non-metadata line is a board row.

    A row contains a wall or only board symbols, so a row with a stray character such
    as ``#  x #`` still counts and is rejected later with its line number.
    """
    return WALL in line or all(character in BOARD_CHARACTERS for character in line)


def build_level(rows: list[tuple[int, str]], source: str, name: str) -> SokobanLevel:
    """Build a level from numbered board rows, padding short rows with floor.

    Raises:
        LevelFormatError: unknown character, no player, more than one player, no boxes,
            a box count different from the target count, or a board that is not
            enclosed by walls.
    """
    first_line = rows[0][0]
    width = max(len(text) for _, text in rows)
    walls, targets, boxes, players = set(), set(), set(), []

    for row, (number, text) in enumerate(rows):
        for column, character in enumerate(text.ljust(width)):
            cell = (row, column)
            if character not in BOARD_CHARACTERS:
                raise LevelFormatError(
                    source,
                    number,
                    f"unknown character {character!r} in column {column + 1}, "
                    f"expected one of {BOARD_CHARACTERS!r}",
                )
            if character == WALL:
                walls.add(cell)
            if character in (TARGET, BOX_ON_TARGET, PLAYER_ON_TARGET):
                targets.add(cell)
            if character in (BOX, BOX_ON_TARGET):
                boxes.add(cell)
            if character in (PLAYER, PLAYER_ON_TARGET):
                if players:
                    raise LevelFormatError(
                        source,
                        number,
                        f"second player in column {column + 1}, "
                        "but a board has exactly one '@' or '+'",
                    )
                players.append(cell)

    if not players:
        raise LevelFormatError(
            source, first_line, "board has no player. Mark the start with '@' or '+'."
        )
    if not boxes:
        raise LevelFormatError(source, first_line, "board has no boxes")
    if len(boxes) != len(targets):
        raise LevelFormatError(
            source,
            first_line,
            f"box count {len(boxes)} differs from target count {len(targets)}, "
            "but each box needs one target",
        )

    height = len(rows)
    reachable = find_reachable(players[0], walls, height, width)
    for row, column in reachable:
        if row in (0, height - 1) or column in (0, width - 1):
            raise LevelFormatError(
                source,
                rows[row][0],
                f"board is not enclosed by walls: "
                f"the player can reach column {column + 1} at its edge",
            )

    # Unreachable floor becomes wall, except cells with a box or target, which keep
    # their meaning so that an unsolvable board stays visibly unsolvable.
    outside = (
        {(r, c) for r in range(height) for c in range(width)} - reachable - walls - boxes - targets
    )
    return SokobanLevel(
        height=height,
        width=width,
        walls=frozenset(walls | outside),
        targets=frozenset(targets),
        boxes=frozenset(boxes),
        player=players[0],
        name=name,
        source=f"{source}:{first_line}",
    )


def find_reachable(
    start: Cell, walls: set[Cell] | frozenset[Cell], height: int, width: int
) -> set[Cell]:
    """Flood-fill the cells the player can walk to from ``start`` when boxes are ignored."""
    reachable = {start}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        for direction in DIRECTIONS:
            neighbor = step_cell(cell, direction)
            inside = 0 <= neighbor[0] < height and 0 <= neighbor[1] < width
            if inside and neighbor not in walls and neighbor not in reachable:
                reachable.add(neighbor)
                queue.append(neighbor)
    return reachable


def load_level_file(path: str | Path) -> list[SokobanLevel]:
    """Read every board of an XSB or Boxoban file, with LF or CRLF line ends."""
    path = Path(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    return parse_levels(text, source=str(path))


@functools.cache
def load_collection(name: str) -> tuple[SokobanLevel, ...]:
    """Read a packaged level collection by name (a key of ``COLLECTIONS``), cached per process."""
    if name not in COLLECTIONS:
        raise ValueError(
            f"unknown level collection {name!r}, expected one of {sorted(COLLECTIONS)}"
        )
    resource = importlib.resources.files(__package__).joinpath(
        "levels", "sokoban", *COLLECTIONS[name].split("/")
    )
    text = resource.read_text(encoding="utf-8")
    return tuple(parse_levels(text, source=str(resource)))


# ---------------------------------------------------------------------------
# Generation


def generate_room(
    seed: int,
    *,
    min_side: int = 6,
    max_side: int = 8,
    num_boxes: int = 1,
    max_solution_moves: int = 20,
    min_solution_moves: int = 1,
    floor_fraction: float = DEFAULT_FLOOR_FRACTION,
    max_attempts: int = 200,
    solver_max_nodes: int = 20_000,
) -> GeneratedRoom:
    """Generate a square room with a shortest solution of a bounded number of moves.

    The bounds are ``min_solution_moves`` and ``max_solution_moves``, inclusive.

    Method, repeated with fresh random draws until a room passes the check:

    1. Draw the side length in ``[min_side, max_side]`` and surround the room with wall.
    2. Carve floor with a random walk through the interior until ``floor_fraction`` of
       the interior is floor. The rest stays interior wall.
    3. Put ``num_boxes`` boxes on targets on random floor cells, and the player on
       another floor cell.
    4. Play backwards for about ``2 * max_solution_moves`` moves: walk to a random
       box, pull it one to three cells, repeat, then walk to a random cell (see
       ``pull_boxes_randomly``). Every pull reverses a legal push, so the room is
       solvable.
    5. Solve the room forward with ``sokoban_solver.solve`` and keep it if it is not
       already solved and its shortest solution length is within the bounds.

    The result depends only on ``seed`` and the keyword arguments. Moves count every
    step of the player, pushes included.

    Raises:
        ValueError: an argument is out of range.
        RuntimeError: no room passed the check within ``max_attempts`` draws.
    """
    validate_generation_args(
        min_side, max_side, num_boxes, max_solution_moves, min_solution_moves, floor_fraction
    )
    rng = np.random.default_rng(seed)

    for attempt in range(max_attempts):
        level = draw_room(
            rng, min_side, max_side, num_boxes, floor_fraction, reverse_moves=2 * max_solution_moves
        )
        if level is None or is_solved(level, level.initial_state):
            continue
        solution = sokoban_solver.solve(level, max_nodes=solver_max_nodes)
        if solution is not None and min_solution_moves <= len(solution) <= max_solution_moves:
            logger.debug(
                "seed %d: room accepted after %d attempts, solution of %d moves",
                seed,
                attempt + 1,
                len(solution),
            )
            return GeneratedRoom(
                dataclasses.replace(
                    level, name=f"generated room {seed}", source=f"generated (seed {seed})"
                ),
                solution,
            )

    raise RuntimeError(
        f"no room with a solution of {min_solution_moves}-{max_solution_moves} moves found "
        f"in {max_attempts} attempts (seed {seed}, {num_boxes} boxes, "
        f"sides {min_side}-{max_side}). Raise max_solution_moves or max_attempts."
    )


def validate_generation_args(
    min_side: int,
    max_side: int,
    num_boxes: int,
    max_solution_moves: int,
    min_solution_moves: int,
    floor_fraction: float,
) -> None:
    """Raise ValueError naming the first generation argument that is out of range."""
    if not 5 <= min_side <= max_side:
        raise ValueError(
            f"room sides must satisfy 5 <= min_side <= max_side, got {min_side} and {max_side}"
        )
    if num_boxes < 1:
        raise ValueError(f"num_boxes must be at least 1, got {num_boxes}")
    if not 1 <= min_solution_moves <= max_solution_moves:
        raise ValueError(
            "solution bounds must satisfy 1 <= min_solution_moves <= max_solution_moves, "
            f"got {min_solution_moves} and {max_solution_moves}"
        )
    if not 0.0 < floor_fraction <= 1.0:
        raise ValueError(f"floor_fraction must be in (0, 1], got {floor_fraction}")
    interior = (min_side - 2) ** 2
    if num_boxes + 1 > floor_fraction * interior:
        raise ValueError(
            f"{num_boxes} boxes and the player do not fit on {floor_fraction:.0%} "
            f"of a {min_side}x{min_side} room's interior. "
            "Use fewer boxes, a larger min_side or a larger floor_fraction."
        )


def draw_room(
    rng: np.random.Generator,
    min_side: int,
    max_side: int,
    num_boxes: int,
    floor_fraction: float,
    reverse_moves: int,
) -> SokobanLevel | None:
    """Draw one candidate room (steps 1-4 of ``generate_room``), or None if the boxes do not fit."""
    side = int(rng.integers(min_side, max_side + 1))
    floor = carve_floor(rng, side, floor_fraction)
    if len(floor) < num_boxes + 1:
        return None

    floor_cells = sorted(floor)
    chosen = rng.choice(len(floor_cells), size=num_boxes + 1, replace=False)
    targets = frozenset(floor_cells[index] for index in chosen[:num_boxes])
    player = floor_cells[chosen[num_boxes]]
    walls = frozenset((row, column) for row in range(side) for column in range(side)) - floor

    start = SokobanLevel(side, side, walls, targets, targets, player)
    state = pull_boxes_randomly(rng, start, reverse_moves)
    return dataclasses.replace(start, boxes=state.boxes, player=state.player)


def carve_floor(rng: np.random.Generator, side: int, floor_fraction: float) -> frozenset[Cell]:
    """Carve connected floor in the interior with a random walk that turns with probability 0.35."""
    interior = side - 2
    floor_size = max(2, round(floor_fraction * interior * interior))
    names = list(DIRECTIONS)
    cell = (int(rng.integers(1, side - 1)), int(rng.integers(1, side - 1)))
    direction = names[int(rng.integers(4))]
    floor = {cell}

    while len(floor) < floor_size:
        if rng.random() < 0.35:
            direction = names[int(rng.integers(4))]
        neighbor = step_cell(cell, direction)
        if 1 <= neighbor[0] <= interior and 1 <= neighbor[1] <= interior:
            cell = neighbor
            floor.add(cell)
    return frozenset(floor)


def pull_boxes_randomly(
    rng: np.random.Generator, level: SokobanLevel, max_moves: int
) -> SokobanState:
    """Play the level backwards from its start, pulling boxes off their cells.

    Each round walks the player to a random box it can reach and pulls that box one
    to three cells in a straight line, which plays pushes in reverse. A pull in
    direction ``d`` needs the player on the box's ``d`` side and a free cell beyond
    the player. Rounds stop when the walks and pulls reach ``max_moves`` moves or no
    pull is possible, and the player then walks to a random cell it can reach.
    """
    player, boxes = level.player, set(level.boxes)
    moves = 0
    while moves < max_moves:
        walk_distance = measure_walk_distances(level, player, boxes)
        pulls = [
            (box, direction)
            for box in sorted(boxes)
            for direction in DIRECTIONS
            if step_cell(box, direction) in walk_distance
            and is_free(level, boxes, step_cell(step_cell(box, direction), direction))
        ]
        if not pulls:
            break
        box, direction = pulls[int(rng.integers(len(pulls)))]
        moves += walk_distance[step_cell(box, direction)]
        player = step_cell(box, direction)
        for _ in range(int(rng.integers(1, 4))):
            beyond = step_cell(player, direction)
            if not is_free(level, boxes, beyond):
                break
            boxes.remove(box)
            box, player = player, beyond
            boxes.add(box)
            moves += 1

    # End with a walk to a random reachable cell, so the player does not always
    # start next to the last box it pulled.
    reachable = sorted(measure_walk_distances(level, player, boxes))
    player = reachable[int(rng.integers(len(reachable)))]
    return SokobanState(player, frozenset(boxes))


def is_free(level: SokobanLevel, boxes: set[Cell], cell: Cell) -> bool:
    return cell not in level.walls and cell not in boxes


def measure_walk_distances(level: SokobanLevel, start: Cell, boxes: set[Cell]) -> dict[Cell, int]:
    """Measure the walking distance from ``start`` to each cell reachable around the boxes."""
    distance = {start: 0}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        for direction in DIRECTIONS:
            neighbor = step_cell(cell, direction)
            if neighbor not in distance and is_free(level, boxes, neighbor):
                distance[neighbor] = distance[cell] + 1
                queue.append(neighbor)
    return distance
