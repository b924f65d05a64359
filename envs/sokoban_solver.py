"""A move-optimal Sokoban solver: A* over push states with simple deadlock pruning.

The search expands pushes, not single steps. A state is the set of box cells plus
the player's cell, and its successors are every push the player can reach: walk to
the cell behind a box (shortest walk found by breadth-first search), then push. A
push costs the walk length plus one, so the search minimizes player moves, pushes
included, which is what the environment counts as steps.

The heuristic is the sum over boxes of the fewest pushes that would bring that box to
any target if it were alone on the board. Each push moves one box by one cell and
costs at least one move, so the heuristic never overestimates and never drops by more
than a push costs. A* therefore returns a shortest solution.

Two kinds of deadlock are pruned, and neither prunes a solvable state:

* dead cells: cells from which a lone box can never reach a target (corners, and
  cells along a wall with no target on it). They are found by pulling a box
  backwards from every target.
* 2x2 blocks: after a push, four cells in a square that are all walls or boxes, with
  at least one of those boxes off target. None of those boxes can move again.

The solver reads any level object with ``height``, ``width``, ``walls``, ``targets``,
``boxes`` and ``player`` (``SokobanLevel`` in ``sokoban_levels``), where cells are
``(row, column)`` pairs. It does not import that module because the room generator
there calls this solver.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections import deque
from typing import Protocol

logger = logging.getLogger(__name__)

Cell = tuple[int, int]

# Direction names and (row, column) offsets, in the order successors are generated.
_STEPS: tuple[tuple[str, int, int], ...] = (
    ("up", -1, 0),
    ("down", 1, 0),
    ("left", 0, -1),
    ("right", 0, 1),
)
_UNREACHABLE = -1


class Level(Protocol):
    height: int
    width: int
    walls: frozenset[Cell]
    targets: frozenset[Cell]
    boxes: frozenset[Cell]
    player: Cell


class _Grid:
    """The level's fixed layout as flat indices on a board padded with one ring of wall.

    The padding keeps every neighbor of a floor cell inside the array, so offsets
    never need bounds checks.
    """

    def __init__(self, level: Level):
        self.width = level.width + 2
        self.size = (level.height + 2) * self.width
        self.is_wall = [True] * self.size
        for row in range(level.height):
            for column in range(level.width):
                if (row, column) not in level.walls:
                    self.is_wall[self.index((row, column))] = False
        self.offsets = [(name, dr * self.width + dc) for name, dr, dc in _STEPS]
        self.targets = frozenset(self.index(cell) for cell in level.targets)
        self.push_distance = self.compute_push_distance()

    def index(self, cell: Cell) -> int:
        return (cell[0] + 1) * self.width + cell[1] + 1

    def cell(self, index: int) -> Cell:
        row, column = divmod(index, self.width)
        return (row - 1, column - 1)

    def compute_push_distance(self) -> list[int]:
        """Compute the fewest pushes that bring a lone box from each cell to a target.

        A dead cell gets -1. Pulling runs a push backwards: a box at ``b`` is pulled to ``b + d`` by a
        player who then stands on ``b + 2d``, so both cells must be free of wall.
        """
        distance = [_UNREACHABLE] * self.size
        queue = deque(self.targets)
        for target in self.targets:
            distance[target] = 0
        while queue:
            box = queue.popleft()
            for _, offset in self.offsets:
                pulled_to = box + offset
                player_after = pulled_to + offset
                if not (0 <= player_after < self.size):
                    continue
                if (
                    self.is_wall[pulled_to]
                    or self.is_wall[player_after]
                    or distance[pulled_to] != _UNREACHABLE
                ):
                    continue
                distance[pulled_to] = distance[box] + 1
                queue.append(pulled_to)
        return distance


def find_dead_cells(level: Level) -> frozenset[Cell]:
    """Return the floor cells from which a box alone on the board can never reach a target."""
    grid = _Grid(level)
    return frozenset(
        grid.cell(index)
        for index in range(grid.size)
        if not grid.is_wall[index] and grid.push_distance[index] == _UNREACHABLE
    )


def solve(level: Level, max_nodes: int = 100_000) -> list[str] | None:
    """Return a shortest solution as direction names ("up", "down", "left", "right"), or None.

    None means that the level has no solution or that more than ``max_nodes`` push
    states were expanded before one was found. A DEBUG log message records which.
    An already solved level returns an empty list.
    """
    grid = _Grid(level)
    start_boxes = frozenset(grid.index(cell) for cell in level.boxes)
    start = (grid.index(level.player), start_boxes)
    if any(grid.push_distance[box] == _UNREACHABLE for box in start_boxes):
        logger.debug("no solution: a box starts on a dead cell")
        return None

    # parents maps a state to (previous state, (box pushed, direction name)). The
    # walks between pushes are recomputed when the solution is rebuilt.
    parents: dict[tuple[int, frozenset[int]], tuple | None] = {start: None}
    best_cost = {start: 0}
    tie_breaker = itertools.count()
    frontier = [(estimate_cost(grid, start_boxes), 0, next(tie_breaker), start)]
    expanded = 0

    while frontier:
        _, cost, _, state = heapq.heappop(frontier)
        if cost > best_cost[state]:
            continue
        player, boxes = state
        if boxes == grid.targets:
            return rebuild_moves(grid, parents, state)
        expanded += 1
        if expanded > max_nodes:
            logger.debug("no solution within the budget of %d expanded states", max_nodes)
            return None

        for next_state, step_cost, push in generate_pushes(grid, player, boxes):
            next_cost = cost + step_cost
            if next_cost < best_cost.get(next_state, next_cost + 1):
                best_cost[next_state] = next_cost
                parents[next_state] = (state, push)
                priority = next_cost + estimate_cost(grid, next_state[1])
                heapq.heappush(frontier, (priority, next_cost, next(tie_breaker), next_state))

    logger.debug("no solution: all %d reachable push states expanded", expanded)
    return None


def estimate_cost(grid: _Grid, boxes: frozenset[int]) -> int:
    return sum(grid.push_distance[box] for box in boxes)


def generate_pushes(grid: _Grid, player: int, boxes: frozenset[int]):
    """Yield ``(next state, moves taken, (box, direction name))`` for each useful push."""
    walk_distance = measure_walks(grid, player, boxes)
    for box in boxes:
        for name, offset in grid.offsets:
            stand = box - offset
            destination = box + offset
            if walk_distance[stand] == _UNREACHABLE:
                continue
            if (
                grid.is_wall[destination]
                or destination in boxes
                or grid.push_distance[destination] == _UNREACHABLE
            ):
                continue
            moved = (boxes - {box}) | {destination}
            if forms_frozen_block(grid, moved, destination):
                continue
            yield (box, moved), walk_distance[stand] + 1, (box, name)


def measure_walks(grid: _Grid, start: int, boxes: frozenset[int]) -> list[int]:
    """Breadth-first walking distance from ``start`` to every cell, with boxes as obstacles."""
    distance = [_UNREACHABLE] * grid.size
    distance[start] = 0
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        for _, offset in grid.offsets:
            neighbor = cell + offset
            if (
                distance[neighbor] == _UNREACHABLE
                and not grid.is_wall[neighbor]
                and neighbor not in boxes
            ):
                distance[neighbor] = distance[cell] + 1
                queue.append(neighbor)
    return distance


def forms_frozen_block(grid: _Grid, boxes: frozenset[int], moved_box: int) -> bool:
    """Return whether ``moved_box`` completes a 2x2 square of walls and boxes, one off target."""
    for corner in (moved_box, moved_box - 1, moved_box - grid.width, moved_box - grid.width - 1):
        square = (corner, corner + 1, corner + grid.width, corner + grid.width + 1)
        if not all(grid.is_wall[cell] or cell in boxes for cell in square):
            continue
        if any(cell in boxes and cell not in grid.targets for cell in square):
            return True
    return False


def rebuild_moves(grid: _Grid, parents: dict, goal: tuple[int, frozenset[int]]) -> list[str]:
    """Turn the chain of pushes that ends at ``goal`` into single moves."""
    pushes = []
    state = goal
    while parents[state] is not None:
        previous, push = parents[state]
        pushes.append((previous, push))
        state = previous
    pushes.reverse()

    moves: list[str] = []
    for (player, boxes), (box, name) in pushes:
        offset = dict(grid.offsets)[name]
        moves.extend(find_walk(grid, player, box - offset, boxes))
        moves.append(name)
    return moves


def find_walk(grid: _Grid, start: int, goal: int, boxes: frozenset[int]) -> list[str]:
    """Return a shortest walk from ``start`` to ``goal`` around the boxes, as direction names."""
    came_from: dict[int, tuple[int, str] | None] = {start: None}
    queue = deque([start])
    while queue and goal not in came_from:
        cell = queue.popleft()
        for name, offset in grid.offsets:
            neighbor = cell + offset
            if neighbor not in came_from and not grid.is_wall[neighbor] and neighbor not in boxes:
                came_from[neighbor] = (cell, name)
                queue.append(neighbor)

    walk = []
    cell = goal
    while came_from[cell] is not None:
        cell, name = came_from[cell]
        walk.append(name)
    walk.reverse()
    return walk
