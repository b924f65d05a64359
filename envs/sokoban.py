"""Sokoban as a text environment: ``erlgym/Sokoban-v0``.

Episodes play generated rooms (the default) or levels read from XSB and Boxoban files.
Parsing, the push rules and room generation are in :mod:`erlgym.envs.sokoban_levels`,
the solver that checks generated rooms is in :mod:`erlgym.envs.sokoban_solver`.
"""

from __future__ import annotations

import collections
import functools
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from erlgym.envs import sokoban_levels, sokoban_solver
from erlgym.envs.base import MAX_OBSERVATION_CHARS, TextEnv, Transition
from erlgym.envs.sokoban_levels import MoveOutcome, SokobanLevel, SokobanState

logger = logging.getLogger(__name__)

UP = "up"
DOWN = "down"
LEFT = "left"
RIGHT = "right"
ACTIONS = {UP: ("u",), DOWN: ("d",), LEFT: ("l",), RIGHT: ("r",)}

PLAIN_SYMBOLS = {
    "player": "@",
    "player_on_target": "+",
    "wall": "#",
    "floor": "_",
    "target": ".",
    "box": "$",
    "box_on_target": "*",
}
"""Plain-mode symbols: XSB, except ``_`` for floor, because runs of spaces are hard to count."""

_XSB_ROLES = {
    sokoban_levels.PLAYER: "player",
    sokoban_levels.PLAYER_ON_TARGET: "player_on_target",
    sokoban_levels.WALL: "wall",
    sokoban_levels.FLOOR: "floor",
    sokoban_levels.TARGET: "target",
    sokoban_levels.BOX: "box",
    sokoban_levels.BOX_ON_TARGET: "box_on_target",
}

FILE_LEVEL_STEP_LIMIT = 200
"""Default step limit for levels without a known solution length (files and given boards)."""

MAX_GRID_CHARS = MAX_OBSERVATION_CHARS - 1024
"""Maximum grid text, leaving room in the observation for the feedback and legend lines."""

TASK_KEYS = ("level_file", "level_collection", "level_index")

_BLOCKED_PHRASES = {
    MoveOutcome.BLOCKED_BY_WALL: "into a wall",
    MoveOutcome.BOX_BLOCKED_BY_WALL: "pushing a box into a wall",
    MoveOutcome.BOX_BLOCKED_BY_BOX: "pushing a box into another box",
}

# Worked examples for few_shot_messages: board in XSB, feedback line shown above the
# grid (None on the first observation), a correct first action and one line of reasoning.
FEW_SHOT_EXAMPLES = (
    (
        "#####\n#@$.#\n#####",
        None,
        RIGHT,
        "The box is right of me and the target is past it, so I push right.",
    ),
    (
        "######\n#.$  #\n#   @#\n######",
        "Moving right had no effect: a wall is there.",
        UP,
        "I must stand right of the box to push it left, so I go up first.",
    ),
    (
        "#####\n# @ #\n# $ #\n# . #\n#####",
        "You moved right.",
        DOWN,
        "The box is below me and the target is below it, so I push down.",
    ),
)


def draw_board(level: SokobanLevel, state: SokobanState, symbol_map: Mapping[str, str]) -> str:
    """Return the grid text of ``state``, drawn with a role-to-symbol map like ``PLAIN_SYMBOLS``."""
    symbols = {xsb: symbol_map[role] for xsb, role in _XSB_ROLES.items()}
    return sokoban_levels.format_board(level, state, symbols)


def describe_legend(symbol_map: Mapping[str, str]) -> str:
    """Return the one-line legend shown under the grid in plain mode."""
    return (
        f"Legend: {symbol_map['player']} you, {symbol_map['player_on_target']} you on a target, "
        f"{symbol_map['wall']} wall, {symbol_map['floor']} floor, {symbol_map['target']} target, "
        f"{symbol_map['box']} box, {symbol_map['box_on_target']} box on a target"
    )


def describe_move(
    level: SokobanLevel,
    before: SokobanState,
    after: SokobanState,
    outcome: MoveOutcome,
    action: str,
) -> str:
    """Return the feedback sentence for one valid action."""
    if outcome is MoveOutcome.MOVED:
        return f"You moved {action}."
    if outcome is MoveOutcome.BLOCKED_BY_WALL:
        return f"Moving {action} had no effect: a wall is there."
    if outcome is MoveOutcome.BOX_BLOCKED_BY_WALL:
        return f"Moving {action} had no effect: the box cannot be pushed into a wall."
    if outcome is MoveOutcome.BOX_BLOCKED_BY_BOX:
        return f"Moving {action} had no effect: the box cannot be pushed into another box."

    box = next(iter(after.boxes - before.boxes))
    if box in level.targets:
        sentence = f"You pushed a box {action} onto a target."
    elif after.player in level.targets:
        sentence = f"You pushed a box {action} off its target."
    else:
        sentence = f"You pushed a box {action}."
    if sokoban_levels.is_solved(level, after):
        sentence += " All boxes are on targets."
    elif box in find_dead_cells(level):
        sentence += " That box can no longer reach a target."
    return sentence


@functools.lru_cache(maxsize=256)
def find_dead_cells(level: SokobanLevel) -> frozenset[tuple[int, int]]:
    """Return the level's dead cells (see ``sokoban_solver.find_dead_cells``), cached per level."""
    return sokoban_solver.find_dead_cells(level)


@functools.lru_cache(maxsize=1)
def load_few_shot_levels() -> tuple[SokobanLevel, ...]:
    return tuple(
        sokoban_levels.parse_levels(board, source="few-shot example")[0]
        for board, *_ in FEW_SHOT_EXAMPLES
    )


class SokobanTextEnv(TextEnv):
    """Push every box onto a target in a warehouse of walls.

    ## Description
    The classic Sokoban puzzle. The player walks one cell per action and pushes a
    box by walking into it, if the cell beyond the box is free (floor or target,
    not a wall and not another box). Boxes cannot be pulled, and two boxes in a row
    cannot be pushed. The puzzle is solved when every box is on a target.

    ## Action Space
    ``spaces.Text`` over printable ASCII, up to 4096 characters: the agent's reply.
    The parser reads one of four actions from it: ``up``, ``down``, ``left``,
    ``right`` (aliases ``u``, ``d``, ``l``, ``r``). ``step`` accepts any ``str``.

    ## Observation Space
    ``spaces.Text`` over printable ASCII, up to 8192 characters, described under Text
    protocol. Boards whose grid needs more than 7168 characters are rejected.

    ## Starting State
    Without a level source, each reset generates a room with
    :func:`~erlgym.envs.sokoban_levels.generate_room`: a square of side
    ``min_side``-``max_side`` with a wall border, interior walls, ``num_boxes``
    boxes and as many targets. Generation plays the puzzle backwards from the solved
    position (pulling boxes off their targets), then the solver in
    :mod:`erlgym.envs.sokoban_solver` checks that the shortest solution has between
    ``min_solution_moves`` and ``max_solution_moves`` moves. The room depends only
    on the reset seed and the arguments.

    With ``level_file`` or ``level_collection``, each reset plays the level at
    ``level_index``, or a level drawn from the seed when ``level_index`` is None.

    ``reset(options={"task": task})`` plays one episode on a given task:

    * an int: the room generated from that seed, or the level at that index when
      the env reads a level file or collection;
    * a str: one board in XSB text;
    * a :class:`~erlgym.envs.sokoban_levels.SokobanLevel`;
    * a dict with ``level_file`` or ``level_collection`` and optionally
      ``level_index``, as for the constructor.

    ## Rewards
    1.0 on the step that puts the last box on a target, else 0.0. A reply with no
    valid action gets ``-format_penalty`` and leaves the board unchanged.

    ## Episode End
    Terminated: every box is on a target (``success`` True). Truncated: the step
    limit was reached first. Invalid replies count as steps. A box pushed into a
    corner ends nothing: the episode runs on to the step limit.

    ## Arguments
    * ``level_file``: path of an XSB or Boxoban file. Boards follow the standard
      XSB symbols (see :mod:`erlgym.envs.sokoban_levels`). A malformed board raises
      ``LevelFormatError`` naming the file and line.
    * ``level_collection``: a packaged collection, ``"grigr2001"`` (100 levels by
      GRIGoRusha) or ``"boxoban-medium"`` (the first 1000 Boxoban medium training
      levels, 10x10 with 4 boxes). Not together with ``level_file``.
    * ``level_index``: index of the level in the file or collection. Default None:
      drawn from the seed at each reset.
    * ``min_side``, ``max_side``: side of generated rooms, default 6 and 8.
    * ``num_boxes``: boxes in generated rooms, default 1.
    * ``min_solution_moves``, ``max_solution_moves``: bounds on the shortest
      solution of generated rooms, in moves (pushes included), default 1 and 20.
      Bounds that few rooms meet make ``reset`` raise RuntimeError after 200 draws.
    * ``symbols``: ``"plain"`` or ``"hidden"``, see Text protocol.
    * ``max_steps``: step limit per episode. Default None: twice the shortest
      solution plus 10 for generated rooms, and 200 for levels from files,
      collections or given boards. Their solution length is not computed at reset
      because it would be slow: with 20,000 expanded states, the solver solves 13 of
      the 100 Grigr2001 levels.
    * ``format_penalty``: subtracted from the reward of an invalid reply. Default 0.0.
    * ``render_mode``: None or ``"ansi"``.

    ## Text protocol
    An observation is the grid, one row per line, preceded after each step by a
    feedback line. Plain mode uses the XSB symbols with ``_`` for floor, and a legend
    line follows the grid::

        You pushed a box right.
        #######
        #___###
        #__@$.#
        #_#___#
        #######
        Legend: @ you, + you on a target, # wall, _ floor, . target, $ box, * box on a target

    Cells outside the outer walls are drawn as walls. In hidden mode the seven
    symbols are distinct upper-case letters drawn from the episode's seed, there is
    no legend, and the system prompt states only that a puzzle must be solved.
    Feedback keeps its plain words in both modes, because feedback is how the agent
    learns the hidden rules.

    A reply names its action as ``Action: <up|down|left|right>``, as
    ``<action>right</action>``, or as the bare word; the full rules are in
    :mod:`erlgym.envs.parser`. Feedback lines are ``You moved up.``, ``You pushed a
    box left onto a target.``, ``You pushed a box down off its target.``, ``Moving
    right had no effect: a wall is there.``, ``Moving up had no effect: the box
    cannot be pushed into a wall.`` (or ``into another box``). A push that solves the
    puzzle adds ``All boxes are on targets.``, and a push onto a cell from which no
    push can bring the box to a target adds ``That box can no longer reach a
    target.``. An invalid reply gets ``Invalid action: <reason>. Reply with `Action:
    <up|down|left|right>`.``.

    At the end of an episode, ``info["episode_feedback"]`` adds to the common summary
    the boxes on targets, the boxes stuck on dead cells and the blocked moves by
    cause, for example ``Failed: step limit of 20 reached after 20 moves. 3 actions
    had no effect. 1 of 2 boxes on targets. Blocked moves: 3 pushing a box into a
    wall.``

    ## Version History
    * v0: Initial version.
    """

    actions = ACTIONS
    symbol_roles = PLAIN_SYMBOLS

    def __init__(
        self,
        *,
        level_file: str | Path | None = None,
        level_collection: str | None = None,
        level_index: int | None = None,
        min_side: int = 6,
        max_side: int = 8,
        num_boxes: int = 1,
        min_solution_moves: int = 1,
        max_solution_moves: int = 20,
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
        sokoban_levels.validate_generation_args(
            min_side,
            max_side,
            num_boxes,
            max_solution_moves,
            min_solution_moves,
            sokoban_levels.DEFAULT_FLOOR_FRACTION,
        )
        self.generation_args = {
            "min_side": min_side,
            "max_side": max_side,
            "num_boxes": num_boxes,
            "min_solution_moves": min_solution_moves,
            "max_solution_moves": max_solution_moves,
        }
        self.levels: tuple[SokobanLevel, ...] | None = load_level_source(
            level_file, level_collection
        )
        if level_index is not None and self.levels is None:
            raise ValueError(
                f"level_index={level_index!r} needs a level source: "
                "pass level_file or level_collection"
            )
        self.level_index = level_index
        if self.levels is not None and level_index is not None:
            validate_level_index(level_index, self.levels)

        self.level: SokobanLevel | None = None
        self.state: SokobanState | None = None
        self.solution: list[str] | None = None
        """A shortest solution of the current level, or None when it was not computed."""
        self._blocked_counts: collections.Counter[MoveOutcome] = collections.Counter()

    # ------------------------------------------------------------------ episode

    def _start_episode(self, task: Any) -> None:
        if task is not None:
            level, solution = self._resolve_task(task)
        elif self.levels is not None:
            level, solution = pick_level(self.levels, self.level_index, self.np_random), None
        else:
            level, solution = self._generate(int(self.np_random.integers(2**31)))

        validate_board_size(level)
        self.level, self.solution = level, solution
        self.state = level.initial_state
        self._blocked_counts = collections.Counter()

    def _resolve_task(self, task: Any) -> tuple[SokobanLevel, list[str] | None]:
        if isinstance(task, SokobanLevel):
            return task, None
        if isinstance(task, bool):
            raise ValueError(f"task={task!r} is invalid: {describe_task_forms()}")
        if isinstance(task, int):
            if self.levels is not None:
                return validate_level_index(task, self.levels), None
            return self._generate(task)
        if isinstance(task, str):
            return parse_single_board(task), None
        if isinstance(task, Mapping):
            unknown = sorted(set(task) - set(TASK_KEYS))
            if unknown:
                raise ValueError(f"task has unknown keys {unknown}: use only {list(TASK_KEYS)}")
            levels = load_level_source(task.get("level_file"), task.get("level_collection"))
            if levels is None:
                raise ValueError("task dict needs 'level_file' or 'level_collection'")
            return pick_level(levels, task.get("level_index"), self.np_random), None
        raise ValueError(f"task of type {type(task).__name__} is invalid: {describe_task_forms()}")

    def _generate(self, seed: int) -> tuple[SokobanLevel, list[str]]:
        room = sokoban_levels.generate_room(seed, **self.generation_args)
        return room.level, room.solution

    def _default_step_limit(self) -> int:
        if self.solution is None:
            return FILE_LEVEL_STEP_LIMIT
        return 2 * len(self.solution) + 10

    # ------------------------------------------------------------------ dynamics

    def _apply_action(self, action: str) -> Transition:
        before = self.state
        after, outcome = sokoban_levels.apply_move(self.level, before, action)
        self.state = after
        feedback = describe_move(self.level, before, after, outcome, action)
        if not outcome.changed_state:
            self._blocked_counts[outcome] += 1
            return Transition(False, feedback)

        solved = sokoban_levels.is_solved(self.level, after)
        return Transition(True, feedback, terminated=solved, success=solved)

    def _summarize_episode(self, transition: Transition, truncated: bool) -> str:
        summary = super()._summarize_episode(transition, truncated)
        if transition.success:
            if self.solution is not None:
                summary += f" The shortest solution has {len(self.solution)} moves."
        else:
            summary += " " + self._describe_unsolved_boxes()
        blocked = [
            f"{self._blocked_counts[outcome]} {phrase}"
            for outcome, phrase in _BLOCKED_PHRASES.items()
            if self._blocked_counts[outcome]
        ]
        if blocked:
            summary += " Blocked moves: " + ", ".join(blocked) + "."
        return summary

    def _describe_unsolved_boxes(self) -> str:
        boxes = self.state.boxes
        placed = len(boxes & self.level.targets)
        sentence = f"{placed} of {len(boxes)} boxes on targets."
        stuck = len((boxes - self.level.targets) & find_dead_cells(self.level))
        if stuck == 1:
            sentence += " 1 box is stuck where no push can bring it to a target."
        elif stuck > 1:
            sentence += f" {stuck} boxes are stuck where no push can bring them to a target."
        return sentence

    # ------------------------------------------------------------------ text

    def _render_state(self) -> str:
        grid = draw_board(self.level, self.state, self.symbol_map)
        if self.symbols == "hidden":
            return grid
        return grid + "\n" + describe_legend(self.symbol_map)

    def _describe_rules(self) -> str:
        return (
            "You are @ in a Sokoban puzzle: # is a wall, _ is floor, . is a target, $ is a "
            "box, * is a box on a target and + is you on a target. Each action moves you one "
            "cell up, down, left or right. Walking into a box pushes it one cell the same way "
            "if the cell beyond it is floor or a target. You cannot pull a box or push two "
            "boxes at once. Push every box onto a target to win. A box pushed into a corner "
            "can never leave it."
        )

    def _describe_goal(self) -> str:
        return (
            "You move on a grid of letters, one cell per action. Solve the puzzle to win. "
            "The meaning of the letters is not given: work it out from the feedback."
        )

    def _build_few_shot_examples(self) -> list[tuple[str, str]]:
        symbol_map = self.build_example_symbol_map()
        examples = []
        for level, (_, feedback, action, reasoning) in zip(
            load_few_shot_levels(), FEW_SHOT_EXAMPLES, strict=True
        ):
            observation = draw_board(level, level.initial_state, symbol_map)
            if self.symbols == "plain":
                observation += "\n" + describe_legend(symbol_map)
                reply = self.format_reply(action, reasoning)
            else:
                reply = self.format_reply(action)
            if feedback is not None:
                observation = feedback + "\n" + observation
            examples.append((observation, reply))
        return examples


def load_level_source(
    level_file: str | Path | None, level_collection: str | None
) -> tuple[SokobanLevel, ...] | None:
    """Load the levels of a file or a packaged collection, or return None when neither is given.

    Raises:
        ValueError: both are given, or the collection name is unknown.
        LevelFormatError: a board in the file is malformed.
        OSError: the file cannot be read.
    """
    if level_file is not None and level_collection is not None:
        raise ValueError(
            f"level_file={str(level_file)!r} and level_collection={level_collection!r} are both "
            "set: pass at most one of them"
        )
    if level_file is not None:
        levels = tuple(sokoban_levels.load_level_file(level_file))
    elif level_collection is not None:
        levels = sokoban_levels.load_collection(level_collection)
    else:
        return None
    for level in levels:
        validate_board_size(level)
    return levels


def pick_level(
    levels: tuple[SokobanLevel, ...], index: int | None, rng: np.random.Generator
) -> SokobanLevel:
    """Return ``levels[index]``, or a level drawn with ``rng`` when ``index`` is None."""
    if index is None:
        return levels[int(rng.integers(len(levels)))]
    return validate_level_index(index, levels)


def validate_level_index(index: Any, levels: tuple[SokobanLevel, ...]) -> SokobanLevel:
    """Return ``levels[index]`` if ``index`` is an int in range, else raise ValueError."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(levels):
        raise ValueError(
            f"level_index={index!r} is invalid: use an int from 0 to {len(levels) - 1}"
        )
    return levels[index]


def validate_board_size(level: SokobanLevel) -> None:
    """Raise ValueError if the level's grid text would not fit in an observation."""
    grid_chars = (level.width + 1) * level.height
    if grid_chars > MAX_GRID_CHARS:
        raise ValueError(
            f"level {level.name!r} at {level.source} is {level.height}x{level.width}, "
            f"which needs {grid_chars} characters: the limit is {MAX_GRID_CHARS}"
        )


def parse_single_board(text: str) -> SokobanLevel:
    """Parse a task given as XSB text, which must contain exactly one board."""
    levels = sokoban_levels.parse_levels(text, source="options['task']")
    if len(levels) != 1:
        raise ValueError(f"task text contains {len(levels)} boards: give exactly one")
    return levels[0]


def describe_task_forms() -> str:
    return "use an int, XSB text of one board, a SokobanLevel, or a dict with keys " + ", ".join(
        TASK_KEYS
    )
