"""The ``erlgym`` command line: ``train``, ``eval``, ``bench``, ``play``, ``tasks``, ``templates`` and ``image``.

``train`` options are generated from :class:`~erlgym.erl.config.TrainConfig`, so
every option has the field's help text and default. Errors in user input (an unknown
environment, a bad value, a missing model, an unwritable directory) print one message
naming the value and the fix, and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from erlgym.bitimage.cli import ImageCommandError, add_image_command, run_image
from erlgym.erl.config import DEFAULT_ENV_KWARGS, DTYPES, EVAL_SEED_OFFSET, ConfigError, TrainConfig
from erlgym.erl.errors import ChatTemplateError, ModelLoadError, RunError
from erlgym.eval.bench import VARIANTS
from erlgym.eval.runs import RunDataError
from erlgym.redsearch.cli import TaskCommandError, add_tasks_command, run_tasks
from erlgym.redsearch.graph import GraphError
from erlgym.redsearch.synthesis import SynthesisError
from erlgym.redsearch.tasks import TaskSetError
from erlgym.templates.cli import add_templates_command, run_templates
from erlgym.templates.library import TemplateError

# soft_wrap: long lines (commands, paths) are never broken by rich, so they stay copyable
# when the output is not a terminal.
console = Console(stderr=True, soft_wrap=True)
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad user input; printed without a traceback, exit status 2."""


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error.msg}): {text!r}") from error
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"size\": 4}}', got {text!r}")
    return value


BENCH_OWNED_FIELDS = ("method", "seed", "output_dir", "max_generated_tokens", "max_train_seconds")
"""TrainConfig fields that ``erlgym bench`` sets per run, so it has no option for them."""


def _add_config_options(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """Add one option per TrainConfig field, with its help text and default."""
    for spec in dataclasses.fields(TrainConfig):
        if spec.name in exclude:
            continue
        flag = "--" + spec.name.replace("_", "-")
        default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
        help_text = f"{spec.metadata.get('help', '')} (default: {default})"
        if spec.name == "env_kwargs":
            parser.add_argument(flag, type=_json_object, default=None, help=help_text)
        elif spec.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            kind = {"int": int, "float": float}.get(str(spec.type), str)
            parser.add_argument(flag, type=kind, default=None, choices=spec.metadata.get("choices"), help=help_text)


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: a prefix such as --seed must not silently mean --seeds or --seed-offset.
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="erlgym", description="Train language agents with Experiential Reinforcement Learning (ERL).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('erlgym')}")
    parser.add_argument("-v", "--verbose", action="store_true", help="Show library log messages.")
    commands = parser.add_subparsers(dest="command", required=True)

    def add_command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return commands.add_parser(name, allow_abbrev=False, **kwargs)

    train = add_command("train", help="Train a model with ERL or the GRPO baseline.",
                        description="Train a model with ERL (--method erl) or the GRPO baseline (--method grpo).")
    train.add_argument("--config", type=Path, help=f"JSON file of TrainConfig fields, or a preset name "
                                                   f"({', '.join(preset_names())}); options given here override it.")
    train.add_argument("--resume", action="store_true", help="Continue the run in --output-dir from its last checkpoint.")
    _add_config_options(train)

    evaluate = add_command(
        "eval", help="Measure a model or a run on held-out seeds.",
        description="Play first attempts (no reflection in context) on held-out seeds and report success rate, "
                    "mean steps and invalid-action rate as JSON.")
    evaluate.add_argument("--env", default=None, help="Environment id (default: the run's env, else erlgym/FrozenLake-v0).")
    evaluate.add_argument("--env-kwargs", type=_json_object, default=None,
                          help="gymnasium.make keyword arguments as JSON (default: the run's, else training's default).")
    evaluate.add_argument("--model", default="default", help="Model spec or a run directory (default: default).")
    evaluate.add_argument("--episodes", type=int, default=64, help="Held-out episodes (default: 64).")
    evaluate.add_argument("--seed-offset", type=int, default=EVAL_SEED_OFFSET,
                          help=f"First held-out seed (default: {EVAL_SEED_OFFSET}).")
    evaluate.add_argument("--temperature", type=float, default=0.0, help="Sampling temperature; 0 is greedy (default: 0).")
    evaluate.add_argument("--max-new-tokens", type=int, default=24, help="Maximum new tokens per turn (default: 24).")
    evaluate.add_argument("--batch-size", type=int, default=32, help="Episodes generated together (default: 32).")
    evaluate.add_argument("--dtype", default="auto", choices=DTYPES,
                          help="Weight dtype; auto picks bfloat16 where the hardware supports it, as training "
                               "does (default: auto).")
    evaluate.add_argument("--out", type=Path, default=None,
                          help="JSON file for the results (default: RUN_DIR/eval.json for a run, else print only).")

    bench = add_command(
        "bench", help="Train and evaluate methods over seeds and write a comparison report.",
        description="Train each method on each seed with identical tasks, evaluate every run on the same held-out "
                    "episodes, and write a report with bootstrap confidence intervals, learning curves and budgets. "
                    "Rerun the same command to continue an interrupted bench.")
    bench.add_argument("--methods", default="erl,grpo",
                       help=f"Comma-separated methods to compare: {', '.join(VARIANTS)} (default: erl,grpo).")
    bench.add_argument("--seeds", type=int, default=3, help="Training seeds per method (default: 3).")
    bench.add_argument("--budget", default="steps", choices=("steps", "tokens", "seconds"),
                       help="What every run gets the same amount of: --steps training steps, --budget-value generated "
                            "tokens, or --budget-value seconds of training (default: steps).")
    bench.add_argument("--budget-value", type=float, default=0.0,
                       help="Tokens or seconds per run for --budget tokens or seconds; --steps stays the upper bound.")
    bench.add_argument("--episodes", type=int, default=64, help="Held-out evaluation episodes per run (default: 64).")
    bench.add_argument("--baseline", default="grpo", help="Method the others are compared with (default: grpo).")
    bench.add_argument("--out", type=Path, default=None,
                       help="Bench folder (default: benches/<env>-<budget>); rerunning with it continues the bench.")
    bench.add_argument("--config", type=Path, help=f"JSON file of TrainConfig fields, or a preset name "
                                                   f"({', '.join(preset_names())}); options given here override it.")
    _add_config_options(bench, exclude=BENCH_OWNED_FIELDS)

    play = add_command("play", help="Play an environment in the terminal with the text the model sees.")
    play.add_argument("env_id", help="Environment id, e.g. erlgym/FrozenLake-v0.")
    play.add_argument("--env-kwargs", type=_json_object, default=None,
                      help="gymnasium.make keyword arguments as JSON (default: the same as erlgym train).")
    play.add_argument("--seed", type=int, default=None, help="Episode seed, >= 0 (default: random).")
    play.add_argument("--show-examples", action="store_true",
                      help="Also print the worked examples that precede the first observation in the model's prompt.")

    add_tasks_command(add_command)
    add_templates_command(add_command)
    add_image_command(add_command)
    return parser


PRESETS_DIR = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    """Return the names of the configuration presets that ship with erlgym."""
    return sorted(path.stem for path in PRESETS_DIR.glob("*.json"))


def read_config_file(path: Path) -> dict[str, Any]:
    """Return the TrainConfig fields in a JSON file or a preset, or raise UsageError naming the problem.

    A value that is not an existing file but the name of a preset (see ``preset_names``)
    reads that preset.
    """
    if not path.exists() and str(path) in preset_names():
        path = PRESETS_DIR / f"{path}.json"
    elif not path.exists():
        raise UsageError(f"Config file {path} not found. Pass an existing JSON file or a preset: "
                         f"{', '.join(preset_names())}.")
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise UsageError(f"Config file {path} not found. Pass an existing JSON file.") from error
    except OSError as error:
        raise UsageError(f"Cannot read config file {path}: {error.strerror}. Pass a readable JSON file.") from error
    except json.JSONDecodeError as error:
        raise UsageError(f"Config file {path} is not valid JSON: {error.msg} at line {error.lineno}.") from error
    if not isinstance(values, dict):
        raise UsageError(f"Config file {path} must contain a JSON object of TrainConfig fields.")
    return values


def resolve_train_config(args: argparse.Namespace) -> TrainConfig:
    values: dict[str, Any] = {}
    if args.config is not None:
        values = read_config_file(args.config)
    if args.resume and args.output_dir is None and "output_dir" not in values:
        raise UsageError("--resume needs --output-dir RUN_DIR naming the run to continue.")
    if args.resume:
        from erlgym.erl.run import read_run_config

        # The run's saved configuration, then the --config file, then the command line.
        run_dir = Path(args.output_dir if args.output_dir is not None else values["output_dir"])
        values = {**read_run_config(run_dir), **values}
    return TrainConfig.from_dict(with_options(values, args)).validate()


def with_options(values: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Return ``values`` with every TrainConfig option given on the command line put over it."""
    given = {spec.name: getattr(args, spec.name, None) for spec in dataclasses.fields(TrainConfig)}
    return {**values, **{name: value for name, value in given.items() if value is not None}}


def format_step_line(record: dict[str, Any], total_steps: int) -> str:
    """Format one line per step: success before and after reflection, reward, tokens, seconds."""
    parts = [f"step {record['step']:>3}/{total_steps}",
             f"success {record.get('rollout/first_success_rate', 0.0):.2f}"]
    if record.get("erl/num_reflections", 0) > 0 or "erl/retry_success_rate" in record:
        parts[-1] += f" → {record.get('erl/success_after_reflection', 0.0):.2f} after reflection"
    parts += [f"reward {record.get('rollout/first_reward_mean', 0.0):.2f}",
              f"invalid {record.get('rollout/invalid_action_rate', 0.0):.2f}",
              f"tokens {int(record.get('tokens/generated_tokens', 0)):,}",
              f"loss {record.get('loss', 0.0):.4f}",
              f"{record.get('time/step_s', 0.0):.1f} s"]
    return " | ".join(parts)


def run_train(args: argparse.Namespace) -> int:
    from erlgym.erl.run import train

    config = resolve_train_config(args)
    console.print("[bold]erlgym train[/bold]",
                  escape(f"{config.env} method={config.method} model={config.model} steps={config.steps}"))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), console=console, transient=False) as progress:
        task = progress.add_task("loading model", total=config.steps)

        def on_step(record: dict[str, Any]) -> None:
            progress.console.print(format_step_line(record, config.steps))
            progress.update(task, completed=record["step"], description="training")

        progress.update(task, description="first step")
        run_dir = train(config, resume=args.resume, on_step=on_step)
    console.print(escape(f"Run directory: {run_dir}  (evaluate it with: erlgym eval --model {run_dir})"))
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from erlgym.eval.bench import BenchConfig, BenchEvent, run_bench as bench

    values = read_config_file(args.config) if args.config is not None else {}
    for name in BENCH_OWNED_FIELDS:
        if name in values:
            raise UsageError(f"Config file {args.config} sets {name}, which erlgym bench sets for each run. Remove it.")
    train_config = TrainConfig.from_dict(with_options(values, args))
    out = args.out or Path("benches") / f"{train_config.env.split('/')[-1]}-{args.budget}"
    config = BenchConfig(out=str(out), train=train_config, methods=tuple(args.methods.split(",")), seeds=args.seeds,
                         budget=args.budget, budget_value=args.budget_value, episodes=args.episodes,
                         baseline=args.baseline, command=shlex.join(["erlgym", *sys.argv[1:]]))
    config.validate()
    console.print("[bold]erlgym bench[/bold]", escape(
        f"{train_config.env} methods={args.methods} seeds={args.seeds} budget={args.budget} out={out}"))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task("bench", total=args.seeds * len(config.methods) + 1)
        current = {"label": ""}

        def on_event(event: BenchEvent) -> None:
            if event.kind == "start":
                current["label"] = event.label
                progress.update(task, description=escape(event.label))
            elif event.kind == "skip":
                progress.console.print(escape(f"{event.label}: already finished, reused"))
            else:
                progress.console.print(escape(f"{event.label}: finished in {event.seconds:.0f} s"))
            progress.update(task, completed=event.done)

        def on_step(record: dict[str, Any]) -> None:
            progress.console.print(escape(current["label"] + ": " + format_step_line(record, train_config.steps)))

        report_path = bench(config, on_event=on_event, on_step=on_step)
    console.print(escape(f"Report: {report_path}"))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from erlgym.erl.evaluate import EvalConfig, evaluate
    from erlgym.erl.run import STATUS_FILE

    from erlgym.erl.run import read_run_config

    model_path = Path(args.model).expanduser()
    is_run = (model_path / STATUS_FILE).is_file()
    env = args.env
    if env is None:
        env = read_run_config(model_path).get("env", "erlgym/FrozenLake-v0") if is_run else "erlgym/FrozenLake-v0"
    out = args.out or (model_path / "eval.json" if is_run else None)
    if out is not None and (out.is_dir() or (out.parent.exists() and not out.parent.is_dir())):
        raise UsageError(f"Cannot write results to {out}: its parent is not a folder or it is a folder. "
                         "Pass a file path with --out.")
    config = EvalConfig(env=env, env_kwargs=args.env_kwargs, model=args.model, episodes=args.episodes,
                        seed_offset=args.seed_offset, temperature=args.temperature,
                        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, dtype=args.dtype)
    with Progress(TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("eval", total=config.episodes)
        results = evaluate(config, on_batch=lambda done, total: progress.update(task, completed=done))
    if out is not None:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=2))
        except OSError as error:
            raise UsageError(f"Cannot write results to {out}: {error.strerror}. Pass a writable --out.") from error
    print(json.dumps(results, indent=2))
    if out is not None:
        console.print(escape(f"Results written to {out}"))
    return 0


def run_play(args: argparse.Namespace) -> int:
    from erlgym.erl.run import check_env_id, make_env_or_raise

    check_env_id(args.env_id)
    if args.seed is not None and args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}.")
    env_kwargs = args.env_kwargs if args.env_kwargs is not None else dict(DEFAULT_ENV_KWARGS.get(args.env_id, {}))
    env = make_env_or_raise(args.env_id, env_kwargs)
    seed = args.seed if args.seed is not None else int(time.time()) % 1_000_000
    observation, _ = env.reset(seed=seed)
    console.rule(escape(f"{args.env_id} seed {seed}: system prompt"))
    print(env.unwrapped.system_prompt)
    if args.show_examples:
        for message in env.unwrapped.few_shot_messages():
            console.rule(f"worked example: {message['role']}")
            print(message["content"])
    console.rule("observation")
    print(observation)
    while True:
        try:
            reply = input("your reply> ")
        except EOFError:
            print()
            return 0
        observation, reward, terminated, truncated, info = env.step(reply)
        console.rule(f"reward {reward:g}")
        print(observation)
        if terminated or truncated:
            console.rule("episode over")
            print(info.get("episode_feedback", ""))
            return 0


def _quiet_model_libraries() -> None:
    """Silence transformers' progress bars, info logs and deprecation warnings; the CLI prints its own progress."""
    import warnings

    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose and args.command in ("train", "eval", "bench"):
        _quiet_model_libraries()
    handlers = {"train": run_train, "eval": run_eval, "bench": run_bench, "play": run_play, "tasks": run_tasks,
                "templates": run_templates, "image": run_image}
    try:
        return handlers[args.command](args)
    except (UsageError, ConfigError, RunError, ModelLoadError, ChatTemplateError, RunDataError,
            TaskCommandError, GraphError, TaskSetError, SynthesisError, TemplateError, ImageCommandError) as error:
        console.print("[bold red]error:[/bold red]", escape(str(error)))
        return EXIT_USAGE
    except KeyboardInterrupt as error:
        run_dir = getattr(error, "run_dir", None)
        hint = ""
        if args.command == "bench":
            hint = " Run the same erlgym bench command again to continue where it stopped."
        elif run_dir is not None:
            hint = f" Continue the run with: erlgym train --resume --output-dir {run_dir}"
        console.print("Interrupted." + escape(hint))
        return 130


if __name__ == "__main__":
    sys.exit(main())
