"""The image tool an agent calls: a description in, a PNG file and the parsed attributes out.

:class:`ImageTool` loads a model folder once and serves every call with
:meth:`ImageTool.generate_image`. Bad input never raises: a description with an unknown
word, a missing attribute or two words for one attribute returns an :class:`ImageResult`
whose ``error`` lists the valid vocabulary, so that an agent reads the mistake as
feedback and can call again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from erlgym.bitimage.checkpoint import ImageModel, load_model, save_png
from erlgym.bitimage.scenes import VOCABULARIES, DescriptionError, Scene, parse_description

MAX_DESCRIPTION_CHARS = 200
"""Maximum length of a description, in characters; a longer one is rejected, so a runaway reply costs bounded time."""


@dataclass
class ImageResult:
    """The result of one tool call: the image and its attributes, or an error for the agent."""

    description: str
    scene: Scene | None = None
    image: np.ndarray | None = None
    """The generated image, uint8 of shape (32, 32, 3); None on error."""
    path: Path | None = None
    """The PNG file written, enlarged for viewing; None on error."""
    error: str = ""
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.error

    def as_text(self) -> str:
        """Return the result as the text an agent reads after its call."""
        if self.error:
            return f"generate_image failed: {self.error}"
        described = ", ".join(f"{name} {value}" for name, value in self.attributes.items())
        return f"Generated {self.path.name if self.path else 'an image'}: {described}."


def vocabulary_text() -> str:
    """Return the valid words per attribute, one attribute per clause."""
    return "; ".join(f"{attribute}: {', '.join(words)}" for attribute, words in VOCABULARIES.items())


class ImageTool:
    """Generate images from descriptions with one loaded model; every call writes one PNG into ``out_dir``.

    Args:
        model: a model folder written by ``erlgym image train``, a loaded :class:`ImageModel`,
            or None for the checkpoint bundled with the package.
        out_dir: folder for the PNG files; created when missing.
        guidance_scale: classifier-free guidance scale of every call.
        scale: enlargement of the saved PNG (the returned array keeps 32×32).
    """

    def __init__(self, model: str | Path | ImageModel | None, out_dir: str | Path, guidance_scale: float = 2.0,
                 scale: int = 4):
        self.model = model if isinstance(model, ImageModel) else load_model(model)
        self.out_dir = Path(out_dir)
        self.guidance_scale = guidance_scale
        self.scale = scale
        self.calls = 0

    def generate_image(self, description: str, seed: int | None = None) -> ImageResult:
        """Generate the image ``description`` names, e.g. "small blue square bottom-right".

        ``seed`` fixes the sample. By default each call uses the number of earlier calls as
        its seed, so repeated calls give different images and a new tool repeats the sequence.
        """
        result = ImageResult(description=description if isinstance(description, str) else repr(description))
        if not isinstance(description, str) or not description.strip():
            result.error = f"the description must be a non-empty text naming the attributes ({vocabulary_text()})"
            return result
        if len(description) > MAX_DESCRIPTION_CHARS:
            result.error = (f"the description has {len(description)} characters, more than "
                            f"{MAX_DESCRIPTION_CHARS}; name only the attributes ({vocabulary_text()})")
            return result
        try:
            scene = parse_description(description)
        except DescriptionError as error:
            result.error = str(error)
            return result

        call = self.calls
        self.calls += 1
        images, _ = self.model.generate([scene], guidance_scale=self.guidance_scale,
                                        seed=call if seed is None else seed)
        result.scene = scene
        result.image = images[0]
        result.attributes = {"shape": scene.shape, "colour": scene.colour, "position": scene.position,
                             "size": scene.size}
        path = self._reserve_path(call, f"{scene.size}-{scene.colour}-{scene.shape}-{scene.position}")
        result.path = save_png(images[0], path, scale=self.scale)
        return result

    def _reserve_path(self, number: int, name: str) -> Path:
        """Create and return ``out_dir/<number>-<name>.png``, counting up from ``number`` past existing files.

        The file is created exclusively, so tools (or processes) sharing one ``out_dir`` never
        write the same file.
        """
        self.out_dir.mkdir(parents=True, exist_ok=True)
        while True:
            path = self.out_dir / f"{number:04d}-{name}.png"
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            except FileExistsError:
                number += 1
                continue
            return path
