"""Bjontegaard delta rate: the average bitrate difference at equal quality between two curves."""

from __future__ import annotations

import numpy as np


def bd_rate(rate_a, dist_a, rate_b, dist_b, band: tuple[float, float] | None = None) -> float | None:
    """Percent rate change of curve B against anchor A over their common quality range.

    Negative means B needs fewer bits. Classic method (VCEG-M33): cubic fit of log-rate as a
    function of quality (on every point of each curve), integrated over the overlap, or over the
    part of it inside ``band`` (e.g. 28-36 dB). ``None`` when the curves do not overlap (there) or
    have fewer than four points.
    """
    ra, da, rb, db = (np.asarray(v, np.float64) for v in (rate_a, dist_a, rate_b, dist_b))
    if len(ra) < 4 or len(rb) < 4:
        return None
    lo, hi = max(da.min(), db.min()), min(da.max(), db.max())
    if band is not None:
        lo, hi = max(lo, band[0]), min(hi, band[1])
    if hi <= lo:
        return None
    pa = np.polyfit(da, np.log(ra), 3)
    pb = np.polyfit(db, np.log(rb), 3)
    ia, ib = np.polyint(pa), np.polyint(pb)
    avg_a = (np.polyval(ia, hi) - np.polyval(ia, lo)) / (hi - lo)
    avg_b = (np.polyval(ib, hi) - np.polyval(ib, lo)) / (hi - lo)
    return float((np.exp(avg_b - avg_a) - 1) * 100)
