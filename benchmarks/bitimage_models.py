"""Compare bitimage models on quality (verifier accuracy, Fréchet distance) and sampling speed.

Each ``--model NAME=DIR`` is a model folder written by ``erlgym image train``; the first
one is the baseline that the others' speedups and accuracy changes are relative to. For
a fair comparison the models should share one tokenizer (``--tokenizer-from``) and a step
budget, and differ in one setting: tokens per step k, or the head.

For every model the script measures

- quality: ``erlgym.bitimage.verifier.evaluate_generation`` on ``--images`` images
  cycling through the 240 scenes. It gives the conditional accuracy per attribute and
  for all four, and the Fréchet distance between the verifier's features of generated
  and rendered images, with the tokenizer's reconstructions and two render sets as
  references;
- speed: the time to sample ``--speed-batch`` images with the KV cache, after one
  warm-up call, as the median and the best of ``--repeats`` calls.

The goal for next-patch decoding is a speedup of at least 4 over k=1 at k=4 or k=16 at
matched quality. The script reports both numbers and leaves the judgement to the reader.

Usage::

    python benchmarks/bitimage_models.py --model k1=runs/k1 --model k4=runs/k4 \\
        --out benchmarks/results/bitimage_models.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from erlgym.bitimage.checkpoint import ImageModel, load_model
from erlgym.bitimage.verifier import balanced_scenes, evaluate_generation, load_verifier
from machine import describe_machine, write_result

SPEEDUP_GOAL = 4.0


def parse_model(text: str) -> tuple[str, Path]:
    name, separator, folder = text.partition("=")
    if not separator or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR such as k4=runs/k4, got {text!r}")
    return name, Path(folder)


def time_sampling(model: ImageModel, batch: int, repeats: int, guidance_scale: float) -> dict[str, float]:
    """Return the median and best seconds to sample ``batch`` images, after one untimed warm-up call."""
    scenes = balanced_scenes(batch)
    model.generate(scenes, guidance_scale=guidance_scale, seed=0)
    seconds = []
    for repeat in range(repeats):
        started = time.perf_counter()
        model.generate(scenes, guidance_scale=guidance_scale, seed=repeat + 1)
        seconds.append(time.perf_counter() - started)
    return {"median_s": statistics.median(seconds), "best_s": min(seconds), "images": batch,
            "images_per_s": batch / statistics.median(seconds)}


def describe_model(model: ImageModel) -> dict[str, Any]:
    info = model.info
    config = model.generator.config
    return {
        "tokens_per_step": config.tokens_per_step,
        "head": config.head,
        "decoding_steps": config.num_blocks,
        "parameters": sum(parameter.numel() for parameter in model.generator.parameters()),
        "training_steps": info.get("steps"),
        "train_seconds": info.get("train_seconds"),
        "tokenizer_from": info.get("training", {}).get("tokenizer_from"),
        "tokenizer": {name: info.get("metrics", {}).get(name)
                      for name in ("tokenizer_psnr_db", "mean_image_psnr_db", "bit_entropy_bits",
                                   "mean_code_usage", "mean_code_perplexity")},
        "generator_loss": info.get("metrics", {}).get("generator_loss"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=parse_model, action="append", required=True,
                        help="NAME=DIR of a model folder; repeat for each model, baseline first.")
    parser.add_argument("--verifier", type=Path, default=None, help="Verifier folder (default: the bundled one).")
    parser.add_argument("--images", type=int, default=480, help="Images per model for the quality measures.")
    parser.add_argument("--guidance", type=float, default=2.0, help="Classifier-free guidance scale.")
    parser.add_argument("--speed-batch", type=int, default=16, help="Images per timed sampling call.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed sampling calls per model.")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write (default: print).")
    args = parser.parse_args()

    verifier = load_verifier(args.verifier)
    results = {}
    for name, folder in args.model:
        model = load_model(folder)
        print(f"{name}: k={model.generator.config.tokens_per_step}, head {model.generator.config.head}", flush=True)
        quality = evaluate_generation(model, verifier, count=args.images, guidance_scale=args.guidance)
        speed = time_sampling(model, args.speed_batch, args.repeats, args.guidance)
        results[name] = {"folder": str(folder), **describe_model(model), "quality": quality, "speed": speed}
        print(f"  all four right {quality['generated']['accuracy']['all']:.1%}, "
              f"Fréchet {quality['generated']['frechet_distance']:.2f}, "
              f"{speed['images_per_s']:.1f} images/s", flush=True)

    baseline_name = args.model[0][0]
    baseline = results[baseline_name]
    for name, result in results.items():
        result["relative_to_baseline"] = {
            "speedup": baseline["speed"]["median_s"] / result["speed"]["median_s"],
            "accuracy_all_change_points": 100 * (result["quality"]["generated"]["accuracy"]["all"]
                                                 - baseline["quality"]["generated"]["accuracy"]["all"]),
            "frechet_distance_ratio": (result["quality"]["generated"]["frechet_distance"]
                                       / baseline["quality"]["generated"]["frechet_distance"]),
        }

    write_result({
        "benchmark": "bitimage_models",
        "baseline": baseline_name,
        "speedup_goal": SPEEDUP_GOAL,
        "settings": {"images": args.images, "guidance_scale": args.guidance, "speed_batch": args.speed_batch,
                     "repeats": args.repeats, "torch_threads": torch.get_num_threads()},
        "verifier": {"folder": str(args.verifier) if args.verifier else "bundled", **verifier.info},
        "machine": describe_machine("torch"),
        "models": results,
    }, args.out)


if __name__ == "__main__":
    main()
