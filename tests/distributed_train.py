"""Train ERL steps on the tiny action model with every process of an ``accelerate launch`` run.

Every process calls :func:`erlgym.erl.run.train` with the same run directory, as
``erlgym train`` does under ``accelerate launch``. Each process then writes
``RESULTS_DIR/process-<index>.json``. It contains the process index and count, the
metrics the process logged at each step, and a SHA-256 digest of its trainable
weights before and after training. It also contains the traceback of the error that
ended training, or ``null``.
``tests/test_distributed.py`` runs this script with two CPU processes:

    accelerate launch --multi_gpu --num_processes 2 tests/distributed_train.py \\
        --run-dir RUN_DIR --results-dir RESULTS_DIR [--model MODEL_DIR]

The script runs on CPU only. ``accelerate launch --cpu`` starts a single process unless
it runs under ``mpirun``, so two CPU processes need ``--multi_gpu``, which starts them
with torchrun, on a machine where no GPU is visible (``CUDA_VISIBLE_DEVICES=""``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import traceback
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import TrainerCallback

from erlgym.erl.run import train
from tiny_model import save_action_model, tiny_train_config


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="Run directory that every process trains into.")
    parser.add_argument("--results-dir", type=Path, required=True,
                        help="Folder that receives process-<index>.json from every process.")
    parser.add_argument("--model", type=Path,
                        help="Folder of the tiny action model. Without it, process 0 builds one next to --run-dir.")
    parser.add_argument("--steps", type=int, default=2, help="Training steps.")
    return parser.parse_args()


def weights_digest(model) -> str:
    """SHA-256 of the trainable parameters, by name, as float32 bytes."""
    digest = hashlib.sha256()
    for name, parameter in sorted(model.named_parameters()):
        if parameter.requires_grad:
            digest.update(name.encode())
            digest.update(parameter.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


class Recorder(TrainerCallback):
    """Keep the metrics every step logs on this process, and the weights' digest at start and end."""

    def __init__(self):
        self.logs: list[dict] = []
        self.digests: dict[str, str] = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.digests["before"] = weights_digest(model)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.logs.append({"step": state.global_step, **{key: value for key, value in logs.items()
                                                            if isinstance(value, (int, float))}})

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.digests["after"] = weights_digest(model)


def main() -> int:
    args = parse_args()
    # The tiny model runs fastest on one thread (see conftest.py).
    torch.set_num_threads(1)
    # Without cpu=True, accelerate 1.16 reports a single process on a machine without a GPU,
    # until the trainer creates its own state.
    state = PartialState(cpu=True)

    model_dir = args.model
    if model_dir is None:
        model_dir = args.run_dir.parent / "action-model"
        if state.is_main_process:
            save_action_model(model_dir)
    state.wait_for_everyone()

    recorder = Recorder()
    started = time.perf_counter()
    error = None
    try:
        train(tiny_train_config(model_dir, output_dir=str(args.run_dir), steps=args.steps), callbacks=[recorder])
    except Exception:
        error = traceback.format_exc()
        print(error, file=sys.stderr, flush=True)

    args.results_dir.mkdir(parents=True, exist_ok=True)
    result = {"process_index": state.process_index, "num_processes": state.num_processes,
              "train_seconds": round(time.perf_counter() - started, 2), "logs": recorder.logs,
              "digests": recorder.digests, "error": error}
    (args.results_dir / f"process-{state.process_index}.json").write_text(json.dumps(result, indent=2))
    return 0 if error is None else 1


if __name__ == "__main__":
    sys.exit(main())
