"""``splitplane version``: the installed distribution's version and the Python running it."""

from __future__ import annotations

import argparse
import platform
from importlib import metadata

DISTRIBUTION = "splitplane"


def version_line() -> str:
    """``splitplane X.Y.Z (Python A.B.C)``, the version as installed (pip, wheel or editable)."""
    return f"{DISTRIBUTION} {metadata.version(DISTRIBUTION)} (Python {platform.python_version()})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``splitplane version`` takes no flags."""


def run(args: argparse.Namespace) -> int:
    print(version_line())
    return 0
