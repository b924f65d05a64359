"""Draw a scene from riddle-like clues with an image tool.

Each episode names a target scene of :mod:`erlgym.bitimage.scenes` (one shape, colour,
position and size) only through clues, such as "the colour of a clear sky" for blue.
The agent works out the four words and calls the image tool with them. The reward
checks the attributes of the scene the tool parsed from the description, so training
needs no trained image generator.

:mod:`erlgym.bitimage`, and with it torch, is imported on the first tool call that
runs (or in the constructor when a model is given), so creating and resetting the
environment without a model does not import torch.
"""

from __future__ import annotations

import functools
import itertools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from erlgym.envs.base import (
    DEFAULT_FEW_SHOT_EXAMPLES,
    MAX_OBSERVATION_CHARS,
    PRINTABLE,
    RENDER_MODES,
    validate_format_penalty,
    validate_max_steps,
    validate_render_mode,
)
from erlgym.envs.parser import MAX_REPLY_CHARS
from erlgym.envs.search_corpus import collapse_whitespace, shorten, to_printable
from erlgym.envs.tool_calls import ToolCall, ToolCallParser
from erlgym.envs.tool_env import ToolTextEnv, count_noun, fit_observation


TOOLS = ("vocabulary", "draw")
"""Tool names. ``vocabulary`` is first and takes no argument."""
TOOL_ARGUMENT_NAMES = {"draw": "a description"}
FORMAT_HINT = "Action: <tool>[<argument>]"
TOOL_FORMATS = "`Action: draw[<size> <colour> <shape> <position>]` or `Action: vocabulary[]`"
"""The tool calls, as an invalid reply's feedback lists them."""

ATTRIBUTES = ("shape", "colour", "position", "size")
"""Scene attributes in the order of :data:`erlgym.bitimage.scenes.ATTRIBUTES`."""

DEFAULT_MAX_STEPS = 3
SPLITS = ("auto", "train", "eval", "all")
EVAL_SEED_START = 1_000_000
"""First seed that ``split="auto"`` plays from the eval split. It equals the trainer's
offset of held-out evaluation seeds, so training and evaluation see different targets."""
EVAL_SCENE_MODULUS = 5
JUDGES = ("description", "image")
BUNDLED_MODEL = "bundled"
"""Value of ``model`` that selects the bitimage checkpoint shipped with erlgym."""

# Clue tables: attribute -> vocabulary word -> clue phrasings. The keys are the
# vocabularies of erlgym.bitimage.scenes in their order, which a test checks, so a
# target can be drawn without importing that module (and torch). Every word has at
# least three phrasings, and the last one is kept for the eval split (see SPLITS). A
# phrasing never contains its own word, except the "middle" clues of center, which the
# parser reads as center anyway.
SHAPE_CLUES: dict[str, tuple[str, ...]] = {
    "circle": (
        "the shape with no corners",
        "the outline of a full moon",
        "the shape of a coin lying flat, seen from above",
    ),
    "square": (
        "the shape with four equal sides and four right angles",
        "the shape of one face of a die, seen head-on",
        "the shape of a sticky note, seen head-on",
    ),
    "triangle": (
        "the shape with three corners",
        "the shape of a yield road sign",
        "the shape with exactly three straight sides",
    ),
    "cross": (
        "two crossing bars",
        "the shape of a plus sign",
        "the symbol for addition",
    ),
}
COLOUR_CLUES: dict[str, tuple[str, ...]] = {
    "red": ("the colour of ripe tomatoes", "the colour of a strawberry", "the colour of a fire engine"),
    "green": ("the colour of fresh grass", "the colour of an emerald", "the colour of a four-leaf clover"),
    "blue": ("the colour of a clear sky", "the colour of a sapphire", "the colour of denim jeans"),
    "yellow": ("the colour of the sun in children's drawings", "the colour of a lemon", "the colour of a ripe banana"),
    "purple": ("the colour of lavender", "the colour of an amethyst", "the colour of a violet flower"),
    "white": ("the colour of fresh snow", "the colour of milk", "the colour of a polar bear's fur"),
}
POSITION_CLUES: dict[str, tuple[str, ...]] = {
    "top-left": (
        "the corner where you start reading a page of English text",
        "the corner the hour hand of a clock points to at half past ten",
        "the north-west corner of a map",
    ),
    "top-right": (
        "the corner the hour hand of a clock points to at half past one",
        "the upper corner on the side where a line of English text ends",
        "the north-east corner of a map",
    ),
    "bottom-left": (
        "the corner where the two axes of an ordinary graph meet",
        "the corner the hour hand of a clock points to at half past seven",
        "the south-west corner of a map",
    ),
    "bottom-right": (
        "the corner where you finish reading a page of English text",
        "the corner the hour hand of a clock points to at half past four",
        "the south-east corner of a map",
    ),
    "center": (
        "the middle of the picture",
        "the point where the two diagonals of the picture cross",
        "the spot equally far from all four corners",
    ),
}
SIZE_CLUES: dict[str, tuple[str, ...]] = {
    "small": (
        "tiny, about a quarter as wide as the picture",
        "no bigger than a postage stamp on an envelope",
        "the smaller of the two sizes the image tool draws",
    ),
    "large": (
        "filling much of the picture",
        "about two fifths as wide as the picture, easy to see from across a room",
        "the bigger of the two sizes the image tool draws",
    ),
}
CLUE_TABLES: dict[str, dict[str, tuple[str, ...]]] = {
    "shape": SHAPE_CLUES,
    "colour": COLOUR_CLUES,
    "position": POSITION_CLUES,
    "size": SIZE_CLUES,
}


@dataclass(frozen=True)
class DrawTask:
    """Target scene of one episode and the clue phrasing shown for each attribute.

    ``clue_indices`` index the phrasings of each attribute's word in :data:`CLUE_TABLES`,
    in :data:`ATTRIBUTES` order.

    Raises:
        ValueError: If a word is not in its clue table or a clue index is out of range.
    """

    shape: str
    colour: str
    position: str
    size: str
    clue_indices: tuple[int, int, int, int] = (0, 0, 0, 0)

    def __post_init__(self) -> None:
        if len(self.clue_indices) != len(ATTRIBUTES):
            raise ValueError(f"clue_indices={self.clue_indices!r} is invalid: give {len(ATTRIBUTES)} ints")
        for attribute, index in zip(ATTRIBUTES, self.clue_indices):
            word = getattr(self, attribute)
            table = CLUE_TABLES[attribute]
            if word not in table:
                raise ValueError(f"{attribute}={word!r} is invalid: use one of {', '.join(table)}")
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < len(table[word]):
                raise ValueError(
                    f"clue index {index!r} of {attribute} {word!r} is invalid: use 0 to {len(table[word]) - 1}"
                )

    @property
    def prompt(self) -> str:
        """Canonical description, ``"<size> <colour> <shape> <position>"``, as ``Scene.prompt`` writes it."""
        return f"{self.size} {self.colour} {self.shape} {self.position}"

    def attributes(self) -> dict[str, str]:
        """Return the target's word per attribute, in :data:`ATTRIBUTES` order."""
        return {attribute: getattr(self, attribute) for attribute in ATTRIBUTES}

    def clues(self) -> dict[str, str]:
        """Return the clue phrasing shown for each attribute."""
        return {
            attribute: CLUE_TABLES[attribute][getattr(self, attribute)][index]
            for attribute, index in zip(ATTRIBUTES, self.clue_indices)
        }


def split_scenes(split: str) -> list[tuple[str, str, str, str]]:
    """Return the target scenes of ``split`` ("train", "eval" or "all") as word tuples in :data:`ATTRIBUTES` order.

    A scene is an eval scene when the sum of its words' positions in their vocabularies
    is divisible by 5: 48 eval and 192 train scenes, and every word occurs in both.
    """
    vocabularies = [list(CLUE_TABLES[attribute]) for attribute in ATTRIBUTES]
    scenes = list(itertools.product(*vocabularies))
    if split == "all":
        return scenes

    def is_eval(scene: tuple[str, ...]) -> bool:
        return sum(vocabulary.index(word) for vocabulary, word in zip(vocabularies, scene)) % EVAL_SCENE_MODULUS == 0

    return [scene for scene in scenes if is_eval(scene) == (split == "eval")]


def split_clue_indices(attribute: str, word: str, split: str) -> range:
    """Return the clue phrasings of ``word`` that ``split`` uses: the last for "eval", the others for "train"."""
    count = len(CLUE_TABLES[attribute][word])
    if split == "eval":
        return range(count - 1, count)
    if split == "train":
        return range(count - 1)
    return range(count)


def draw_task(rng: np.random.Generator, split: str = "all") -> DrawTask:
    """Draw a target uniformly over the scenes of ``split``, then one of its clue phrasings per attribute."""
    scenes = split_scenes(split)
    words = scenes[int(rng.integers(len(scenes)))]
    clue_indices = []
    for attribute, word in zip(ATTRIBUTES, words):
        choices = split_clue_indices(attribute, word, split)
        clue_indices.append(choices[int(rng.integers(len(choices)))])
    return DrawTask(*words, clue_indices=tuple(clue_indices))


def coerce_task(task: Any) -> DrawTask:
    """Turn ``options["task"]`` into a :class:`DrawTask`.

    Accepts a :class:`DrawTask`, a dict of its fields (``clue_indices`` optional), or
    an object with ``shape``, ``colour``, ``position`` and ``size`` attributes such as a
    ``bitimage`` ``Scene``. Without clue indices the first phrasing of each word is used.

    Raises:
        ValueError: If the task has another type, lacks an attribute or names an unknown word.
    """
    if isinstance(task, DrawTask):
        return task
    if isinstance(task, dict):
        unknown = set(task) - {*ATTRIBUTES, "clue_indices"}
        if unknown:
            raise ValueError(
                f"options['task'] has unknown keys {sorted(unknown)}: use {', '.join(ATTRIBUTES)}, clue_indices"
            )
        missing = [attribute for attribute in ATTRIBUTES if attribute not in task]
        if missing:
            raise ValueError(f"options['task'] is missing {', '.join(missing)}: give {', '.join(ATTRIBUTES)}")
        return DrawTask(**{**task, "clue_indices": tuple(task.get("clue_indices", (0, 0, 0, 0)))})
    if all(hasattr(task, attribute) for attribute in ATTRIBUTES):
        return DrawTask(*(getattr(task, attribute) for attribute in ATTRIBUTES))
    raise ValueError(
        f"options['task'] has type {type(task).__name__}: pass a DrawTask, a dict of its fields or a Scene"
    )


def write_riddle(task: DrawTask, direct: bool = False) -> str:
    """Write the task statement: one line per attribute, as a clue or (``direct``) as the plain word."""
    stated = task.attributes() if direct else task.clues()
    lines = ["Draw one shape on a black background that matches these clues:"]
    for attribute in ATTRIBUTES:
        lines.append(f"- {attribute.capitalize()}: {stated[attribute]}.")
    return "\n".join(lines)


@dataclass(frozen=True)
class DrawOutcome:
    """Result of one reply, valid or not.

    Attributes:
        valid: Whether the reply made a tool call that ran. A description the image
            tool rejects makes the call invalid.
        effective: Whether the call showed something new: the first vocabulary list,
            or a drawing.
        feedback: One or two sentences for ``info["feedback"]``.
        result: The observation text, without the steps-left line.
        terminated: Whether the call drew a scene.
        drawn: The parsed attributes of the drawn scene, for a drawing.
        image_path: The PNG written, when one was.
    """

    valid: bool
    effective: bool
    feedback: str
    result: str
    terminated: bool = False
    drawn: dict[str, str] | None = None
    image_path: Path | None = None


class DrawSceneTextEnv(ToolTextEnv):
    """Work out a scene from clues and draw it with an image tool.

    ## Description
    Each episode has a target scene: one shape (circle, square, triangle, cross) of one
    colour (red, green, blue, yellow, purple, white), at one position (top-left,
    top-right, bottom-left, bottom-right, center), in one of two sizes (small, large).
    The observation states each attribute only as a clue, for example "Colour: the
    colour of a clear sky." (blue) or "Position: the corner where you start reading a
    page of English text." (top-left). The agent must turn the clues into the image
    tool's words and call the tool once with a description of the scene.

    ## Action Space
    ``spaces.Text`` over printable ASCII, up to 4096 characters: the agent's reply,
    which makes one tool call (see Text protocol). ``step`` accepts any ``str``.

    ## Observation Space
    ``spaces.Text`` over printable ASCII, up to 8192 characters: the clues, then the
    result of each tool call.

    ## Starting State
    ``reset(seed=N)`` draws the target uniformly over the scenes of the split and one
    of the split's clue phrasings of each attribute, from the seed, so the same seed
    gives the same episode. The splits (see :func:`split_scenes`):

    * ``"train"``: 192 of the 240 scenes, with every phrasing of a word but its last;
    * ``"eval"``: the other 48 scenes, with the last phrasing of each word, so an eval
      episode has a scene and wording that training never showed;
    * ``"all"``: every scene and phrasing;
    * ``"auto"`` (default): the train split for seeds below 1,000,000 and unseeded
      resets, and the eval split from 1,000,000 on. The ERL trainer trains on seeds
      from 0 and evaluates on seeds from 1,000,000, so its held-out evaluation plays
      the eval split.

    ``reset(options={"task": task})`` plays a given :class:`DrawTask`, a dict of its
    fields or a ``bitimage`` ``Scene``, whatever the split.

    ## Rewards
    The first description the image tool accepts ends the episode. By default
    (``judge="description"``) its parsed attributes are compared with the target: 1.0
    when all four match, else 0.0, the same with a trained generator and without one.
    With ``judge="image"`` the drawn pixels are compared instead: the bitimage verifier
    (:mod:`erlgym.bitimage.verifier`) reads the four attributes from the image, so a
    generator mistake costs reward as a wrong word does. With ``partial_credit=True``
    the reward is the fraction of matching attributes (0.25 per attribute). Other valid
    calls earn 0.0. An invalid reply, including a description the tool rejects, earns
    ``-format_penalty``.

    ## Episode End
    Terminated: a ``draw`` call with a description the tool accepts (``success`` is
    True when all four attributes match). Truncated: ``max_steps`` replies without
    such a call. Invalid replies count as steps.

    ## Arguments
    * ``model``: ``"bundled"`` for the checkpoint that ships with erlgym, or a
      ``bitimage`` model folder written by ``erlgym image train``. Each drawing is
      then generated by :class:`~erlgym.bitimage.tool.ImageTool` and written as a
      PNG. None (default) renders the parsed scene procedurally with
      :func:`~erlgym.bitimage.scenes.render` instead, which is faster and does not
      import torch. The reward is the same either way (see Rewards).
    * ``image_dir``: folder for the PNG files, created if missing; a path where files
      cannot be written raises ValueError. With a model and no ``image_dir``, the files
      go to a new temporary folder that ``close()`` deletes. Without a model, a PNG is
      written only when ``image_dir`` is given. Environments may share one
      ``image_dir``: the image tool never writes over an existing file.
    * ``direct``: state the target's words plainly instead of as clues, for debugging.
    * ``split``: ``"auto"``, ``"train"``, ``"eval"`` or ``"all"``, see Starting State.
    * ``judge``: ``"description"`` (default) or ``"image"``, see Rewards. ``"image"``
      loads the bundled verifier in the constructor, which imports torch.
    * ``partial_credit``: see Rewards. Default False.
    * ``max_steps``: replies per episode, at least 1. Default 3.
    * ``format_penalty``: non-negative amount subtracted from an invalid reply's reward.
    * ``render_mode``: None or ``"ansi"``, which returns the last observation.

    ## Text protocol
    A reply makes one tool call on its own line, parsed by
    :mod:`erlgym.envs.tool_calls` (the last call line counts):

    * ``Action: draw[<description>]`` calls the image tool. The description names a
      shape, a colour and a position and optionally a size (large when missing), in
      any order, with filler words allowed: ``large blue circle top-left`` and ``a
      blue circle in the top left corner`` give the same scene. The
      observation then shows the parsed attributes and the image file, if any.
    * ``Action: vocabulary[]`` (or ``Action: vocabulary``) lists the words the image
      tool reads, per attribute.

    The first observation is the clue list, a reminder of the tool calls and ``Steps
    left: N.``. An invalid reply (no tool call, an unknown tool, ``draw`` without a
    description) gets ``Invalid tool call: <reason>. Reply with ...``. A description
    with an unknown word, a missing attribute or two words for one attribute gets the
    image tool's error, which names the valid words, and costs a step.

    ``info`` after ``step`` contains ``action`` (the tool name, or None for an invalid
    reply), ``action_valid``, ``action_effective``, ``success``, ``feedback``,
    ``steps``, ``num_invalid_actions``, ``num_ineffective_actions``, ``target`` (the
    target's description), ``drawn`` (the parsed description, or None), ``seen`` (with
    ``judge="image"``, the scene the verifier read from the image, else None),
    ``matched_attributes`` (count, 0 to 4, of the judged attributes) and ``image_path``
    (a string, or None when no PNG was written). The last step adds ``episode_feedback``, for example
    ``Failed: the drawn colour (red) does not match its clue. The shape, position and
    size were right.`` It names the drawn value of each wrong attribute, never the
    target's.

    ## Version History
    * v0: Initial version.
    """

    metadata: dict[str, Any] = {"render_modes": list(RENDER_MODES), "render_fps": 4}

    action_names = TOOLS

    outcome_type = DrawOutcome
    tool_formats = TOOL_FORMATS
    last_step_hint = "Your next reply must draw: Action: draw[<description>]."

    def __init__(
        self,
        *,
        model: str | Path | None = None,
        image_dir: str | Path | None = None,
        direct: bool = False,
        split: str = "auto",
        judge: str = "description",
        partial_credit: bool = False,
        max_steps: int = DEFAULT_MAX_STEPS,
        format_penalty: float = 0.0,
        render_mode: str | None = None,
    ) -> None:
        max_steps = validate_max_steps(max_steps)
        if max_steps is None:
            raise ValueError("max_steps=None is invalid: use an int of at least 1")
        self.max_steps = max_steps
        self.direct = bool(direct)
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is invalid: use one of {SPLITS}")
        self.split = split
        if judge not in JUDGES:
            raise ValueError(f"judge={judge!r} is invalid: use one of {JUDGES}")
        self.judge = judge
        self._verifier = _load_verifier() if judge == "image" else None
        self.partial_credit = bool(partial_credit)
        self.format_penalty = validate_format_penalty(format_penalty)
        self.render_mode = validate_render_mode(render_mode)
        self.image_dir = _prepare_image_dir(image_dir) if image_dir is not None else None
        self._temporary_image_dir: Path | None = None
        self.use_bundled_model = model == BUNDLED_MODEL
        self.model_path = Path(model) if model is not None and not self.use_bundled_model else None
        uses_model = self.use_bundled_model or self.model_path is not None
        self._image_tool = self._load_image_tool() if uses_model else None

        self._parser = ToolCallParser(TOOLS, TOOL_ARGUMENT_NAMES, no_argument_tools=("vocabulary",))
        self.action_space = spaces.Text(max_length=MAX_REPLY_CHARS, min_length=0, charset=PRINTABLE)
        self.observation_space = spaces.Text(max_length=MAX_OBSERVATION_CHARS, min_length=1, charset=PRINTABLE)

        self.task: DrawTask | None = None
        self.last_image: np.ndarray | None = None
        """The last drawn image, uint8 of shape (32, 32, 3), or None before a drawing."""
        self._image_seed = 0
        self._reset_episode_state()
        self._episode_over = True
        self._end_flags = (False, False)
        self._warned_after_end = False
        self._last_observation = ""

    def _load_image_tool(self) -> Any:
        """Load the model folder once. Raises ``ImageModelError`` for a missing or broken folder."""
        from erlgym.bitimage.checkpoint import load_model
        from erlgym.bitimage.tool import ImageTool

        # Loaded before the temporary folder is made, so a bad model path leaves no empty folder.
        # A model_path of None loads the bundled checkpoint.
        model = load_model(self.model_path)
        if self.image_dir is None:
            self._temporary_image_dir = Path(tempfile.mkdtemp(prefix="erlgym-draw-scene-"))
        return ImageTool(model, self.image_dir or self._temporary_image_dir)

    def close(self) -> None:
        """Delete the temporary image folder, if this environment made one, with the PNGs in it."""
        if self._temporary_image_dir is not None:
            shutil.rmtree(self._temporary_image_dir, ignore_errors=True)
            self._temporary_image_dir = None
        super().close()

    def _reset_episode_state(self) -> None:
        self._steps = 0
        self._num_invalid = 0
        self._num_ineffective = 0
        self._num_rejected = 0
        self._success = False
        self._vocabulary_shown = False
        self._drawn: dict[str, str] | None = None
        self._judged: dict[str, str] | None = None
        self._image_path: Path | None = None

    # ------------------------------------------------------------------ episode

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Start an episode on ``options["task"]`` when given, else on a target drawn from the seed.

        Raises:
            ValueError: If ``options["task"]`` is not a valid task (see :func:`coerce_task`).
        """
        super().reset(seed=seed)
        task = (options or {}).get("task")
        drawn_task = draw_task(self.np_random, self._split_for_seed(seed))
        self.task = coerce_task(task) if task is not None else drawn_task
        self._image_seed = int(self.np_random.integers(2**31))
        self._reset_episode_state()
        self.last_image = None
        self._episode_over = False
        self._warned_after_end = False

        riddle = write_riddle(self.task, self.direct)
        observation = "\n".join([riddle, self._describe_tools(), self._describe_steps_left()])
        self._last_observation = fit_observation(observation)
        return self._last_observation, {
            "success": False,
            "feedback": "",
            "steps": 0,
            "num_invalid_actions": 0,
            "num_ineffective_actions": 0,
            "target": self.task.prompt,
        }

    def _split_for_seed(self, seed: int | None) -> str:
        if self.split != "auto":
            return self.split
        return "eval" if seed is not None and seed >= EVAL_SEED_START else "train"

    # ------------------------------------------------------------------ tools

    def _run_tool(self, call: ToolCall) -> DrawOutcome:
        if call.tool == "vocabulary":
            return self._show_vocabulary()
        return self._draw(call.argument)

    def _reward(self, outcome: DrawOutcome) -> float:
        return self._score(self._judged) if outcome.drawn is not None else 0.0

    def _show_vocabulary(self) -> DrawOutcome:
        from erlgym.bitimage.tool import vocabulary_text

        is_new = not self._vocabulary_shown
        self._vocabulary_shown = True
        text = f"The image tool reads these words: {vocabulary_text()}."
        return DrawOutcome(True, is_new, "You listed the image tool's vocabulary.", text)

    def _draw(self, description: str) -> DrawOutcome:
        """Draw ``description`` with the image tool, or procedurally without a model."""
        if self._image_tool is not None:
            result = self._image_tool.generate_image(description, seed=self._image_seed)
            error, scene, image, path = result.error, result.scene, result.image, result.path
        else:
            error, scene = _parse_like_image_tool(description)
            image, path = None, None
            if scene is not None:
                image, path = self._render_without_model(scene)

        if error:
            self._num_rejected += 1
            text = f"The image tool rejected the description: {_fold_tool_error(error)}."
            return DrawOutcome(False, False, text, text)

        self.last_image = image
        drawn = {attribute: getattr(scene, attribute) for attribute in ATTRIBUTES}
        self._drawn, self._image_path = drawn, path
        self._judged = self._read_image(image) if self._verifier is not None else drawn
        matched = self._count_matches(self._judged)
        self._success = matched == len(ATTRIBUTES)
        drawing_name = f"image {path.name}" if path is not None else "a picture"
        feedback = (
            f"You drew {drawing_name} of a {scene.prompt}: "
            f"{matched} of {len(ATTRIBUTES)} attributes match the clues."
        )
        return DrawOutcome(True, True, feedback, feedback, terminated=True, drawn=drawn, image_path=path)

    def _render_without_model(self, scene: Any) -> tuple[np.ndarray, Path | None]:
        from erlgym.bitimage.checkpoint import save_png
        from erlgym.bitimage.scenes import render

        image = render(scene)
        if self.image_dir is None:
            return image, None
        name = f"{self._image_seed:010d}-{scene.prompt.replace(' ', '-')}.png"
        return image, save_png(image, self.image_dir / name)

    def _read_image(self, image: np.ndarray) -> dict[str, str]:
        """Return the attributes the verifier reads from a uint8 image (32, 32, 3)."""
        from erlgym.bitimage.verifier import images_to_tensor

        # The clue tables list each vocabulary in the order of the verifier's class ids.
        predicted, _ = self._verifier.predict(images_to_tensor(image[None]))
        return {attribute: list(CLUE_TABLES[attribute])[int(index)]
                for attribute, index in zip(ATTRIBUTES, predicted[0])}

    def _count_matches(self, drawn: dict[str, str]) -> int:
        assert self.task is not None
        return sum(drawn[attribute] == getattr(self.task, attribute) for attribute in ATTRIBUTES)

    def _score(self, drawn: dict[str, str]) -> float:
        matched = self._count_matches(drawn)
        if self.partial_credit:
            return matched / len(ATTRIBUTES)
        return 1.0 if matched == len(ATTRIBUTES) else 0.0

    # ------------------------------------------------------------------ text

    def _describe_tools(self) -> str:
        return (
            "Reply with `Action: draw[<size> <colour> <shape> <position>]` to draw the scene, "
            "or `Action: vocabulary[]` to list the words the image tool reads."
        )

    def _task_info(self) -> dict[str, Any]:
        assert self.task is not None
        return {
            "target": self.task.prompt,
            "drawn": _describe(self._drawn) if self._drawn is not None else None,
            "matched_attributes": self._count_matches(self._judged) if self._judged is not None else 0,
            "seen": _describe(self._judged) if self._judged is not None and self.judge == "image" else None,
            "image_path": str(self._image_path) if self._image_path is not None else None,
        }

    def _summarize_episode(self, truncated: bool) -> str:
        """Write the end-of-episode feedback: which attributes were wrong, never their right values."""
        if truncated or self._drawn is None:
            parts = [f"Failed: step limit of {self.max_steps} reached without a drawing."]
        elif self._success:
            parts = [f"Succeeded: your drawing of a {_describe(self._judged)} matches every clue."]
        else:
            parts = [_describe_mismatch(self._judged, self.task.attributes())]
            if self._judged != self._drawn:
                parts.append(f"The image shows a {_describe(self._judged)}, although the description asked for a "
                             f"{_describe(self._drawn)}.")
        if self._num_invalid:
            invalid = count_noun(self._num_invalid, "invalid tool call")
            if self._num_rejected:
                invalid += f", {self._num_rejected} of them a description the image tool rejected"
            parts.append(invalid + ".")
        return " ".join(parts)

    # ------------------------------------------------------------------ prompts

    @property
    def system_prompt(self) -> str:
        """System message: the task, the two tools and the reply format."""
        return (
            "Draw the scene the clues describe with an image tool. The scene is one shape on a black "
            "background, and each clue names one attribute indirectly: its shape, colour, position or size. "
            "Work out the word for each attribute, then call the tool once. Each reply is one step: at most "
            f"one short line of reasoning, then one tool call on its own line as `{FORMAT_HINT}`. The tools are:\n"
            "Action: draw[<size> <colour> <shape> <position>] draws the scene and ends the episode, "
            "for example draw[small red square top-left].\n"
            "Action: vocabulary[] lists the words the image tool reads.\n"
            f"You have {self.max_steps} steps. A description with a word the tool does not read costs a step."
        )

    def format_reply(self, tool: str, argument: str = "", reasoning: str | None = None) -> str:
        """Write a reply in the reply format, such as ``"Sky is blue.\\nAction: draw[large blue circle center]"``."""
        line = f"Action: {tool}[{argument}]"
        return line if not reasoning else f"{reasoning}\n{line}"

    def few_shot_messages(self, num_examples: int = DEFAULT_FEW_SHOT_EXAMPLES) -> list[dict[str, str]]:
        """Build a worked episode as alternating user and assistant chat messages.

        The example lists the vocabulary, makes a description with a word the tool does
        not read, and then draws the right scene. Its observations come from this class
        without a model, with this environment's ``max_steps`` (at least 3), and always
        state clues, also when ``direct`` is set. ``num_examples`` is the number of (observation, reply) turns.

        Raises:
            ValueError: If ``num_examples`` is negative or more than 3.
        """
        turns = _example_turns(max(self.max_steps, len(EXAMPLE_REPLIES)))
        if not 0 <= num_examples <= len(turns):
            raise ValueError(f"num_examples={num_examples} is out of range: use 0 to {len(turns)}")
        messages = []
        for observation, reply in turns[:num_examples]:
            messages.append({"role": "user", "content": observation})
            messages.append({"role": "assistant", "content": reply})
        return messages


# ---------------------------------------------------------------------- helpers


def _load_verifier() -> Any:
    from erlgym.bitimage.verifier import load_verifier

    return load_verifier()


def _prepare_image_dir(image_dir: str | Path) -> Path:
    """Create ``image_dir`` if needed and return it; raise ValueError when PNG files cannot be written there."""
    folder = Path(image_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(f"image_dir={str(image_dir)!r} is not a writable folder ({error.strerror}): "
                         f"pass a folder path where PNG files can be written") from error
    return folder


def _parse_like_image_tool(description: str) -> tuple[str, Any]:
    """Check and parse a description as :meth:`ImageTool.generate_image` does, and return (error, scene).

    NOTE: this copies the tool's empty and length checks and their messages, so a change
    there must be made here too.
    """
    from erlgym.bitimage.scenes import DescriptionError, parse_description
    from erlgym.bitimage.tool import MAX_DESCRIPTION_CHARS, vocabulary_text

    if not description.strip():
        return f"the description must be a non-empty text naming the attributes ({vocabulary_text()})", None
    if len(description) > MAX_DESCRIPTION_CHARS:
        return (
            f"the description has {len(description)} characters, more than {MAX_DESCRIPTION_CHARS}; "
            f"name only the attributes ({vocabulary_text()})"
        ), None
    try:
        return "", parse_description(description)
    except DescriptionError as error:
        return str(error), None


def _describe(drawn: dict[str, str]) -> str:
    return f"{drawn['size']} {drawn['colour']} {drawn['shape']} {drawn['position']}"


def _describe_mismatch(drawn: dict[str, str], target: dict[str, str]) -> str:
    """Write e.g. "Failed: the drawn colour (red) does not match its clue. The shape, position and size were right."."""
    wrong = [attribute for attribute in ATTRIBUTES if drawn[attribute] != target[attribute]]
    right = [attribute for attribute in ATTRIBUTES if drawn[attribute] == target[attribute]]
    named = _join([f"{attribute} ({drawn[attribute]})" for attribute in wrong])
    if len(wrong) == 1:
        sentence = f"Failed: the drawn {named} does not match its clue."
    else:
        sentence = f"Failed: the drawn {named} do not match their clues."
    if len(right) == 1:
        sentence += f" The {right[0]} was right."
    elif right:
        sentence += f" The {_join(right)} were right."
    return sentence


def _join(words: list[str]) -> str:
    if len(words) <= 2:
        return " and ".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _fold_tool_error(text: str) -> str:
    """Fold tool output that may quote the reply to printable ASCII on one line."""
    return shorten(collapse_whitespace(to_printable(text)), 2 * MAX_OBSERVATION_CHARS // 3).rstrip(".")


# ---------------------------------------------------------------------- worked example

EXAMPLE_TASK = DrawTask("triangle", "green", "bottom-right", "small", clue_indices=(1, 0, 0, 1))
"""The worked example's target: a yield sign's shape, fresh grass, where a page ends, a postage stamp."""
EXAMPLE_REPLIES = (
    ("vocabulary", "", "First I check which words the image tool reads."),
    ("draw", "tiny green triangle bottom-right", "Yield signs are triangles, grass is green, a page ends bottom-right."),
    ("draw", "small green triangle bottom-right", "The tool has no word tiny, so a postage stamp is small."),
)
"""The worked example's replies: tool, argument and the line of reasoning before the call."""


@functools.lru_cache(maxsize=8)
def _example_turns(max_steps: int) -> tuple[tuple[str, str], ...]:
    """Play the worked example and return its (observation, reply) turns."""
    env = DrawSceneTextEnv(max_steps=max_steps)
    observation, _ = env.reset(seed=0, options={"task": EXAMPLE_TASK})
    turns = []
    for tool, argument, reasoning in EXAMPLE_REPLIES:
        reply = env.format_reply(tool, argument, reasoning)
        turns.append((observation, reply))
        observation = env.step(reply)[0]
    return tuple(turns)
