"""Latency samples as a compact CDF, for the benchmark scripts' JSON and the suite's plots."""

from __future__ import annotations

import numpy as np

CDF_QUANTILES = [*range(100), 99.5, 99.9, 100]


def cdf(lat: list[float], digits: int = 3) -> dict[str, list[float]]:
    """Latency quantiles in ms at q = 0..99, 99.5, 99.9, 100: the CDF in about 100 numbers."""
    if not lat:
        return {"q": [], "ms": []}
    ms = np.percentile(np.asarray(lat) * 1000, CDF_QUANTILES)
    return {"q": list(CDF_QUANTILES), "ms": [round(float(x), digits) for x in ms]}
