"""Argument types the management commands share."""

from __future__ import annotations

import argparse
import math


def seconds(text: str) -> float:
    """A ``--wait`` in seconds: 0 or more; ``inf`` waits without a limit.

    ``float()`` alone takes ``nan``, which every comparison answers False: a wait
    that never ends, or one refused only after the command had acted.
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds"
        ) from None
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give 0 or more seconds")
    return value
