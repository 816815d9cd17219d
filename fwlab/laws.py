"""Laws of a loss curve under any learning-rate schedule, and their fits.

Both laws take a run as its per-update learning rate (lr / peak, `lr[s]` the rate of the update
that follows the evaluation at step s, as schedule.lr_array) and the steps it was evaluated at.

Multi-power law (Luo et al. 2025, "A Multi-Power Law for Loss Curve Prediction Across Learning
Rate Schedules", arXiv:2503.12811), `law="mpl"`:

    L(t) = L0 + A·S1(t)^-α - B·LD(t),   S1(t) = Σ_{τ<t} η_τ·w_τ
    LD(t) = Σ_{k<t} (η_(k-1) - η_k)+ · G(η_k^-γ · S_k(t)),   S_k(t) = Σ_{k<=τ<t} η_τ
    G(x) = 1 - (C·x + 1)^-β

  w_τ is what update τ's tokens are worth (1 on fresh data; fwlab.forecast passes the repetition
  discount). The loss-drop term LD is what an LR decrease buys, growing with the area under the LR
  since the decrease. η in units of the peak LR and S in steps: A, C are per schedule scale.

Annealing law (Tissue et al. 2024, "Scaling Law with Learning Rate Annealing"), `law="tissue"`:

    L(t) = L0 + A·S1(t)^-α - B·S2(t),  S2(t) = Σ_{k<t} (η_(k-1) - η_k)+ · (1 - λ^(t-k)) / (1 - λ)

  (the momentum form m_i = λ·m_(i-1) + drop_i summed, with its decay λ fitted).

The fit (`fit`) is variable projection: given the non-linear exponents (α, log C, β, γ for the
multi-power law; α, log λ for Tissue's) L0, A, B >= 0 are an exact weighted linear least-squares
solve, so the optimiser (scipy least_squares, trust-region reflective, inside BOUNDS) moves only
the exponents, from several starts (the laws are not convex). Optional Gaussian priors on the
exponents and on B enter as extra residuals scaled by the points' noise: a ridge toward their
means. They matter: from a trunk and one short cooldown branch the multi-power law's B and β trade
off (an unpenalised fit drifts to β -> 0 with a large B, and forecasts long cooldowns too low, on
curves made with the law itself as on published ones; tests/test_forecast.py).

LR drops are summed in blocks (at most MAX_BLOCKS per curve, never across an evaluation step) at
their drop-weighted mean step: exact for step drops; on a 45,000-step linear cooldown the
drop term moves by < 2e-4 (x B, under 1e-4 nats) against the per-step sum.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

MAX_BLOCKS = 400
ETA_MIN = 1e-3          # η_k^-γ is taken at max(η_k, ETA_MIN): a schedule that ends at 0 exactly
NONLIN = {"mpl": ("alpha", "log_c", "beta", "gamma"), "tissue": ("alpha", "log_lam")}
BOUNDS = {"mpl": ([0.05, -12.0, 0.05, 0.0], [1.5, 2.0, 3.0, 1.5]),
          "tissue": ([0.05, -12.0], [1.5, -1e-4])}
# starting grid: α and C dominate; β, γ start at the paper's typical 0.5-0.6
STARTS = {"mpl": [(a, lc, b, g) for a in (0.3, 0.6) for lc in (-7.0, -4.0, -1.0)
                  for b, g in ((0.5, 0.5), (1.0, 0.2))],
          "tissue": [(a, math.log(1 - 10.0 ** -e)) for a in (0.3, 0.6) for e in (2, 3, 4)]}


@dataclass
class Curve:
    """One run: lr/peak per update (length >= the last step), evaluation steps, losses (None for a
    curve only predicted), per-update token worth (None: all 1) and a weight per point."""
    lr: np.ndarray
    steps: np.ndarray
    loss: np.ndarray | None = None
    worth: np.ndarray | None = None
    weight: np.ndarray | None = None

    def __post_init__(self):
        self.lr = np.asarray(self.lr, dtype=float)
        self.steps = np.asarray(self.steps, dtype=int)
        if len(self.steps) and self.steps.max() > len(self.lr):
            raise ValueError(f"curve evaluated at step {self.steps.max()}, lr known for "
                             f"{len(self.lr)} updates")


@dataclass
class Features:
    """Everything the laws need of a set of curves' points, stacked (rows = points)."""
    s1: np.ndarray          # (n,)
    delta: np.ndarray       # (n, K) drop of block k if it lies before the point, else 0
    eta: np.ndarray         # (n, K) lr/peak after block k's drop (>= ETA_MIN)
    area: np.ndarray        # (n, K) S_k(t): lr area from block k to the point
    lag: np.ndarray         # (n, K) steps from block k to the point
    y: np.ndarray | None
    w: np.ndarray

    @property
    def drop_seen(self) -> bool:
        """Whether some point lies after an LR decrease (so B can be told from the data)."""
        return bool((self.delta.sum(axis=1) > 1e-6).any())


def _blocks(lr: np.ndarray, cuts: np.ndarray):
    """LR drops of `lr` summed per block: (start, end, delta, k_mean, eta_mean) arrays; blocks
    never straddle a step in `cuts`."""
    n = len(lr)
    drop = np.zeros(n)
    drop[1:] = np.maximum(lr[:-1] - lr[1:], 0.0)
    idx = np.flatnonzero(drop > 0)
    if not len(idx):
        return (np.zeros(0),) * 5
    lo, hi = idx[0], idx[-1] + 1
    width = max(1, int(math.ceil((hi - lo) / MAX_BLOCKS)))
    edges = np.unique(np.concatenate([np.arange(lo, hi, width), [hi],
                                      cuts[(cuts > lo) & (cuts < hi)]]))
    cs = np.concatenate([[0.0], np.cumsum(drop)])
    ck = np.concatenate([[0.0], np.cumsum(drop * np.arange(n))])
    ce = np.concatenate([[0.0], np.cumsum(drop * lr)])
    a, b = edges[:-1], edges[1:]
    d = cs[b] - cs[a]
    keep = d > 1e-12
    a, b, d = a[keep], b[keep], d[keep]
    return a, b, d, (ck[b] - ck[a]) / d, (ce[b] - ce[a]) / d


def features(curves, fit_mask=None) -> Features:
    """Stack the curves' points (all of them, or those with fit_mask[i] True per curve)."""
    parts = []
    for i, c in enumerate(curves):
        m = np.ones(len(c.steps), bool) if fit_mask is None else np.asarray(fit_mask[i], bool)
        t = c.steps[m]
        eff = c.lr if c.worth is None else c.lr * c.worth
        p1 = np.concatenate([[0.0], np.cumsum(eff)])
        p = np.concatenate([[0.0], np.cumsum(c.lr)])
        a, b, d, km, em = _blocks(c.lr[:max(int(t.max(initial=0)), 1)], t)
        before = b[None, :] <= t[:, None]
        pk = np.interp(km, np.arange(len(p)), p)
        area = np.where(before, p[t][:, None] - pk[None, :], 0.0)
        parts.append(dict(
            s1=np.maximum(p1[t], 1e-9), delta=np.where(before, d[None, :], 0.0),
            eta=np.broadcast_to(np.maximum(em, ETA_MIN)[None, :], before.shape),
            area=np.maximum(area, 0.0), lag=np.where(before, t[:, None] - km[None, :], 0.0),
            y=None if c.loss is None else np.asarray(c.loss, float)[m],
            w=np.ones(len(t)) if c.weight is None else np.asarray(c.weight, float)[m]))
    K = max((q["delta"].shape[1] for q in parts), default=0)

    def pad(q, k):
        out = np.zeros((len(q["s1"]), K))
        out[:, :q[k].shape[1]] = q[k]
        return out

    y = None if any(q["y"] is None for q in parts) else np.concatenate([q["y"] for q in parts])
    eta = np.ones((sum(len(q["s1"]) for q in parts), K))
    row = 0
    for q in parts:
        eta[row:row + len(q["s1"]), :q["eta"].shape[1]] = q["eta"]
        row += len(q["s1"])
    return Features(np.concatenate([q["s1"] for q in parts]),
                    np.vstack([pad(q, "delta") for q in parts]), eta,
                    np.vstack([pad(q, "area") for q in parts]),
                    np.vstack([pad(q, "lag") for q in parts]), y,
                    np.concatenate([q["w"] for q in parts]))


def drop_term(law: str, th, f: Features) -> np.ndarray:
    """LD(t) (multi-power) or S2(t) (Tissue) of every point, for the non-linear parameters th."""
    if law == "mpl":
        alpha, log_c, beta, gamma = th
        x = math.exp(log_c) * f.eta ** -gamma * f.area
        return (f.delta * (1.0 - (x + 1.0) ** -beta)).sum(axis=1)
    lam = math.exp(th[1])
    return (f.delta * (1.0 - lam ** f.lag) / (1.0 - lam)).sum(axis=1)


def design(law: str, th, f: Features) -> np.ndarray:
    return np.stack([np.ones(len(f.s1)), f.s1 ** -th[0], -drop_term(law, th, f)], axis=1)


@dataclass
class Prior:
    """Gaussian priors: mean and SD per non-linear parameter (NONLIN names), and on B."""
    mean: dict = field(default_factory=dict)
    sd: dict = field(default_factory=dict)

    def residuals(self, law: str, th) -> np.ndarray:
        return np.array([(v - self.mean[k]) / self.sd[k] for k, v in zip(NONLIN[law], th)
                         if k in self.mean and self.sd.get(k)])


@dataclass
class Fit:
    law: str
    th: tuple
    coef: np.ndarray        # L0, A, B
    sse: float
    sigma: float            # residual SD (weighted)
    n: int
    drop_seen: bool

    def predict(self, f: Features) -> np.ndarray:
        return design(self.law, self.th, f) @ self.coef

    def params(self) -> dict:
        out = dict(zip(NONLIN[self.law], (float(v) for v in self.th)))
        out.update(L0=float(self.coef[0]), A=float(self.coef[1]), B=float(self.coef[2]),
                   sigma=self.sigma, n=self.n)
        return out


def _linear(X, y, w, b_prior=None):
    """Weighted least squares for (L0, A, B) with A, B >= 0 (B by its prior row when given)."""
    sw = np.sqrt(w)
    Xw, yw = X * sw[:, None], y * sw
    if b_prior is not None:
        mu, sd, scale = b_prior
        Xw = np.vstack([Xw, [0.0, 0.0, scale / sd]])
        yw = np.concatenate([yw, [scale * mu / sd]])
    best = None
    for free in ((0, 1, 2), (0, 1), (0, 2), (0,)):
        c = np.zeros(3)
        c[list(free)] = np.linalg.lstsq(Xw[:, free], yw, rcond=None)[0]
        if c[1] < -1e-12 or c[2] < -1e-12:
            continue
        r = Xw @ c - yw
        sse = float(r @ r)
        if best is None or sse < best[0]:
            best = (sse, c)
    return best[1]


def fit(law: str, curves, prior: Prior | None = None, fit_mask=None, b_prior=None,
        starts=None, noise: float | None = None, max_nfev: int = 200) -> Fit:
    """Weighted least-squares fit of `law` to the curves' points, the best of several starts.
    prior: Gaussian priors on the exponents (a ridge toward their means). b_prior (mean, SD) of
    B: used when given; when no point has seen the LR come down and none is given, B = 0 (the
    data cannot tell it). `noise`: the point SD that scales the prior terms against the data's
    (default: the residual SD of a first unpenalised fit)."""
    from scipy.optimize import least_squares
    f = features(curves, fit_mask)
    y, w = f.y, f.w
    n = len(y)
    lo, hi = (np.array(b, float) for b in BOUNDS[law])
    seen = f.drop_seen
    bp = b_prior if b_prior is not None else (None if seen else (0.0, 1e-9))
    starts = [np.clip(np.asarray(s, float), lo + 1e-9, hi - 1e-9)
              for s in (starts or STARTS[law])]

    def solve(th, s):
        X = design(law, th, f)
        return X, _linear(X, y, w, None if bp is None else (bp[0], bp[1], s))

    def resid(th, s, pen=True):
        X, c = solve(th, s)
        r = np.sqrt(w) * (X @ c - y)
        if not pen:
            return r
        extra = [prior.residuals(law, th) * s] if prior is not None else []
        if bp is not None:
            extra.append([(c[2] - bp[0]) / bp[1] * s])
        return np.concatenate([r, *extra]) if extra else r

    if noise is None:
        r0 = min((least_squares(resid, s0, args=(1.0, False), bounds=(lo, hi), max_nfev=40)
                  for s0 in starts[:2]), key=lambda r: r.cost)
        noise = max(math.sqrt(2 * r0.cost / max(n - 6, 1)), 1e-4)
    best = None
    for th0 in starts:
        try:
            r = least_squares(resid, th0, args=(noise,), bounds=(lo, hi), max_nfev=max_nfev,
                              x_scale="jac")
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            continue
        if best is None or r.cost < best.cost:
            best = r
    th = tuple(float(v) for v in best.x)
    X, c = solve(th, noise)
    res = np.sqrt(w) * (X @ c - y)
    sse = float(res @ res)
    return Fit(law, th, c, sse, math.sqrt(sse / max(n - len(th) - 3, 1)), n, seen)


def predict(fit_: Fit, curves) -> np.ndarray:
    """The fitted law at every step of the curves (losses not needed)."""
    return fit_.predict(features(curves))
