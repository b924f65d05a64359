"""What the benchmark scripts share: the machine description and the JSON output.

The scripts run as ``python benchmarks/NAME.py``, so this folder is on ``sys.path``
and they import this module as ``machine``.
"""

from __future__ import annotations

import json
import os
import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any


def describe_machine(*packages: str) -> dict[str, Any]:
    """Return the platform, processor, CPU count, Python version and each package's version."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        **{package: version(package) for package in packages},
    }


def write_result(result: dict[str, Any], out: Path | None) -> None:
    """Write ``result`` as indented JSON to ``out``, or print it when ``out`` is None."""
    text = json.dumps(result, indent=2) + "\n"
    if out is None:
        print(text, end="")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
