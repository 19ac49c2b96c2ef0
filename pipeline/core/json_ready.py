"""JSON-ready copies of run records and reports: strict JSON has no NaN or numpy types."""

from __future__ import annotations

import math

import numpy as np


def json_ready(value: object) -> object:
    """A copy where NaN/inf become null, numpy scalars plain values, tuples lists."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
