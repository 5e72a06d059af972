"""Command-line value types shared by ``sag``, ``sag-bringup`` and the launch file, free of heavy imports so
``--help`` stays instant."""

from __future__ import annotations

import argparse


def interval_schedule(text: str) -> tuple[int, int]:
    """An interval schedule as typed: "10" (every 10th step) or "5@50" (every 5th from step 50) -> (n, start).

    Raises ``argparse.ArgumentTypeError`` (a plain error message under argparse, an exception elsewhere)."""
    every, _, start = text.strip().partition("@")
    try:
        n, first = int(every), int(start or 0)
    except ValueError:
        n, first = 0, -1
    if n < 1 or first < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected N or N@START with N >= 1 and START >= 0, e.g. 10 or "
                                         "5@50")
    return n, first
