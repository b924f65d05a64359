"""The ``erlgym templates`` command: analyse the template choices of a run, and list, show or check libraries.

- ``analyze`` fits the association between template choices and outcomes in a run's
  ``templates.jsonl`` (:func:`~erlgym.templates.analysis.analyze_run`), prints a summary
  and writes ``report.md``, ``analysis.json`` and the steering files
  (:func:`~erlgym.templates.report.write_analysis`).
- ``list`` prints the bundled libraries with their sizes.
- ``show`` prints a library's dimensions and choices and the prefill text of a few templates.
- ``check`` validates a library file and prints its sizes.

``erlgym.erl.cli`` registers the command with :func:`add_templates_command` and runs it
with :func:`run_templates`. Bad input raises :class:`~erlgym.templates.library.TemplateError`
(or its subclass :class:`~erlgym.templates.records.TemplateAnalysisError`), which the
command line prints as one line before exiting with status 2. Results go to stdout, and
status lines and the paths written go to stderr.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from erlgym.templates.analysis import PENALTY_RULES, TARGETS, AnalysisOptions, SectionAnalysis, analyze_run
from erlgym.templates.library import Template, TemplateLibrary, bundled_libraries, load_library
from erlgym.templates.records import TemplateAnalysisError
from erlgym.templates.report import SECTION_TITLES, write_analysis

# soft_wrap: rich never breaks long lines (template ids, paths), so they stay whole when
# the output is piped or captured.
console = Console(stderr=True, soft_wrap=True)
"""Status lines and the paths written, on stderr."""
output = Console(soft_wrap=True)
"""Results: summaries, tables and libraries, on stdout."""

DEFAULT_OUT = "templates-analysis"
"""Folder inside the run directory that ``analyze`` writes to without --out."""
SUMMARY_FEATURES = 5
"""LASSO features printed per section by ``analyze``. report.md lists all selected ones."""


# ---------------------------------------------------------------------- parser


def add_templates_command(add_command: Callable[..., argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``templates`` and its subcommands with ``add_command(name, **kwargs)``, the top-level subparser factory."""
    templates = add_command(
        "templates", help="Analyse a run's template choices, and list, show or check template libraries.",
        description="Relate the STATe template choices of a training run to its outcomes and write steering "
                    "weights, or inspect and validate template libraries.")
    subcommands = templates.add_subparsers(dest="templates_command", required=True,
                                           metavar="{analyze,list,show,check}")

    def add_subcommand(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return subcommands.add_parser(name, allow_abbrev=False, **kwargs)

    defaults = AnalysisOptions()
    analyze = add_subcommand(
        "analyze", help="Relate a run's template choices to its outcomes; write a report and steering weights.",
        description="Fit a presence model and a LASSO of the outcome on the template choices in RUN_DIR/"
                    "templates.jsonl, with bootstrap intervals, and write report.md, analysis.json and "
                    "steering.json (steering-reflections.json for reflection templates).")
    analyze.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="Run directory written by erlgym train.")
    analyze.add_argument("--out", type=Path, default=None, metavar="DIR",
                         help=f"Output folder (default: RUN_DIR/{DEFAULT_OUT}).")
    analyze.add_argument("--target", default=defaults.target, choices=TARGETS,
                         help="Outcome to explain: success (0/1, logistic models, effects in log-odds) or reward "
                              f"(linear models, effects in reward units) (default: {defaults.target}).")
    analyze.add_argument("--max-position", type=_integer_at_least(0), default=defaults.max_position, metavar="N",
                         help="Turns at or after N share the position-specific features of turn N "
                              f"(default: {defaults.max_position}).")
    analyze.add_argument("--min-count", type=_integer_at_least(1), default=defaults.min_count, metavar="N",
                         help="Drop LASSO features seen in fewer than N trajectories "
                              f"(default: {defaults.min_count}).")
    analyze.add_argument("--bootstrap", type=_integer_at_least(0), default=defaults.bootstrap, metavar="N",
                         help="Bootstrap resamples for the 95%% intervals; 0 skips them "
                              f"(default: {defaults.bootstrap}).")
    analyze.add_argument("--penalty-rule", default=defaults.penalty_rule, choices=PENALTY_RULES,
                         help="LASSO penalty: min, the minimum cross-validated loss, or 1se, the strongest penalty "
                              "within one standard error of it, which selects fewer unrelated features "
                              f"(default: {defaults.penalty_rule}).")
    analyze.add_argument("--sequence-turns", type=_integer_at_least(1), default=defaults.sequence_turns,
                         metavar="N", help="Turns per sequence in the table of most frequent template sequences "
                                           f"(default: {defaults.sequence_turns}).")
    analyze.add_argument("--seed", type=_integer_at_least(0), default=defaults.seed,
                         help=f"Seed of the bootstrap and the solver (default: {defaults.seed}).")

    add_subcommand("list", help="Print the bundled template libraries with their sizes.",
                   description="Print each library shipped with erlgym: its name (pass it to --templates), number "
                               "of dimensions, choices and templates, and description.")

    show = add_subcommand("show", help="Print a library's dimensions, choices and the prefill of a few templates.",
                          description="Print a library's dimensions and choices with their definitions, guidance, "
                                      "prefixes and checks, then the prefill text that starts the assistant turn "
                                      "for a few templates.")
    show.add_argument("library", metavar="NAME_OR_FILE", help="Bundled library name or a library JSON file.")
    show.add_argument("--count", type=_integer_at_least(0), default=3, metavar="N",
                      help="Templates whose prefill is printed, spread over all templates (default: 3).")
    show.add_argument("--template", action="append", default=None, metavar="TEMPLATE",
                      help="Print the prefill of this template instead, e.g. 'strategy=close-gap,opening=free'; "
                           "repeat for several.")

    check = add_subcommand("check", help="Validate a template library file.",
                           description="Load a library file, print OK with its sizes, or print what is invalid.")
    check.add_argument("library", metavar="FILE", help="Library JSON file (or a bundled library name).")
    return templates


def _integer_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


# ---------------------------------------------------------------------- entry point


def run_templates(args: argparse.Namespace) -> int:
    """Run the ``erlgym templates`` subcommand in ``args.templates_command`` and return the exit status."""
    handlers = {"analyze": run_analyze, "list": run_list, "show": run_show, "check": run_check}
    return handlers[args.templates_command](args)


# ---------------------------------------------------------------------- analyze


def run_analyze(args: argparse.Namespace) -> int:
    options = AnalysisOptions(target=args.target, max_position=args.max_position, min_count=args.min_count,
                              bootstrap=args.bootstrap, seed=args.seed, sequence_turns=args.sequence_turns,
                              penalty_rule=args.penalty_rule)
    out = args.out if args.out is not None else args.run_dir / DEFAULT_OUT
    if out.exists() and not out.is_dir():
        raise TemplateAnalysisError(f"--out {out} is a file; pass a folder for the analysis files")
    with console.status("fitting the models"):
        analysis = analyze_run(args.run_dir, options)
    for result in analysis.sections.values():
        print_section_summary(result)
    files = write_analysis(analysis, out)
    for path in files.values():
        console.print(escape(f"Wrote {path}"))
    return 0


def print_section_summary(result: SectionAnalysis) -> None:
    """Print the size, outcome rate, caveats and strongest LASSO features of one section."""
    output.print(f"[bold]{SECTION_TITLES[result.section]}[/bold]", escape(
        f"({', '.join(result.kinds)}, library {result.library}): {result.trajectories} trajectories in "
        f"{result.groups} task groups, success rate {result.success_rate:.2f}, mean reward {result.mean_reward:.3f}"))
    for note in result.notes:
        output.print(escape(f"  note: {note}"))
    lasso = result.lasso
    if not lasso.fitted:
        output.print(escape(f"  LASSO not fitted: {lasso.reason}"))
    else:
        selected = lasso.selected
        output.print(escape(f"  LASSO selected {len(selected)} of {len(lasso.features)} features "
                            f"({lasso.penalty_name}={lasso.penalty:.4g})" + (":" if selected else ".")))
        for feature in selected[:SUMMARY_FEATURES]:
            interval = ("" if feature.ci_low is None else
                        f" [{feature.ci_low:+.2f}, {feature.ci_high:+.2f}], selected in "
                        f"{feature.selection_frequency:.0%} of bootstrap fits")
            output.print(escape(f"    {feature.feature}: {feature.coefficient:+.3f}{interval}"))
        if len(selected) > SUMMARY_FEATURES:
            output.print(escape(f"    ... {len(selected) - SUMMARY_FEATURES} more in report.md"))
    origin = {"lasso": "the LASSO", "presence": "the presence model", "none": "no model, all 0"}
    output.print(escape(f"  {len(result.steering['weights'])} steering weights from "
                        f"{origin[result.steering['source']]}"))


# ---------------------------------------------------------------------- libraries


def run_list(args: argparse.Namespace) -> int:
    table = Table("name", "dimensions", "choices", "templates", "description")
    for name in bundled_libraries():
        library = load_library(name)
        sizes = _library_sizes(library)
        table.add_row(escape(name), str(sizes["dimensions"]), str(sizes["choices"]), str(sizes["templates"]),
                      escape(library.description))
    output.print(table)
    return 0


def run_show(args: argparse.Namespace) -> int:
    library = load_library(args.library)
    sizes = _library_sizes(library)
    output.print(f"[bold]{escape(library.name)}[/bold]", escape(
        f"({library.source}): {sizes['dimensions']} dimensions, {sizes['choices']} choices, "
        f"{sizes['templates']} templates"))
    if library.description:
        output.print(escape(library.description))
    for dimension in library.dimensions:
        output.print()
        output.print(f"[bold]{escape(dimension.id)}[/bold]", escape(dimension.description))
        for choice in dimension.choices:
            output.print(f"  [bold]{escape(choice.id)}[/bold]", escape(choice.definition))
            for label, value in (("guidance", choice.guidance), ("prefix", choice.prefix), ("check", choice.check)):
                if value:
                    output.print(escape(f"    {label}: {value}"))

    if args.template:
        templates = [library.parse(key) for key in args.template]
    else:
        templates = _spread_templates(library, args.count)
    for template in templates:
        output.print()
        output.print("[bold]template[/bold]", escape(template.key))
        prefill = library.prefill(template)
        output.print(escape(prefill.rstrip("\n")) if prefill else "[italic](empty prefill)[/italic]")
    return 0


def _spread_templates(library: TemplateLibrary, count: int) -> list[Template]:
    """Return up to ``count`` templates where template k takes choice k (cycling) of every dimension.

    Consecutive templates then differ in every dimension, which shows more of the library
    than the first templates of :meth:`TemplateLibrary.all_templates`, which share their first choices.
    """
    templates: list[Template] = []
    for index in range(len(library.all_templates())):
        if len(templates) == count:
            break
        template = Template(tuple((dimension.id, dimension.choices[index % len(dimension.choices)].id)
                                  for dimension in library.dimensions))
        if template not in templates:
            templates.append(template)
    # Dimensions of equal size repeat the same combinations, so the rest comes in library order.
    for template in library.all_templates():
        if len(templates) == count:
            break
        if template not in templates:
            templates.append(template)
    return templates


def run_check(args: argparse.Namespace) -> int:
    library = load_library(args.library)
    sizes = _library_sizes(library)
    output.print(escape(f"OK: {library.source}: library {library.name!r}, {sizes['dimensions']} dimensions, "
                        f"{sizes['choices']} choices, {sizes['templates']} templates"))
    unchecked = [f"{dimension.id}={choice.id}" for dimension in library.dimensions for choice in dimension.choices
                 if choice.check is None]
    if unchecked:
        output.print(escape(f"Choices without a check, whose controllability is not measured: {', '.join(unchecked)}"))
    return 0


def _library_sizes(library: TemplateLibrary) -> dict[str, int]:
    templates = 1
    for dimension in library.dimensions:
        templates *= len(dimension.choices)
    return {"dimensions": len(library.dimensions),
            "choices": sum(len(dimension.choices) for dimension in library.dimensions), "templates": templates}
