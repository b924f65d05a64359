"""Compare trained runs: bootstrap intervals over seeds and episodes, learning curves, reports."""

from erlgym.eval.report import Comparison, MethodSummary, write_report
from erlgym.eval.runs import RunDataError, RunResult, load_run
from erlgym.eval.stats import Interval, bootstrap_ci, bootstrap_difference_ci, describe_difference

__all__ = [
    "Comparison",
    "Interval",
    "MethodSummary",
    "RunDataError",
    "RunResult",
    "bootstrap_ci",
    "bootstrap_difference_ci",
    "describe_difference",
    "load_run",
    "write_report",
]
