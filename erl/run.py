"""A training run: its directory, model, trainer, checkpoints and metrics file.

A run directory contains:

- ``config.json``: the resolved :class:`~erlgym.erl.config.TrainConfig`;
- ``run.json``: status (``running``, ``completed`` or ``failed``), versions, timings;
- ``metrics.jsonl``: one JSON line per training step;
- ``samples.jsonl``: sample transcripts and every reflection with its retry outcome;
- ``checkpoints/checkpoint-N/``: LoRA adapter (safetensors), optimizer, scheduler,
  RNG and trainer state, and the reflection memory;
- ``final/``: the trained adapter (or full model) and tokenizer, loadable by
  ``erlgym eval --model RUN_DIR``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import gymnasium as gym

from erlgym.erl.config import ConfigError, TrainConfig, resolve_dtype
from erlgym.erl.errors import RunError
from erlgym.erl.prefill import TEMPLATE_RECORDS_FILE

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
STATUS_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
CHECKPOINTS_DIR = "checkpoints"
FINAL_DIR = "final"
RESUME_MAY_CHANGE = frozenset({"steps", "max_generated_tokens", "max_train_seconds", "save_every",
                               "keep_checkpoints", "tensorboard", "output_dir", "merged_rollouts", "micro_batches"})
"""Fields a resumed run may set differently: the budget, checkpointing, logging, and memory use."""


def default_run_dir(config: TrainConfig) -> Path:
    env_name = config.env.split("/")[-1]
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{env_name}-{config.method}-{stamp}"


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = [p for p in (run_dir / CHECKPOINTS_DIR).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(checkpoints, key=lambda p: int(p.name.split("-")[-1]), default=None)


def check_env_id(env_id: str) -> None:
    import erlgym.envs  # noqa: F401  (registers the erlgym environments)

    if env_id not in gym.registry:
        erlgym_ids = sorted(name for name in gym.registry if name.startswith("erlgym/"))
        raise ConfigError(f"Unknown environment id {env_id!r}. Registered erlgym environments: {', '.join(erlgym_ids)}.")


def prepare_run_dir(config: TrainConfig, resume: bool) -> tuple[Path, Path | None]:
    """Create or reopen the run directory; return it and the checkpoint to resume from.

    Raises:
        RunError: the directory exists without ``resume``, or cannot be written.
    """
    run_dir = Path(config.output_dir) if config.output_dir else default_run_dir(config)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"Output path {run_dir} exists and is not a directory. Pass another --output-dir.")
    existing = run_dir.is_dir() and any(run_dir.iterdir())
    if existing and not resume:
        raise RunError(
            f"Run directory {run_dir} already exists and is not empty. Pass --resume to continue it, "
            "or choose another --output-dir."
        )
    if resume and not existing:
        raise RunError(f"Cannot resume: {run_dir} does not exist or is empty. Pass the run directory of an earlier run.")
    checkpoint = None
    if resume:
        saved = read_run_config(run_dir)
        # Runs saved before a field existed used its default.
        defaults = TrainConfig().to_dict()
        changed = [name for name in defaults if name not in RESUME_MAY_CHANGE
                   and saved.get(name, defaults[name]) != getattr(config, name)]
        if changed:
            described = ", ".join(f"{name}={getattr(config, name)!r} (the run has "
                                  f"{saved.get(name, defaults[name])!r})" for name in changed)
            raise RunError(
                f"Cannot resume {run_dir} with changed settings: {described}. A resumed run keeps the "
                f"settings it was started with, except {', '.join(sorted(RESUME_MAY_CHANGE))}. Resume "
                "without those options or start a new run."
            )
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None:
            # Interrupted before its first checkpoint: the run starts over, so its old lines go.
            truncate_records(run_dir, 0)
        elif int(checkpoint.name.split("-")[-1]) >= config.steps:
            raise RunError(
                f"{run_dir} has already trained {checkpoint.name.split('-')[-1]} steps, and --steps is "
                f"{config.steps}. Pass a larger --steps to train further.")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise RunError(f"Cannot write to run directory {run_dir}: {error.strerror}. Pass a writable --output-dir.") from error
    return run_dir, checkpoint


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """Return the saved config of a run directory.

    Raises:
        RunError: the directory has no readable ``config.json``.
    """
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} has no {CONFIG_FILE}, so it is not an erlgym run directory.")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise RunError(f"Cannot read {path}: {error}. Restore the file or start a new run.") from error


def make_env_or_raise(env_id: str, env_kwargs: dict[str, Any], pool: Any = None) -> gym.Env:
    """Build one environment (into ``pool`` when given) so that bad keyword arguments fail early.

    Raises:
        ConfigError: ``gymnasium.make`` or the first ``reset`` rejected the keyword
            arguments, a file they name is missing or unreadable, or the environment is
            not a text environment with a system prompt.
    """
    try:
        env = pool.take(1)[0] if pool is not None else gym.make(env_id, **env_kwargs)
        env.reset(seed=0)
    except (TypeError, ValueError, OSError, RuntimeError) as error:
        raise ConfigError(f"Cannot create {env_id} with env_kwargs {json.dumps(env_kwargs)}: {error}") from error
    if not hasattr(env.unwrapped, "system_prompt") or not hasattr(env.unwrapped, "few_shot_messages"):
        raise ConfigError(
            f"{env_id} is not an erlgym text environment: it has no system_prompt and few_shot_messages. "
            "Use an erlgym/ environment or a subclass of erlgym.envs.base.TextEnv.")
    return env


def write_status(run_dir: Path, status: str, **extra: Any) -> None:
    path = run_dir / STATUS_FILE
    payload = json.loads(path.read_text()) if path.exists() else {}
    payload.update(status=status, updated=datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra)
    path.write_text(json.dumps(payload, indent=2))


def environment_versions() -> dict[str, str]:
    packages = ("erlgym", "torch", "transformers", "trl", "peft", "gymnasium")
    versions = {}
    for package in packages:
        try:
            versions[package] = version(package)
        except Exception:  # a package installed without metadata
            versions[package] = "unknown"
    return {"python": platform.python_version(), "machine": platform.machine(),
            "cpu_count": str(os.cpu_count()), **versions}


def truncate_records(run_dir: Path, last_step: int) -> None:
    """Drop metric and sample lines after ``last_step``, so a resumed run does not log a step twice."""
    truncate_metrics(run_dir / METRICS_FILE, last_step)
    truncate_metrics(run_dir / SAMPLES_FILE, last_step)
    truncate_metrics(run_dir / TEMPLATE_RECORDS_FILE, last_step)


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines after ``last_step``, so a resumed run does not log a step twice."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in kept))


def train(config: TrainConfig, resume: bool = False,
          on_step: Callable[[dict[str, Any]], None] | None = None, callbacks: list[Any] | None = None) -> Path:
    """Train a model with ERL or the GRPO baseline; return the run directory.

    Under ``accelerate launch`` every process calls this with the same configuration.
    The main process creates the run directory and writes its files; the others train
    in it. ``on_step`` runs on the main process only; ``callbacks`` (transformers
    ``TrainerCallback`` objects) are added to the trainer on every process.

    Raises:
        ConfigError, RunError, erlgym.erl.models.ModelLoadError: with a message naming the fix.
    """
    # Heavy imports stay here so that `erlgym --help` starts fast.
    from erlgym.erl.algorithm import EnvPool
    from erlgym.erl.models import load_model

    config.validate()
    check_env_id(config.env)
    if config.tensorboard:
        try:
            import tensorboard  # noqa: F401
        except ImportError as error:
            raise ConfigError(
                "--tensorboard needs the tensorboard package: pip install 'erlgym[tensorboard]'.") from error
    state = _process_state()
    main = state.is_main_process
    if config.internalization == "distill" and state.num_processes > 1:
        raise ConfigError(
            f"internalization 'distill' runs on one process, and this launch has {state.num_processes}: its loss "
            "needs a second forward pass before the backward pass, which distributed data parallel does not "
            "allow. Use internalization 'reward' or launch one process.")
    run_dir, checkpoint = _prepare_shared_run_dir(config, resume, state)
    created = not resume
    try:
        dtype = resolve_dtype(config.dtype)
        loaded = load_model(config.model, dtype)
        pool = EnvPool(config.env, config.env_kwargs)
        make_env_or_raise(config.env, config.env_kwargs, pool)
    except Exception:
        if created and main:
            shutil.rmtree(run_dir, ignore_errors=True)
            if config.output_dir is None and not any(run_dir.parent.iterdir()):
                run_dir.parent.rmdir()  # the default runs/ folder this call created
        raise

    status_file = run_dir / STATUS_FILE
    previous = json.loads(status_file.read_text()) if main and status_file.exists() else {}
    if main:
        (run_dir / CONFIG_FILE).write_text(config.to_json())
        write_status(run_dir, "running", versions=environment_versions(), error=None,
                     resumed_from=str(checkpoint) if checkpoint else None, processes=state.num_processes)
    started = time.perf_counter()
    try:
        steps_done, stop_reason = _train_in_run_dir(config, run_dir, checkpoint, loaded, pool, dtype, on_step,
                                                    callbacks or [], state.num_processes)
    except BaseException as error:
        earlier = previous.get("train_seconds", 0.0) if checkpoint is not None else 0.0
        message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        if main:
            write_status(run_dir, "failed" if not isinstance(error, KeyboardInterrupt) else "interrupted",
                         error=message,
                         train_seconds=round(earlier + time.perf_counter() - started, 1))
        error.run_dir = run_dir  # so that the caller can name the run to resume
        raise
    finally:
        pool.close()
    # A resumed run adds its time to the time of the runs before it.
    train_seconds = previous.get("train_seconds", 0.0) if checkpoint is not None else 0.0
    if main:
        write_status(run_dir, "completed", train_seconds=round(train_seconds + time.perf_counter() - started, 1),
                     steps=steps_done, stop_reason=stop_reason)
    return run_dir


def _process_state() -> Any:
    """Return the accelerate process state: one process, or those ``accelerate launch`` started."""
    from accelerate import PartialState

    return PartialState(cpu=not _has_accelerator())


def _prepare_shared_run_dir(config: TrainConfig, resume: bool, state: Any) -> tuple[Path, Path | None]:
    """Run :func:`prepare_run_dir` on the main process and give every process its result or its error."""
    if state.num_processes == 1:
        return prepare_run_dir(config, resume)
    from accelerate.utils import broadcast_object_list

    shared: list[Any] = [None, None, None]
    if state.is_main_process:
        try:
            run_dir, checkpoint = prepare_run_dir(config, resume)
            shared = [str(run_dir), str(checkpoint) if checkpoint else None, None]
        except RunError as error:
            shared = [None, None, str(error)]
    broadcast_object_list(shared)
    if shared[2] is not None:
        raise RunError(shared[2])
    return Path(shared[0]), Path(shared[1]) if shared[1] else None


def _train_in_run_dir(config: TrainConfig, run_dir: Path, checkpoint: Path | None, loaded: Any, pool: Any,
                      dtype: str, on_step: Callable[[dict[str, Any]], None] | None, callbacks: list[Any],
                      num_processes: int) -> tuple[int, str]:
    """Build the trainer, train, and save the final model; return the steps done and why training stopped."""
    from peft import LoraConfig
    from transformers import PrinterCallback
    from trl import GRPOConfig

    from erlgym.erl.algorithm import StepSettings
    from erlgym.erl.memory import ReflectionMemory
    from erlgym.erl.prefill import build_prefill, check_saved_libraries, save_libraries
    from erlgym.erl.ppo import PPOSettings
    from erlgym.erl.rollout import GenerationConfig
    from erlgym.erl.trainer import MEMORY_FILE, ERLTrainer, MetricsFileCallback

    memory = ReflectionMemory(capacity=config.memory_size, threshold=config.memory_threshold,
                              policy=config.memory_policy, scope=config.memory_scope)
    if checkpoint is not None:
        if (checkpoint / MEMORY_FILE).exists():
            memory = ReflectionMemory.load(checkpoint / MEMORY_FILE)
            memory.scope = config.memory_scope  # the scope only filters prompts, so a resumed run may change it
        truncate_records(run_dir, int(checkpoint.name.split("-")[-1]))

    group = config.rollouts_per_task
    completions_per_step = config.tasks_per_step * group
    args = GRPOConfig(
        output_dir=str(run_dir / CHECKPOINTS_DIR),
        max_steps=config.steps,
        per_device_train_batch_size=completions_per_step // config.micro_batches,
        gradient_accumulation_steps=config.micro_batches,
        steps_per_generation=config.micro_batches,
        num_generations=group,
        learning_rate=config.learning_rate,
        lr_scheduler_type="constant",
        max_grad_norm=config.max_grad_norm,
        beta=config.beta,
        loss_type=config.loss_type,
        scale_rewards=config.scale_rewards,
        max_completion_length=config.max_context_tokens,
        temperature=max(config.temperature, 1e-6),
        logging_steps=1,
        save_strategy="steps",
        save_steps=config.save_every,
        save_total_limit=config.keep_checkpoints,
        report_to=["tensorboard"] if config.tensorboard else [],
        seed=config.seed,
        data_seed=config.seed,
        disable_tqdm=True,
        use_cpu=not _has_accelerator(),
        bf16=dtype == "bfloat16",
        fp16=dtype == "float16",
        # Tasks in seed order: the first steps' tasks do not depend on --steps, so a run
        # resumed with a larger --steps continues with new tasks.
        shuffle_dataset=False,
    )
    if config.tensorboard:
        # transformers reads the TensorBoard folder from this variable.
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(run_dir / "tensorboard"))
    peft_config = None
    if config.lora:
        peft_config = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                                 target_modules="all-linear", task_type="CAUSAL_LM")

    # Enough distinct task seeds that no task repeats within the run; each process takes
    # tasks_per_step tasks per step.
    task_count = config.steps * config.tasks_per_step * num_processes
    task_seeds = list(range(config.train_seed_offset, config.train_seed_offset + task_count))
    metrics = MetricsFileCallback(run_dir / METRICS_FILE, on_step, max_tokens=config.max_generated_tokens,
                                  max_seconds=config.max_train_seconds)
    # Each process's controllers get their own seed, so processes do not choose identical templates.
    process_index = _process_state().process_index
    prefills = {role: build_prefill(library, controller, loaded.tokenizer, seed=config.seed * 1009 + process_index,
                                    weights=weights, sequence=sequence)
                for role, (library, controller, weights, sequence) in config.template_controllers().items()}
    if checkpoint is not None:
        check_saved_libraries(run_dir, prefills.get("actions"), prefills.get("reflections"))
    elif prefills and process_index == 0:
        save_libraries(run_dir, prefills.get("actions"), prefills.get("reflections"))
    trainer = ERLTrainer(
        pool=pool, task_seeds=task_seeds,
        settings=StepSettings(group_size=group, reflection=config.reflection,
                              reflection_max_new_tokens=config.reflection_max_new_tokens,
                              scale_rewards=config.scale_rewards,
                              # A zero group advantage carries no GRPO signal; under PPO every sample
                              # has GAE advantages and trains the value head.
                              drop_zero_advantage=config.beta == 0.0 and config.update == "grpo",
                              retry_context=config.retry_context, train_reflections=config.train_reflections,
                              internalize=config.internalize,
                              internalization=config.internalization, reflection_scope=config.reflection_scope),
        generation=GenerationConfig(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                    max_context_tokens=config.max_context_tokens),
        memory=memory, records_path=run_dir / SAMPLES_FILE,
        args=args, model=loaded.model, processing_class=loaded.tokenizer, peft_config=peft_config,
        callbacks=[metrics, *callbacks], merged_rollouts=config.merged_rollouts,
        ppo=PPOSettings(gamma=config.gamma, gae_lambda=config.gae_lambda, value_coef=config.value_coef)
        if config.update == "ppo" else None,
        action_templates=prefills.get("actions"), reflection_templates=prefills.get("reflections"),
        template_records_path=run_dir / TEMPLATE_RECORDS_FILE,
    )
    if checkpoint is not None:
        trainer.load_value_head(checkpoint)
        if trainer.load_template_controllers(checkpoint) and process_index > 0:
            # The checkpoint contains the main process's controllers, so the others reseed to draw their own templates.
            for prefill in prefills.values():
                prefill.controller.reseed([config.seed * 1009 + process_index, int(checkpoint.name.split("-")[-1])])
    # With tqdm disabled, transformers prints every log dict; the CLI prints its own line per step.
    trainer.remove_callback(PrinterCallback)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    trainer.save_model(str(run_dir / FINAL_DIR))
    if trainer.accelerator.is_main_process:
        loaded.tokenizer.save_pretrained(run_dir / FINAL_DIR)
        memory.save(run_dir / FINAL_DIR / MEMORY_FILE)
    stop_reason = metrics.stop_reason or f"step limit: {trainer.state.global_step} steps"
    return trainer.state.global_step, stop_reason




def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch.backends, "mps") and torch.backends.mps.is_available())
