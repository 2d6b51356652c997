"""Which point to measure next: a fixed grid, or the adaptive Max-Q search."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from harness.sweep.plan import PlannedPoint, SweepPlan


@dataclass(frozen=True)
class Outcome:
    """What the sweep learnt from one planned point (node total over GPUs, first phase)."""

    planned: PlannedPoint
    tokens_per_s: float
    tokens_per_j: float
    valid: bool
    #: device seconds the point took (warm-ups and windows of every phase): what a search's budget counts
    device_s: float = 0.0
    #: the first phase's warm-up and window, seconds (a grid point's cost; the weight of a longer window)
    warmup_s: float = 0.0
    window_s: float = 0.0
    #: the validity flags of an invalid point (why it was left out of the decision)
    flags: str = ""


class PointSource(Protocol):
    def next_point(self, done: Sequence[Outcome]) -> PlannedPoint | None: ...


@dataclass
class GridSource:
    """A fixed plan, in order (what a resumed run already has is skipped per GPU and phase by the loop,
    ``SweepContext.recorded``)."""

    plan: SweepPlan

    def __post_init__(self) -> None:
        self._todo: Iterator[PlannedPoint] = iter(self.plan.grid())

    def next_point(self, done: Sequence[Outcome]) -> PlannedPoint | None:
        return next(self._todo, None)


@dataclass(frozen=True)
class SearchResult:
    """The answer of one Max-Q search and how sure it is (sweep summary and the run's manifest)."""

    batch_size: int
    setting: float | None
    #: probability that ``setting`` gives at least (1 - margin) of the best tokens/J in the range
    p_within: float
    margin_pct: float
    #: why it stopped: "margin" (sure enough), "budget" (device-time budget), "points" (max_points)
    stopped: str
    points: int
    #: points left out of the decision (flagged windows), by setting
    excluded: dict[float, str]
    device_s: float
    budget_s: float
    #: device time of the knob's equivalent 1-repeat grid, estimated from this search's own points
    grid_s: float
    #: tokens/J noise of one window at the base window length ``window_s``, percent (None: not yet measured)
    noise_pct: float | None
    window_s: float
    #: the longest window the search chose (longer than ``window_s`` when the noise asked for it)
    longest_s: float

    def sentence(self, unit: str) -> str:
        """One line for the sweep summary."""
        if self.setting is None:
            return f"Max-Q search, batch {self.batch_size}: no valid point to choose from"
        share = f"{self.device_s / self.grid_s:.2f} of a 1-repeat grid's device time" if self.grid_s else ""
        text = (f"Max-Q search, batch {self.batch_size}: {self.setting:g} {unit}, within {self.margin_pct:g}% of the "
                f"best tokens/J with probability {self.p_within:.2f} ({self.points} points, {share}")
        if self.noise_pct is not None:
            text += f"; noise {self.noise_pct:.2g}% per {self.window_s:g} s window, windows up to {self.longest_s:g} s"
        text += ")"
        if self.excluded:
            text += "; left out (flagged): " + ", ".join(f"{s:g} {unit} ({f})" for s, f in self.excluded.items())
        if self.stopped == "budget":
            text += (f". The search budget ({self.budget_s:.0f} device-s) ran out before the answer was confirmed "
                     "(95% sure, measured twice, at the model's peak): "
                     "a larger --search-budget, a longer --window or a wider --margin-pct would settle it")
        elif self.stopped == "points":
            text += ". The search stopped at its point limit before the answer was confirmed"
        return text


#: the golden ratio's inverse: the golden-section point of a range lies this share from one end
GOLDEN = (math.sqrt(5) - 1) / 2


@dataclass
class MaxQSearch:
    """Adaptive search for the setting with the most tokens/J, stopping on the decision.

    A coarse pass over up to ``coarse`` settings spread over the range (descending: each setting runs
    cooler than the last, so thermal history costs the least warm-up; fewer when the budget is small,
    so two points near the best still fit), then a model of tokens/J near the best: a quadratic fitted
    by weighted least squares to the valid windows at the ``local`` settings nearest the best (a
    window's weight is its length). The answer is the tried setting the model rates best, not the best
    single mean. From the fit's uncertainty (a multivariate t over its coefficients, with the noise
    measured from the residuals) the search draws the shortfall of the chosen setting against every
    candidate at the knob's resolution near it, and against each other tried setting's own mean: the
    *differences* to the chosen one. It stops when the probability that no candidate beats the chosen
    setting by more than ``margin_pct`` reaches ``confidence`` and the answer rests on more than one
    window, or when the next point would spend more than ``budget_share`` of the device time of the
    knob's equivalent 1-repeat grid (``grid_points`` settings, estimated from below), whichever comes
    first; ``result`` says which and how sure.

    Until then it measures the fitted peak when no tried setting is within the resolution of it (then
    the other leads of ``_Assessment.peaks``: the other abscissa's peak, the bracket's vertices), and
    otherwise repeats whichever of the chosen setting and its strongest rival has less weight; when the
    budget has room for one more point only and the answer rests on one window, it repeats the answer
    (and a lengthened window always leaves room for that repeat), unless the model more likely than not
    expects its untried peak to beat the answer by more than the margin: then it measures the peak. Windows
    lengthen with the measured noise (``_choose_window``). A flagged point (``Outcome.valid`` false)
    never enters the decision: after the coarse pass it is measured again once where it matters (near
    the best), and left out if flagged again or far from the best.
    """

    lo: float
    hi: float
    batch_size: int
    resolution: float
    margin_pct: float = 1.0
    budget_share: float = 1 / 3
    grid_points: int = 21
    window_s: float = 30.0
    confidence: float = 0.95
    #: the most settings in the coarse pass (fewer when the budget is small: __post_init__)
    coarse: int = 5
    local: int = 4
    max_points: int = 40
    max_window_factor: float = 4.0
    snap: Callable[[float], float] = field(default=lambda v: round(v, 1))

    def __post_init__(self) -> None:
        # the coarse pass leaves the budget room for two points near the best (the fitted peak and a
        # repeat or a rival): fewer, well-spread settings when the grid, and so the budget, is small
        n = min(self.coarse, max(3, math.floor(self.budget_share * self.grid_points + 1e-9) - 2))
        # three settings: the ends and the golden-section point nearer the bottom, where tokens/J peaks on
        # every part modelled here (it rises steeply from the low end and falls gently towards the top),
        # so a budget that affords only the coarse pass still measures near Max-Q
        shares = (0.0, 1 - GOLDEN, 1.0) if n == 3 else tuple(i / (n - 1) for i in range(n))
        self._queue = sorted({self.snap(self.lo + (self.hi - self.lo) * f) for f in shares}, reverse=True)
        self._window: float | None = None  # the next window's length (None: the base window)
        self._noise: float | None = None
        self._assessed: _Assessment | None = None
        self._stopped = ""

    def budget_note(self, unit: str) -> str | None:
        """A line for the run's notes when the budget affords less than the coarse pass and two points
        near the best (a part whose range makes a small grid): the answer will likely stand unconfirmed."""
        points = self.budget_share * self.grid_points
        coarse = len(self._queue)
        if points >= coarse + 2:
            return None
        return (f"the search budget ({self.budget_share:.2g} of a {self.grid_points}-setting grid over "
                f"{self.lo:g}-{self.hi:g} {unit}) affords about {points:.0f} points and its coarse pass takes "
                f"{coarse}: expect an answer it cannot confirm (a larger --search-budget buys points to refine it)")

    # -- bookkeeping -----------------------------------------------------------------------------
    def _mine(self, done: Sequence[Outcome]) -> list[Outcome]:
        return [o for o in done if o.planned.batch_size == self.batch_size]

    def _plan(self, setting: float, mine: Sequence[Outcome]) -> PlannedPoint:
        rep = sum(1 for o in mine if o.planned.setting == setting)
        window = None if self._window is None or self._window == self.window_s else self._window
        return PlannedPoint(setting, self.batch_size, rep, window)

    def _grid_s(self, mine: Sequence[Outcome]) -> float:
        """A 1-repeat grid's device time, from this search's own points, as a bound from below so the
        budget never exceeds its share of what the grid would spend: the first point as measured (a grid
        starts from the same state), the others at the base window after the cheapest later warm-up (the
        grid's small steps settle at least as fast as the search's; the median over-estimated them)."""
        if not mine:
            return 0.0
        first = mine[0]
        later = [o.warmup_s for o in mine[1:]] or [first.warmup_s]
        return first.warmup_s + self.window_s + (self.grid_points - 1) * (self.window_s + min(later))

    def _excluded(self, mine: Sequence[Outcome]) -> dict[float, str]:
        return {o.planned.setting: o.flags or "invalid" for o in mine if not o.valid}

    # -- the source ----------------------------------------------------------------------------
    def next_point(self, done: Sequence[Outcome]) -> PlannedPoint | None:
        mine = self._mine(done)
        if self._stopped:
            return None
        if self._queue:
            return self._plan(self._queue.pop(0), mine)
        again = self._measure_again(mine)
        if again is not None and len(mine) < self.max_points and self._affordable(mine):
            return self._plan(again, mine)
        if len(mine) >= self.max_points:
            return self._stop("points")
        a = self._assessed = assess(mine, self)
        if a is None:
            return self._stop("points")
        # the noise of one window: from repeats once there are any, until then the model's residuals
        # (an upper bound: they also hold whatever the quadratic misses)
        self._noise = a.pure_sigma if a.pure_df >= 1 else a.sigma
        resolved = not self._unlocated(a, mine)
        # an answer that rests on one window is repeated before the search calls itself sure of it
        unconfirmed = sum(1 for o in mine if o.valid and o.planned.setting == a.chosen) == 1
        if a.p_within >= self.confidence and a.pure_df >= 1 and resolved and not a.misfit and not unconfirmed:
            return self._stop("margin")
        self._window = self._choose_window(mine, reserve=unconfirmed)
        if not self._affordable(mine):
            return self._stop("budget")
        if unconfirmed and self._left(mine) < 2 * (self._overhead(mine) + self.window_s) and a.peak_gain < 0.5:
            return self._plan(a.chosen, mine)  # room for one more point: confirm the answer, do not explore
        return self._plan(self._next_setting(a, mine), mine)

    def _left(self, mine: Sequence[Outcome]) -> float:
        """Device time the budget has left."""
        return self.budget_share * self._grid_s(mine) - sum(o.device_s for o in mine)

    def _choose_window(self, mine: Sequence[Outcome], reserve: bool = False) -> float:
        """The next window's length from the noise measured so far: long enough that one window's noise
        is half the margin (noise falls as 1/sqrt(length)), at most ``max_window_factor`` times the base,
        and no longer than the budget has left after the next warm-up (one long window then buys more
        certainty than two short ones, which pay two warm-ups)."""
        if self._noise is None:
            return self.window_s
        want = self.window_s * min(self.max_window_factor, max(1.0, (self._noise / (self.margin_pct / 200.0)) ** 2))
        left = self._left(mine) - self._overhead(mine)
        if reserve:  # keep room for a base-length repeat of an answer measured by one window
            left -= self._overhead(mine) + self.window_s
        return max(self.window_s, min(want, left))

    def _overhead(self, mine: Sequence[Outcome]) -> float:
        """Device time a point spends besides its window (warm-ups, other phases): the median so far."""
        return statistics.median(max(o.device_s - o.window_s, 0.0) for o in mine) if mine else 0.0

    def _measure_again(self, mine: Sequence[Outcome]) -> float | None:
        """A setting whose only window was flagged, where it matters: among the ``local`` settings nearest
        the best valid one (the model's), or any when none is valid. Flagged twice, or far from the
        best, a setting stays out of the decision."""
        good = {o.planned.setting for o in mine if o.valid}
        flagged = [o.planned.setting for o in mine if not o.valid]
        once = [k for k in dict.fromkeys(flagged) if k not in good and flagged.count(k) == 1]
        if not once:
            return None
        if not good:
            return once[0]
        means = {k: statistics.fmean(o.tokens_per_j for o in mine if o.valid and o.planned.setting == k) for k in good}
        best = max(means, key=means.__getitem__)
        near = sorted({*good, *once}, key=lambda k: (abs(k - best), -k))[: self.local]
        return next((k for k in once if k in near), None)

    def _affordable(self, mine: Sequence[Outcome]) -> bool:
        """Whether one more point (at the current window) fits the budget."""
        if not mine:
            return True
        return self._overhead(mine) + (self._window or self.window_s) <= self._left(mine)

    def _stop(self, why: str) -> None:
        self._stopped = why
        return None

    def _unlocated(self, a: _Assessment, mine: Sequence[Outcome]) -> list[float]:
        """The leads (``_Assessment.peaks``) with no tried setting within half the resolution: where the
        peak may still lie untried. The peak is located when there are none."""
        tried = {o.planned.setting for o in mine}
        leads = (self.snap(p) for p in a.peaks())
        return [p for p in leads if self.lo <= p <= self.hi and min(abs(p - k) for k in tried) > self.resolution / 2]

    def _next_setting(self, a: _Assessment, mine: Sequence[Outcome]) -> float:
        """The first lead not yet located (the fitted peak, then the others); else a repeat of the
        chosen setting or its strongest rival (the first repeat measures the noise); where the quadratic
        does not fit the curve (its residuals well above the repeats' noise), a golden-section point in
        the wider gap beside the chosen setting."""
        unlocated = self._unlocated(a, mine)
        if unlocated:
            return unlocated[0]
        tried = sorted({o.planned.setting for o in mine})
        i = tried.index(a.chosen)
        gaps = [(a.chosen - tried[i - 1], tried[i - 1]) if i > 0 else (0.0, a.chosen),
                (tried[i + 1] - a.chosen, tried[i + 1]) if i + 1 < len(tried) else (0.0, a.chosen)]
        width, neighbour = max(gaps)
        if a.misfit and width > self.resolution:
            golden = self.snap(a.chosen + (neighbour - a.chosen) * (1 - GOLDEN))
            if golden not in tried:
                return golden
        pair = [a.chosen] + ([a.rival] if a.rival is not None else [])
        weight = {s: sum(o.window_s for o in mine if o.valid and o.planned.setting == s) for s in pair}
        return min(pair, key=lambda s: (weight[s], -s))  # the less-measured one; the hotter one first

    def result(self, done: Sequence[Outcome]) -> SearchResult:
        """The chosen setting and how sure the search is of it."""
        mine = self._mine(done)
        a = self._assessed if self._stopped else assess(mine, self)
        if a is None or not any(o.valid for o in mine):
            best, p = None, 0.0
        else:
            best, p = a.chosen, a.p_within
        return SearchResult(self.batch_size, best, p, self.margin_pct, self._stopped or "incomplete", len(mine),
                            self._excluded(mine), sum(o.device_s for o in mine),
                            self.budget_share * self._grid_s(mine), self._grid_s(mine),
                            None if self._noise is None else 100 * self._noise, self.window_s,
                            max((o.planned.window_s or self.window_s for o in mine), default=self.window_s))


@dataclass(frozen=True)
class _Assessment:
    chosen: float
    rival: float | None
    peak: float
    p_within: float
    #: noise of one base-length window (relative): the model's (None: too few windows), and from repeats
    #: only with its degrees of freedom
    sigma: float | None
    pure_sigma: float
    pure_df: int

    #: the model's residual degrees of freedom
    df: int = 0
    #: probability that the model's peak beats the chosen setting by more than the margin
    peak_gain: float = 0.0
    #: other places the peak may lie: the other abscissa's peak (where its quadratic fits about as well)
    #: and the vertices of the three-point bracket around the best (``_bracket_vertices``)
    leads: tuple[float, ...] = ()

    def peaks(self) -> tuple[float, ...]:
        """The model's peak, then the other leads: the peak is located when a tried setting is near each."""
        return (self.peak, *self.leads)

    @property
    def misfit(self) -> bool:
        """The quadratic does not describe the curve here: its residuals exceed the repeats' noise by more
        than chance allows (a lack-of-fit F test at 5%, the repeats' noise floored at 0.1%)."""
        if self.pure_df < 1 or self.sigma is None or self.df < 1:
            return False
        from scipy import stats

        ratio = (self.sigma / max(self.pure_sigma, 0.001)) ** 2
        return ratio > stats.f.ppf(0.95, self.df, self.pure_df)


def _axes(best: float, s: MaxQSearch) -> tuple[Callable[[float], float], ...]:
    """The model's two candidate abscissas, centred on the best setting: the reciprocal of the setting
    (tokens/J rises steeply from the low end, where static power buys nothing, and falls gently towards
    the top, which a quadratic in 1/setting follows) and the setting itself (a peak symmetric in it)."""
    return (lambda k: s.lo / k - s.lo / best, lambda k: (k - best) / (s.hi - s.lo or 1.0))


def _bracket_vertices(means: dict[float, float], best: float, s: MaxQSearch) -> list[float]:
    """Where a parabola through the best setting and its nearest tried neighbours peaks, on each abscissa
    (the classic three-point step of a line search), where it rises above the best mean by more than the
    margin. The local model spans more settings than these three, which keeps one high window from
    carrying the answer, but on a curve much steeper on one side (tokens/J falling fast below Max-Q)
    those farther settings bend its peak onto a coarse setting: the bracket's vertices say where to look
    next, not what to answer. On a flat peak the three means hardly differ and the vertex promises no
    gain worth a point."""
    tried = sorted(means)
    i = tried.index(best)
    if not 0 < i < len(tried) - 1:
        return []
    ks = tried[i - 1: i + 2]
    out = []
    for axis in _axes(best, s):
        x = np.array([axis(k) for k in ks])
        a, b, c = np.polyfit(x, np.array([means[k] for k in ks]), 2)
        vertex = -b / (2 * a) if a < 0 else None
        if vertex is not None and c - b * b / (4 * a) > means[best] * (1 + s.margin_pct / 100):
            grid = np.arange(ks[0], ks[2] + 1e-9, s.resolution / 2)
            out.append(float(grid[int(np.argmin(np.abs(np.array([axis(k) for k in grid]) - vertex)))]))
    return out


def _wls(x: np.ndarray, y: np.ndarray, w: np.ndarray, n_par: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Weighted least squares of a polynomial: coefficients, their unscaled covariance, weighted RSS."""
    X = np.vander(x, n_par, increasing=True)
    xtw = X.T * w
    cov_unit = np.linalg.pinv(xtw @ X)
    beta = cov_unit @ xtw @ y
    resid = y - X @ beta
    return beta, cov_unit, float(resid @ (w * resid))


def assess(mine: Sequence[Outcome], s: MaxQSearch, draws: int = 4000) -> _Assessment | None:
    """Fit the local model and draw how far the chosen setting may be from the best (see MaxQSearch)."""
    valid = [o for o in mine if o.valid and o.tokens_per_j > 0]
    if not valid:
        return None
    base = s.window_s
    by: dict[float, list[tuple[float, float]]] = {}
    for o in valid:
        by.setdefault(o.planned.setting, []).append((o.tokens_per_j, (o.window_s or base) / base))
    means = {k: sum(y * w for y, w in v) / sum(w for _, w in v) for k, v in by.items()}
    scale = max(means.values())
    best = max(means, key=means.__getitem__)
    # noise from repeats: weighted deviations from each setting's mean, in base-window units
    ss = sum(w * (y / scale - means[k] / scale) ** 2 for k, v in by.items() for y, w in v)
    pure_df = sum(len(v) - 1 for v in by.values())
    pure_sigma = math.sqrt(ss / pure_df) if pure_df else math.inf
    near = sorted(by, key=lambda k: (abs(k - best), -k))[: max(s.local, 3)]
    span_lo, span_hi = min(near), max(near)
    local = [k for k in by if span_lo <= k <= span_hi]
    rows = [(k, y / scale, w) for k in local for y, w in by[k]]
    y = np.array([v for _, v, _ in rows])
    w = np.array([v for _, _, v in rows])
    n_par = 3 if len(local) >= 3 else len(local)
    df = len(rows) - n_par
    rng = np.random.default_rng(0)
    leads: list[float] = []
    cand = sorted(set(local) | {s.snap(v) for v in np.arange(span_lo, span_hi + 1e-9, s.resolution / 2)})
    if df >= 1:
        # the abscissa whose quadratic fits the windows better (ties: the reciprocal)
        fits = [(axis, *_wls(np.array([axis(k) for k, _, _ in rows]), y, w, n_par)) for axis in _axes(best, s)]
        use = 1 if fits[1][3] * (1.0 + 1e-9) < fits[0][3] else 0
        axis, beta, cov_unit, rss = fits[use]
        xc = np.vander(np.array([axis(k) for k in cand]), n_par, increasing=True)
        # the other abscissa's peak, where its quadratic fits about as well: the two disagree on where the
        # peak lies when the tried settings are far apart, and the truth lies between them (a part whose
        # curve is steeper below its peak than above it, or less so)
        o_axis, o_beta, _, o_rss = fits[1 - use]
        if o_rss <= 2.0 * rss + 1e-12:
            o_fit = np.vander(np.array([o_axis(k) for k in cand]), n_par, increasing=True) @ o_beta
            leads.append(cand[int(np.argmax(o_fit))])
        sigma2 = max(rss / df, 1e-6 ** 2)
        if pure_df:
            sigma2 = max(sigma2, pure_sigma ** 2)  # residuals of a smooth fit cannot be quieter than the repeats
        t_scale = np.sqrt(df / rng.chisquare(df, draws))
        chol = np.linalg.cholesky(sigma2 * cov_unit + 1e-12 * np.eye(n_par))
        betas = beta + (rng.standard_normal((draws, n_par)) @ chol.T) * t_scale[:, None]
        fit = xc @ beta
        curves = betas @ xc.T  # draws x candidates
    else:  # too few windows for a model: each tried setting stands alone, noise unknown
        fit = np.array([means.get(k, -math.inf) / scale for k in cand])
        curves = np.tile(fit, (draws, 1))
        sigma2, t_scale = math.inf, np.ones(draws)
    tried_local = [i for i, k in enumerate(cand) if k in by]
    # the answer: the tried setting the model rates best, not the best single mean (the model weighs each
    # window against its neighbours, so one window that read high does not carry its setting alone)
    i_chosen = max(tried_local, key=lambda i: fit[i])
    chosen = cand[i_chosen]
    peak = cand[int(np.argmax(fit))]
    f_chosen = curves[:, i_chosen]
    worst = np.max(curves, axis=1) - f_chosen
    rival_gain: dict[float, float] = {k: float(np.mean(curves[:, i] - f_chosen > s.margin_pct / 100 * f_chosen))
                                      for i, k in enumerate(cand) if k in by and k != chosen}
    sd = math.sqrt(sigma2) if math.isfinite(sigma2) else math.inf
    # every other tried setting also stands on its own mean, with the noise of its weight: away from the
    # model that is all there is, and near it a mean the model cannot follow (a quadratic over a sharp
    # peak) still counts against the answer, so the reported probability does not rest on the model alone
    for k in by:
        if k == chosen:
            continue
        wk = sum(v for _, v in by[k])
        own = means[k] / scale + sd / math.sqrt(wk) * rng.standard_normal(draws) * t_scale
        worst = np.maximum(worst, own - f_chosen)
        rival_gain[k] = max(rival_gain.get(k, 0.0), float(np.mean(own - f_chosen > s.margin_pct / 100 * f_chosen)))
    p_within = float(np.mean(worst <= s.margin_pct / 100 * f_chosen)) if math.isfinite(sd) else 0.0
    gain_at_peak = curves[:, int(np.argmax(fit))] - f_chosen
    peak_gain = float(np.mean(gain_at_peak > s.margin_pct / 100 * f_chosen)) if math.isfinite(sd) else 0.0
    rival = max(rival_gain, key=rival_gain.__getitem__) if rival_gain else None
    return _Assessment(chosen, rival, peak, p_within, sd if math.isfinite(sd) else None, pure_sigma, pure_df, df,
                       peak_gain, tuple(leads) + tuple(_bracket_vertices(means, best, s)))


@dataclass
class SearchPerBatch:
    """One Max-Q search per batch size, one after another (each batch's workload is prepared once)."""

    searches: list[MaxQSearch]

    def next_point(self, done: Sequence[Outcome]) -> PlannedPoint | None:
        for search in self.searches:
            p = search.next_point(done)
            if p is not None:
                return p
        return None

    def results(self, done: Sequence[Outcome]) -> list[SearchResult]:
        return [s.result(done) for s in self.searches]
