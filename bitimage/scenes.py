"""Procedural scenes: one coloured shape on a black background, with a text prompt.

A scene has four attributes, each from a small vocabulary: shape, colour, position and
size. ``Scene.prompt`` writes them as ``"<size> <colour> <shape> <position>"``, for
example ``"large red circle top-left"``, and ``parse_description`` reads free-form
descriptions such as ``"A red circle in the top left corner"`` back into a scene.

``render`` draws a scene with numpy masks. Rendering is deterministic: without a random
generator a scene always gives the same image, and with one the image varies only by a
small position jitter and a colour brightness factor drawn from it. ``sample_scenes``
and ``scene_batch`` draw scenes uniformly from all 240 attribute combinations, and the
same seed gives the same scenes and images.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = ("red", "green", "blue", "yellow", "purple", "white")
POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right", "center")
SIZES = ("small", "large")

COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 70),
    "blue": (50, 90, 235),
    "yellow": (240, 220, 40),
    "purple": (160, 60, 210),
    "white": (240, 240, 240),
}
"""Colour of each colour word at full brightness, as 8-bit RGB."""

ATTRIBUTES = ("shape", "colour", "position", "size")
"""Scene attributes in the order of ``Scene.attribute_ids``."""

VOCABULARIES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": COLOURS,
    "position": POSITIONS,
    "size": SIZES,
}

DEFAULT_SIZE = "large"
"""Size ``parse_description`` uses when a description names none, because "a red circle"
reads as a shape of ordinary size, not a small one."""

SIZE_FRACTIONS = {"small": 1 / 4, "large": 2 / 5}
"""Shape extent (circle diameter, square side, triangle base and height, cross arm span)
as a fraction of the image side."""

POSITION_CENTRES = {
    "top-left": (0.25, 0.25),
    "top-right": (0.25, 0.75),
    "bottom-left": (0.75, 0.25),
    "bottom-right": (0.75, 0.75),
    "center": (0.5, 0.5),
}
"""Shape centre for each position as (row, column) fractions of the image side."""

MAX_JITTER_FRACTION = 1 / 16
"""Maximum position jitter as a fraction of the image side: 2 pixels at 32×32."""

BRIGHTNESS_RANGE = (0.75, 1.0)
"""Range of the random factor that scales the colour when ``render`` gets a generator."""

MIN_IMAGE_SIZE = 8

FILLER_WORDS = frozenset({"a", "an", "the", "in", "at", "on", "corner", "image", "of"})
"""Words ``parse_description`` skips, such as "a red circle in the top left corner"."""

POSITION_ALIASES = {"centre": "center", "middle": "center", "centred": "center", "centered": "center"}


class DescriptionError(ValueError):
    """A description that does not name exactly one scene.

    The message names the unknown word, the missing attribute or the conflicting words.
    ``word`` is the offending word and ``attribute`` the attribute concerned, where known.
    """

    def __init__(self, message: str, *, word: str | None = None, attribute: str | None = None):
        super().__init__(message)
        self.word = word
        self.attribute = attribute


@dataclass(frozen=True)
class Scene:
    """One shape of one colour, at one position, in one of two sizes.

    Every attribute must be a word of its vocabulary (``SHAPES``, ``COLOURS``,
    ``POSITIONS``, ``SIZES``), or the constructor raises ``ValueError``.
    """

    shape: str
    colour: str
    position: str
    size: str = DEFAULT_SIZE

    def __post_init__(self) -> None:
        for attribute in ATTRIBUTES:
            value = getattr(self, attribute)
            vocabulary = VOCABULARIES[attribute]
            if value not in vocabulary:
                raise ValueError(
                    f"invalid {attribute} {value!r}: expected one of {', '.join(vocabulary)}"
                )

    @property
    def prompt(self) -> str:
        """The canonical description, ``"<size> <colour> <shape> <position>"``."""
        return f"{self.size} {self.colour} {self.shape} {self.position}"

    def attribute_ids(self) -> tuple[int, int, int, int]:
        """Return the index of each attribute in its vocabulary, in ``ATTRIBUTES`` order."""
        return (
            SHAPES.index(self.shape),
            COLOURS.index(self.colour),
            POSITIONS.index(self.position),
            SIZES.index(self.size),
        )

    @classmethod
    def from_ids(cls, ids: Sequence[int]) -> Scene:
        """Build the scene whose ``attribute_ids()`` are ``ids`` (shape, colour, position, size)."""
        values = [int(index) for index in ids]
        if len(values) != len(ATTRIBUTES):
            raise ValueError(f"expected {len(ATTRIBUTES)} attribute ids {ATTRIBUTES}, got {len(values)}: {values}")
        words = []
        for attribute, index in zip(ATTRIBUTES, values):
            vocabulary = VOCABULARIES[attribute]
            if not 0 <= index < len(vocabulary):
                raise ValueError(
                    f"invalid {attribute} id {index}: expected 0 to {len(vocabulary) - 1}"
                )
            words.append(vocabulary[index])
        return cls(*words)


def all_scenes() -> list[Scene]:
    """Return every scene, 240 in all, ordered by shape, colour, position, then size."""
    return [Scene(*words) for words in itertools.product(SHAPES, COLOURS, POSITIONS, SIZES)]


# Parsing

_WORD_ATTRIBUTES = {word: attribute for attribute, words in VOCABULARIES.items() for word in words}


def _describe_vocabulary() -> str:
    return "; ".join(f"{attribute}: {', '.join(words)}" for attribute, words in VOCABULARIES.items())


def _split_words(text: str) -> list[str]:
    """Lower-case ``text`` and split it into words, joining "top left" into "top-left"."""
    raw_words = re.split(r"[\s,;.!?]+", text.lower())
    words: list[str] = []
    for word in raw_words:
        if not word:
            continue
        is_side = word in ("left", "right")
        follows_edge = bool(words) and words[-1] in ("top", "bottom")
        if is_side and follows_edge:
            words[-1] = f"{words[-1]}-{word}"
        else:
            words.append(word)
    return words


def parse_description(text: str) -> Scene:
    """Parse a free-form description such as ``"A large red circle in the top-left corner"``.

    Matching is case-insensitive and ignores word order, commas and the filler words in
    ``FILLER_WORDS``. "top left" is read as "top-left", and "centre" or "middle" as
    "center". Shape, colour and position are required. Size is optional and defaults to
    ``DEFAULT_SIZE``. A word repeated with the same meaning is accepted.

    Raises:
        DescriptionError: on a word outside the vocabularies (the message lists the valid
            words per attribute), a missing shape, colour or position, or two different
            words for one attribute, such as two colours.
    """
    found: dict[str, str] = {}
    for word in _split_words(text):
        if word in FILLER_WORDS:
            continue
        word = POSITION_ALIASES.get(word, word)
        attribute = _WORD_ATTRIBUTES.get(word)
        if attribute is None:
            raise DescriptionError(
                f"unknown word {word!r} in description {text!r}. Valid words are {_describe_vocabulary()}",
                word=word,
            )
        previous = found.get(attribute)
        if previous is not None and previous != word:
            raise DescriptionError(
                f"description {text!r} names two values of {attribute}, {previous!r} and {word!r}. Keep one",
                word=word,
                attribute=attribute,
            )
        found[attribute] = word

    for attribute in ("shape", "colour", "position"):
        if attribute not in found:
            raise DescriptionError(
                f"description {text!r} has no {attribute}. Add one of {', '.join(VOCABULARIES[attribute])}",
                attribute=attribute,
            )
    return Scene(found["shape"], found["colour"], found["position"], found.get("size", DEFAULT_SIZE))


# Rendering


def _shape_mask(shape: str, rows: np.ndarray, columns: np.ndarray, extent: float) -> np.ndarray:
    """Return the boolean mask of ``shape`` of side ``extent``, centred at offset 0.

    ``rows`` and ``columns`` are the pixel-centre offsets from the shape centre, in pixels.
    """
    half = extent / 2
    if shape == "circle":
        return rows**2 + columns**2 <= half**2
    if shape == "square":
        return (np.abs(rows) <= half) & (np.abs(columns) <= half)
    if shape == "triangle":
        # Apex up: the half-width grows linearly from 0 at the top row to `half` at the base.
        depth = rows + half
        return (depth >= 0) & (depth <= extent) & (np.abs(columns) <= depth / 2)
    if shape == "cross":
        # A plus sign whose arms are a third of the extent wide.
        arm = extent / 6
        vertical = (np.abs(columns) <= arm) & (np.abs(rows) <= half)
        horizontal = (np.abs(rows) <= arm) & (np.abs(columns) <= half)
        return vertical | horizontal
    raise ValueError(f"invalid shape {shape!r}: expected one of {', '.join(SHAPES)}")


def render(scene: Scene, size: int = 32, rng: np.random.Generator | None = None) -> np.ndarray:
    """Draw ``scene`` as an RGB image of shape (size, size, 3), dtype uint8.

    The background is black and the shape is filled with ``COLOUR_RGB[scene.colour]``,
    without anti-aliasing. The shape extent is ``SIZE_FRACTIONS[scene.size]`` of the side
    and its centre is ``POSITION_CENTRES[scene.position]``. When ``rng`` is given, the
    centre moves by up to ``MAX_JITTER_FRACTION`` of the side in each direction and the
    colour is scaled by a factor drawn from ``BRIGHTNESS_RANGE``. Without ``rng`` there
    is no jitter and the colour is exact.
    """
    if size < MIN_IMAGE_SIZE:
        raise ValueError(f"invalid image size {size}: expected at least {MIN_IMAGE_SIZE} pixels")

    centre_row, centre_column = (fraction * size for fraction in POSITION_CENTRES[scene.position])
    colour = np.asarray(COLOUR_RGB[scene.colour], dtype=np.float64)
    if rng is not None:
        max_jitter = round(MAX_JITTER_FRACTION * size)
        jitter_row, jitter_column = rng.integers(-max_jitter, max_jitter + 1, size=2)
        centre_row += jitter_row
        centre_column += jitter_column
        colour = colour * rng.uniform(*BRIGHTNESS_RANGE)

    pixel_centres = np.arange(size) + 0.5
    rows = pixel_centres[:, None] - centre_row  # (size, 1)
    columns = pixel_centres[None, :] - centre_column  # (1, size)
    extent = SIZE_FRACTIONS[scene.size] * size
    mask = _shape_mask(scene.shape, rows, columns, extent)  # (size, size)

    image = np.zeros((size, size, 3), dtype=np.uint8)
    image[mask] = np.round(colour).astype(np.uint8)
    return image


# Sampling


def _draw_scenes(rng: np.random.Generator, count: int) -> list[Scene]:
    ids = np.stack([rng.integers(len(VOCABULARIES[attribute]), size=count) for attribute in ATTRIBUTES], axis=1)
    return [Scene.from_ids(row) for row in ids]


def sample_scenes(count: int, seed: int | Sequence[int]) -> list[Scene]:
    """Draw ``count`` scenes uniformly over all attribute combinations.

    ``seed`` is anything ``numpy.random.default_rng`` accepts, such as an int or a tuple
    of ints like ``(seed, step)``. The same seed gives the same scenes.
    """
    if count < 0:
        raise ValueError(f"invalid scene count {count}: expected 0 or more")
    return _draw_scenes(np.random.default_rng(seed), count)


def scene_batch(
    batch_size: int, seed: int | Sequence[int], size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render a batch of random scenes with position and brightness jitter.

    The scenes are ``sample_scenes(batch_size, seed)``, and the jitter comes from the
    same generator after them, so the same arguments give the same batch.

    Returns:
        images: float32 tensor (B, 3, size, size) with values in [0, 1].
        attribute_ids: int64 tensor (B, 4), the ``Scene.attribute_ids()`` of each image.
    """
    if batch_size < 1:
        raise ValueError(f"invalid batch size {batch_size}: expected 1 or more")
    rng = np.random.default_rng(seed)
    scenes = _draw_scenes(rng, batch_size)
    pixels = np.stack([render(scene, size, rng) for scene in scenes])  # (B, size, size, 3)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, size, size)
    attribute_ids = torch.tensor([scene.attribute_ids() for scene in scenes], dtype=torch.long)  # (B, 4)
    return images, attribute_ids
