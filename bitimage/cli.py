"""The ``erlgym image`` command: train the bitimage model and sample images from scene descriptions.

- ``train`` runs :func:`~erlgym.bitimage.pipeline.train_image_model` with a progress bar.
  Its options are generated from :class:`~erlgym.bitimage.pipeline.ImageTrainConfig`,
  and ``--resume --out DIR`` continues an interrupted run with its saved settings.
- ``sample`` parses each description, generates one image per description with a
  model folder (``--model``, default the bundled checkpoint) and writes PNG files.
- ``train-verifier`` trains the scene classifier that judges generated images
  (:mod:`erlgym.bitimage.verifier`) and writes a verifier folder.
- ``evaluate`` judges a model's images with a verifier: conditional accuracy and the
  Fréchet distance in the verifier's features, printed and written as JSON.

``erlgym.erl.cli`` registers the command with :func:`add_image_command` and runs it with
:func:`run_image`. Bad input (an unknown word in a description, a missing or corrupt
model folder, invalid settings, a non-empty output folder) raises
:class:`ImageCommandError`, which the command line prints as one line before exiting
with status 2. Results go to stdout, and status lines and progress go to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# The parser is built at every erlgym start, so this module imports only the torch-free
# settings. The training and sampling modules load when an image command runs.
from erlgym.bitimage.config import MAX_SEED, ImageTrainConfig, ImageTrainError

# soft_wrap: rich never breaks long lines (paths, commands), so they stay copyable when
# the output is piped or captured.
console = Console(stderr=True, soft_wrap=True)
"""Status lines and progress, on stderr."""
output = Console(soft_wrap=True)
"""Results: the images written and the training metrics, on stdout."""

EXIT_INTERRUPTED = 130
STAGE_LABELS = {"tokenizer": "tokenizer", "generator": "generator", "evaluate": "evaluating"}


class ImageCommandError(Exception):
    """Bad input to ``erlgym image``; printed as one line without a traceback, exit status 2."""


# ---------------------------------------------------------------------- parser


def add_image_command(add_command: Callable[..., argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``image`` and its subcommands with ``add_command(name, **kwargs)``, the top-level subparser factory."""
    image = add_command(
        "image", help="Train the bitimage model, or sample 32x32 scene images from descriptions.",
        description="bitimage generates 32x32 images of one coloured shape from a description such as "
                    "'large red circle top-left', with a binary-token tokenizer and an autoregressive generator.")
    subcommands = image.add_subparsers(dest="image_command", required=True, metavar="{train,sample,train-verifier,evaluate}")

    def add_subcommand(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return subcommands.add_parser(name, allow_abbrev=False, **kwargs)

    train = add_subcommand(
        "train", help="Train the tokenizer, then the generator, into a model folder.",
        description="Train the tokenizer on rendered scenes, then the generator on the frozen tokenizer's codes, "
                    "and write a model folder for erlgym image sample --model. The run saves its state every "
                    "--save-every steps; rerun with --resume --out DIR to continue after an interruption.")
    train.add_argument("--resume", action="store_true",
                       help="Continue the run in --out DIR after its last saved step, with its saved settings.")
    _add_train_options(train)

    sample = add_subcommand(
        "sample", help="Generate one PNG image per description.",
        description="Parse each description into shape, colour, position and size, generate one image per "
                    "description and write it as a PNG. With one description, an --out ending in .png is the "
                    "file to write. Otherwise --out is a folder, and the files are named "
                    "<number>-<size>-<colour>-<shape>-<position>.png in the order of the descriptions.")
    sample.add_argument("descriptions", nargs="+", metavar="DESCRIPTION",
                        help="Scene description such as 'blue square bottom-right' or 'a small red circle in the "
                             "top left corner'. Size is optional (default: large).")
    sample.add_argument("--out", type=Path, required=True,
                        help="PNG file for one description, or a folder for the images.")
    sample.add_argument("--model", type=Path, default=None,
                        help="Model folder written by erlgym image train (default: the checkpoint bundled with "
                             "erlgym).")
    sample.add_argument("--seed", type=_integer_at_least(0, MAX_SEED), default=0,
                        help="Seed of the sampling noise; the same descriptions and seed give the same images "
                             "(default: 0).")
    sample.add_argument("--guidance", type=_guidance_scale, default=2.0,
                        help="Classifier-free guidance scale s; 0 is plain conditional sampling, larger values follow "
                             "the description more strictly (default: 2.0).")
    sample.add_argument("--scale", type=_integer_at_least(1), default=4,
                        help="Enlargement factor of the PNG, with nearest-neighbour pixels (default: 4, so 128x128).")
    sample.add_argument("--device", default="cpu", help="Torch device to sample on (default: cpu).")

    verifier = add_subcommand(
        "train-verifier", help="Train the scene classifier that judges generated images.",
        description="Train a small convolutional classifier of shape, colour, position and size on rendered scenes "
                    "degraded by noise and blur, and write a verifier folder for erlgym image evaluate --verifier.")
    verifier.add_argument("--out", type=Path, required=True, help="Verifier folder to write; must be new or empty.")
    verifier.add_argument("--steps", type=_integer_at_least(1), default=1500,
                          help="Training steps (default: 1500).")
    verifier.add_argument("--batch-size", type=_integer_at_least(1), default=64,
                          help="Rendered scenes per step (default: 64).")
    verifier.add_argument("--learning-rate", type=float, default=2e-3,
                          help="Peak AdamW learning rate, decayed on a cosine to 0 (default: 0.002).")
    verifier.add_argument("--seed", type=_integer_at_least(0, MAX_SEED), default=0,
                          help="Seed of the weights, the scenes and the degradation (default: 0).")

    evaluate = add_subcommand(
        "evaluate", help="Judge a model's generated images with the verifier.",
        description="Generate images for all 240 scenes in turn, read them back with the verifier, and report the "
                    "conditional accuracy per attribute and for all four, and the Fréchet distance between the "
                    "verifier's features of generated and rendered images. The tokenizer's reconstructions and a "
                    "second set of renders give the reachable values.")
    evaluate.add_argument("--model", type=Path, default=None,
                          help="Model folder written by erlgym image train (default: the bundled checkpoint).")
    evaluate.add_argument("--verifier", type=Path, default=None,
                          help="Verifier folder written by erlgym image train-verifier (default: the bundled "
                               "verifier).")
    evaluate.add_argument("--images", type=_integer_at_least(2), default=480,
                          help="Images to generate, cycling through the 240 scenes (default: 480).")
    evaluate.add_argument("--guidance", type=_guidance_scale, default=2.0,
                          help="Classifier-free guidance scale of the generator (default: 2.0).")
    evaluate.add_argument("--seed", type=_integer_at_least(0, MAX_SEED), default=0,
                          help="Seed of the sampling (default: 0).")
    evaluate.add_argument("--out", type=Path, default=None, help="JSON file to write the results to.")
    evaluate.add_argument("--device", default="cpu", help="Torch device to generate on (default: cpu).")
    return image


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    """Add one option per ImageTrainConfig field, with its help text and default."""
    for spec in dataclasses.fields(ImageTrainConfig):
        flag = "--" + spec.name.replace("_", "-")
        help_text = spec.metadata.get("help", "")
        if spec.name != "out":  # The help text of out names its default.
            default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
            help_text += f" (default: {json.dumps(default) if isinstance(default, dict) else default})"
        if str(spec.type).startswith("dict"):
            kind: Callable[[str], Any] = _json_object
        else:
            kind = {"int": int, "float": float}.get(str(spec.type), str)
        parser.add_argument(flag, type=kind, default=None, choices=spec.metadata.get("choices"), help=help_text)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error.msg}): {text!r}") from error
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"bits\": 8}}', got {text!r}")
    return value


def _integer_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    expected = f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


def _guidance_scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 2.0, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0 such as 2.0, got {text!r}")
    return value


# ---------------------------------------------------------------------- entry point


def run_image(args: argparse.Namespace) -> int:
    """Run the ``erlgym image`` subcommand in ``args.image_command`` and return the exit status."""
    from erlgym.bitimage.checkpoint import ImageModelError
    from erlgym.bitimage.scenes import DescriptionError
    from erlgym.bitimage.verifier import VerifierError

    handlers = {"train": run_train, "sample": run_sample, "train-verifier": run_train_verifier,
                "evaluate": run_evaluate}
    try:
        return handlers[args.image_command](args)
    except (DescriptionError, ImageModelError, ImageTrainError, VerifierError) as error:
        raise ImageCommandError(str(error)) from error


# ---------------------------------------------------------------------- train


def resolve_train_config(args: argparse.Namespace) -> ImageTrainConfig:
    """Build the settings from the options given and, with --resume, the run's saved settings under them."""
    options = {spec.name: getattr(args, spec.name) for spec in dataclasses.fields(ImageTrainConfig)
               if getattr(args, spec.name) is not None}
    if not args.resume:
        return ImageTrainConfig.from_dict(options).validate()
    if "out" not in options:
        raise ImageCommandError("--resume needs --out DIR naming the run to continue")
    from erlgym.bitimage.pipeline import read_training_config

    saved = read_training_config(options["out"]).to_dict()
    return ImageTrainConfig.from_dict({**saved, **options}).validate()


def run_train(args: argparse.Namespace) -> int:
    from erlgym.bitimage.pipeline import TrainProgress, default_output_folder, train_image_model

    config = resolve_train_config(args)
    out = Path(config.out) if config.out else default_output_folder()
    verb = "resuming" if args.resume else "training"
    console.print("[bold]erlgym image train[/bold]", escape(
        f"{verb} in {out}: tokenizer "
        f"{'from ' + config.tokenizer_from if config.tokenizer_from else str(config.tokenizer_steps) + ' steps'}, "
        f"generator {config.generator_steps} steps, "
        f"batch {config.batch_size}, k={config.tokens_per_step}, head {config.head}, seed {config.seed}, "
        f"device {config.device}"))

    columns = (TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console) as progress:
            tasks: dict[str, Any] = {}

            def on_progress(event: TrainProgress) -> None:
                if event.stage not in tasks:
                    tasks[event.stage] = progress.add_task(STAGE_LABELS.get(event.stage, event.stage),
                                                           total=event.total_steps, completed=event.step, loss="")
                    if event.stage != "evaluate" and event.step == event.total_steps and event.step:
                        progress.console.print(escape(f"{event.stage}: already finished, {event.step} steps"))
                    elif event.stage != "evaluate" and event.step:
                        progress.console.print(escape(f"{event.stage}: resuming after step {event.step}"))
                loss = event.metrics.get("loss")
                progress.update(tasks[event.stage], completed=event.step,
                                loss="" if loss is None else f"loss {loss:.4f}")

            folder = train_image_model(config, out, resume=args.resume, on_progress=on_progress)
    except KeyboardInterrupt:
        console.print(escape(f"Interrupted. Continue the run with: erlgym image train --resume --out {out}"))
        return EXIT_INTERRUPTED

    from erlgym.bitimage.checkpoint import read_model_info

    print_training_summary(read_model_info(folder))
    console.print(escape(f"Model folder: {folder}  (sample with: erlgym image sample 'large red circle top-left' "
                         f"--model {folder} --out sample.png)"))
    return 0


def print_training_summary(info: dict[str, Any]) -> None:
    """Print the tokenizer metrics and final losses stored in a model's ``bitimage.json``."""
    metrics = info.get("metrics", {})
    output.print(escape(
        f"tokenizer: {metrics['tokenizer_psnr_db']:.2f} dB PSNR on {metrics['held_out_images']} held-out scenes "
        f"(mean-image baseline {metrics['mean_image_psnr_db']:.2f} dB), bit entropy "
        f"{metrics['bit_entropy_bits']:.3f} bits, group codes used {metrics['mean_code_usage']:.0%}"))
    for stage in ("tokenizer", "generator"):
        loss = metrics.get(f"{stage}_loss")
        seconds = info.get("train_seconds", {}).get(stage)
        loss_text = "no steps" if loss is None else f"mean loss of the last 50 steps {loss:.4f}"
        output.print(escape(f"{stage}: {info['steps'][stage]} steps, {loss_text}, {seconds} s"))


# ---------------------------------------------------------------------- sample


def output_paths(out: Path, names: list[str]) -> list[Path]:
    """Return the PNG path of each image: ``out`` itself for one name and a .png ``out``, else files in folder ``out``.

    Files in a folder are named ``<number>-<name>.png``, numbered from 1 with equal width.
    """
    if out.suffix.lower() == ".png":
        if len(names) > 1:
            raise ImageCommandError(f"--out {out} names one PNG file, but {len(names)} descriptions were given. "
                                    f"Pass a folder for --out")
        if out.is_dir():
            raise ImageCommandError(f"--out {out} is a folder. Pass a file path, or a folder name without .png")
        return [out]
    if out.exists() and not out.is_dir():
        raise ImageCommandError(f"--out {out} is a file that does not end in .png. Pass a folder, or a .png file "
                                f"for one description")
    width = len(str(len(names)))
    return [out / f"{index:0{width}d}-{name}.png" for index, name in enumerate(names, start=1)]


def run_sample(args: argparse.Namespace) -> int:
    from erlgym.bitimage.checkpoint import load_model, save_png
    from erlgym.bitimage.scenes import parse_description

    # Parse first, so that a typo is reported before the model loads.
    scenes = [parse_description(text) for text in args.descriptions]
    paths = output_paths(args.out, [scene.prompt.replace(" ", "-") for scene in scenes])
    _check_writable_folder(paths[0].parent, "--out")
    device = _torch_device(args.device)

    with console.status("loading model"):
        model = load_model(args.model, device=device)
    started = time.perf_counter()
    images, _ = model.generate(scenes, guidance_scale=args.guidance, seed=args.seed)
    seconds = time.perf_counter() - started

    for text, scene, image, path in zip(args.descriptions, scenes, images, paths):
        save_png(image, path, scale=args.scale)
        attributes = " ".join(f"{name}={getattr(scene, name)}" for name in ("shape", "colour", "position", "size"))
        output.print(escape(f"{path}: {attributes}  (from {text!r})"))
    source = args.model if args.model is not None else "the bundled checkpoint"
    console.print(escape(f"Sampled {len(scenes)} images in {seconds:.2f} s with {source}, guidance {args.guidance}, "
                         f"seed {args.seed}"))
    return 0


# ---------------------------------------------------------------------- verifier


def _torch_device(name: str):
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ImageCommandError(f"invalid --device {name!r}: {error}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ImageCommandError(f"--device {name} is not available: this torch build or machine has no CUDA device. "
                                f"Use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ImageCommandError(f"invalid --device {name!r}: expected cpu, cuda or mps")
    return device


def _check_writable_folder(folder: Path, option: str) -> None:
    """Create ``folder`` if needed, before any slow work, and raise ImageCommandError when files cannot go there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ImageCommandError(f"cannot create the folder {folder} for {option}: {error.strerror}. "
                                f"Pass a path in a writable folder") from error
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ImageCommandError(f"cannot write to the folder {folder} for {option}: {error.strerror}. "
                                f"Pass a path in a writable folder") from error


def run_train_verifier(args: argparse.Namespace) -> int:
    from erlgym.bitimage.verifier import VerifierConfig, evaluate_verifier, save_verifier, train_verifier

    out: Path = args.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ImageCommandError(f"--out {out} exists and is not an empty folder. Pass a new folder")
    console.print("[bold]erlgym image train-verifier[/bold]", escape(
        f"training in {out}: {args.steps} steps, batch {args.batch_size}, seed {args.seed}"))
    columns = (TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    started = time.perf_counter()
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("verifier", total=args.steps, loss="")

            def on_step(step: int, steps: int, metrics: dict[str, float]) -> None:
                progress.update(task, completed=step, loss=f"loss {metrics['loss']:.4f}")

            model = train_verifier(VerifierConfig(), steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                                   learning_rate=args.learning_rate, on_step=on_step)
    except KeyboardInterrupt:
        console.print("Interrupted; nothing was written. The verifier trains in minutes, so run the command again")
        return EXIT_INTERRUPTED
    seconds = time.perf_counter() - started
    with console.status("evaluating on held-out renders"):
        metrics = evaluate_verifier(model, seed=args.seed)
    info = {"steps": args.steps, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
            "seed": args.seed, "train_seconds": round(seconds, 1), "metrics": metrics}
    save_verifier(model, out, info)
    accuracy, degraded = metrics["accuracy"], metrics["degraded_accuracy"]
    output.print(escape(
        f"verifier: all four attributes right on {accuracy['all']:.1%} of {metrics['images']} held-out renders "
        f"({degraded['all']:.1%} when degraded), Fréchet floor {metrics['frechet_floor']:.3f}, "
        f"trained in {seconds:.0f} s"))
    console.print(escape(f"Verifier folder: {out}  (use with: erlgym image evaluate --verifier {out})"))
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from erlgym.bitimage.checkpoint import load_model, write_text_atomic
    from erlgym.bitimage.verifier import evaluate_generation, load_verifier

    if args.out is not None and args.out.is_dir():
        raise ImageCommandError(f"--out {args.out} is a folder. Pass the path of a JSON file")
    if args.out is not None:
        _check_writable_folder(args.out.parent, "--out")
    device = _torch_device(args.device)
    with console.status("loading model and verifier"):
        model = load_model(args.model, device=device)
        verifier = load_verifier(args.verifier)
    with Progress(TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("generate", total=args.images)
        result = evaluate_generation(model, verifier, count=args.images, guidance_scale=args.guidance,
                                     seed=args.seed, on_batch=lambda done, total: progress.update(task,
                                                                                                  completed=done))
    result["model"] = str(args.model) if args.model is not None else "bundled"
    result["verifier"] = str(args.verifier) if args.verifier is not None else "bundled"
    for name, label in (("generated", "generated"), ("reconstructed", "tokenizer reconstructions"),
                        ("rendered", "renders")):
        part = result[name]
        accuracy = part["accuracy"]
        per_attribute = ", ".join(f"{attribute} {accuracy[attribute]:.1%}"
                                  for attribute in ("shape", "colour", "position", "size"))
        distance = part.get("frechet_distance", part.get("frechet_floor"))
        output.print(escape(f"{label}: all four right {accuracy['all']:.1%} ({per_attribute}); "
                            f"Fréchet distance {distance:.3f}"))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
        console.print(escape(f"Wrote {args.out}"))
    return 0
