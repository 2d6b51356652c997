"""The one definition of Max-Q and Max-P, used by every output of a run (sweep summary, report,
latency-constrained choice, export, compare, fleet collect).

Max-Q is the contiguous run of settings whose tokens/J cannot be told from the best mean, with a
recommended setting inside it; Max-P the lowest setting from which tokens/s cannot be told from
the best. "Cannot be told" is the test of ``harness.readers.stats`` on the repeats of each setting.
The functions take any objects with ``setting``, ``n``, ``tokens_per_s.mean`` and
``tokens_per_j.mean`` (``analysis.SettingStats``), sorted by setting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.readers.fit import monotone_fit
from harness.readers.stats import cannot_tell_apart, pooled_noise

#: a Max-Q range is too wide to single out one setting when it spans this many measured settings
#: and some of them have fewer repeats than ``MIN_REPEATS_TO_PICK``
WIDE_SETTINGS = 3
MIN_REPEATS_TO_PICK = 2


@dataclass(frozen=True)
class Range:
    """Settings that cannot be told from the best: ``best`` is the recommended setting (Max-Q: the most
    tokens/J measured; Max-P: the lowest setting of the range), ``value`` its mean, ``top`` the argmax."""

    lo: float
    hi: float
    best: float
    value: float
    top: float
    settings: tuple[float, ...]
    #: too few repeats to single out one setting: outputs give the range, not a pick
    wide: bool = False


def best_range(stats: list, samples: dict[float, np.ndarray], metric: str = "tokens_per_j",
               chosen: float | None = None) -> Range:
    """The contiguous run of settings around the best mean of ``metric`` that cannot be told from
    it (Max-Q). The recommended setting is the best measured mean: every output names a setting a
    reader can find at the top of the table. When the range is wide and thinly repeated
    (``wide``), outputs give the range instead of singling out one setting.

    ``chosen``: the answer of the run's Max-Q search. Its model weighs each window against its
    neighbours, so where it lies in the range it is the recommended setting (and the range is not
    called too wide to pick from): every output of a search run then names the search's answer."""
    means = np.array([getattr(s, metric).mean for s in stats])
    settings = [s.setting for s in stats]
    ib = int(np.argmax(means))
    groups = [samples[s] for s in settings]
    sigma, df = pooled_noise(groups, means)
    k = max(len(stats) - 1, 1)
    same = [cannot_tell_apart(groups[ib], groups[i], sigma, df, k) for i in range(len(stats))]
    lo = ib
    while lo > 0 and same[lo - 1]:
        lo -= 1
    hi = ib
    while hi < len(stats) - 1 and same[hi + 1]:
        hi += 1
    wide = hi - lo + 1 >= WIDE_SETTINGS and min(st.n for st in stats[lo:hi + 1]) < MIN_REPEATS_TO_PICK
    pick = ib
    if chosen is not None and chosen in settings[lo:hi + 1]:
        pick, wide = settings.index(chosen), False
    return Range(lo=settings[lo], hi=settings[hi], best=settings[pick], value=float(means[pick]),
                 top=settings[ib], settings=tuple(settings[lo:hi + 1]), wide=wide)


def max_p_range(stats: list, samples: dict[float, np.ndarray]) -> Range:
    """Max-P: tokens/s does not fall when a GPU gets more power or clock, so the best is the top
    block of the isotonic fit (a flat top pools all its settings, which keeps the best from being
    the luckiest of many equal settings); Max-P is the lowest setting from which every setting up
    to the top cannot be told from that block."""
    settings = [s.setting for s in stats]
    means = np.array([s.tokens_per_s.mean for s in stats])
    fit = monotone_fit(settings, means, [max(s.n, 1) for s in stats])
    top_val = fit.values[-1]
    block = [i for i in range(len(stats)) if np.isclose(fit.values[i], top_val, rtol=1e-12, atol=0)]
    best = np.concatenate([samples[settings[i]] for i in block])
    groups = [samples[x] for x in settings]
    sigma, df = pooled_noise(groups, means)
    k = max(len(stats) - 1, 1)
    lo = len(stats) - 1
    while lo > 0 and cannot_tell_apart(best, groups[lo - 1], sigma, df, k):
        lo -= 1
    if not cannot_tell_apart(best, groups[-1], sigma, df, k):  # the top itself is worse than the block
        lo = block[0]
    top = settings[int(np.argmax(means))]
    return Range(lo=settings[lo], hi=settings[-1], best=settings[lo], value=float(means[lo]), top=top,
                 settings=tuple(settings[lo:]))
