"""Loss forecasts: what final validation loss each iteration budget will reach, with an interval,
from the user's own curves or, without any, from published fits. Hours per budget and the plan
that weighs the two are in fwlab/plan.py (`fwlab plan`); claims against both are checked in
fwlab/claims.py (`fwlab check-claims`).

The law of a loss curve (`fit_points`, `forecast_loss`): Tissue et al. 2024, "Scaling Law with
Learning Rate Annealing", written in tokens:

    L = E + A·S1^-α - C·S2

  S1  forward area: the sum over steps of (lr/peak) x (what that step's tokens are worth) x
      tokens_per_iter, over D_ref. At peak LR on fresh data S1 = D/D_ref and the law is the
      familiar E + A·D^-α; steps at a lower LR add less.
  S2  annealing area: the sum over steps of m_i, m_i = λ·m_(i-1) + (the fall of lr/peak at step
      i), x tokens_per_iter / D_ref: the loss a cooldown gains grows with how far and for how long
      the LR has come down. λ = 0.999, as in Tissue et al.
  Repeated data (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models"): a token is
      worth dD'/dD, 1 in the first epoch and exp(-R/R*) after R repetitions (R* = 15.4), so that at
      constant LR S1 = D'/D_ref with D' = U + U·R*·(1 - exp(-R/R*)) (`effective_tokens`).

Every evaluation of every run is a point, placed by its run's learning-rate schedule (config.json,
else the logged lr): one fit serves a WSD trunk and its cooldown branches, cosine runs, and a run
still going. E, A, C >= 0 are linear given α, solved exactly on a grid of α. Evaluations during
warm-up and before FIT_FROM (20%) of the latest evaluated iteration are left out (the first ones
are the fast initial descent, while the model learns token frequencies, which the law does not
describe), and spikes (over OUTLIER_Z robust SDs off a first fit) dropped.

A budget's forecast is the law at the S1 and S2 its schedule will have (the sources' schedule with
max_iters = the budget): for a WSD run the loss after its cooldown, not the constant-LR plateau.
C is known only once some evaluation was made after the LR came down (a finished cooldown branch,
a cosine run); before that the constant-LR curve minus an ASSUMED cooldown gain of
DEFAULT_DROP_FRAC of the loss is forecast, and the method says so.

Interval (LEVEL, 90%): residual bootstrap (the fitted curve plus resampled residuals, refitted),
each draw predicted with its fit's noise added, for λ in LAMBDAS and, when data repeats, R* in
(R*/2, R*, 4R*) (both come from other runs than yours): the envelope of those settings' own
percentile intervals. The forecast is the median of the draws at λ = 0.999, R* = 15.4.

Without curves the answer is a prior (fwlab/prior.py: the published L(N, D) fits, or the same
calibrated on published FineWeb-Edu runs), never this module's.

`loss_forecast_for` gives the loss per budget for the plan and the claims checker from curves (a
budget the source completed in the same setting is its measured value).
`backtest` checks the whole loss method on a finished sweep: forecast the longest budget's final
loss from what 30% of its compute can show, and compare with what it reached.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pandas as pd

from fwlab import schedule
from fwlab.config import TrainConfig
from fwlab.errors import FwlabError
from fwlab.runs import load_runs

R_STAR = 15.4                      # Muennighoff et al. 2023, R*_D
LAMBDA = 0.999                     # Tissue et al. 2024: decay of the annealing momentum per step
LAMBDAS = (0.99, 0.999)            # ... the interval spans these
PEAK_FRAC = 0.95                   # an eval counts as 'trunk' (constant-LR) when lr >= 0.95 x peak
LEVEL = 0.9                        # interval coverage
N_BOOT = 200
OUTLIER_Z = 5.0                    # evals this many robust SDs off a first fit are dropped
FIT_FROM = 0.2                     # the fit starts at this share of the latest evaluated iteration
DEFAULT_DROP_FRAC = (0.0, 0.03)    # share of the loss a cooldown removes, when none measured
SCHEDULE_KEYS = ("schedule", "lr", "min_lr_frac", "warmup_iters", "cooldown_frac", "cooldown_shape")
_ALPHAS = np.geomspace(0.01, 3.0, 64)


# --- repetition ----------------------------------------------------------------------------------
def effective_tokens(tokens, unique_tokens, r_star: float = R_STAR):
    """Muennighoff et al. 2023 effective data: D' = D up to one epoch, then U + U·R*·(1 - e^(-R/R*))
    with R = D/U - 1 repetitions. Works on scalars and arrays."""
    d = np.asarray(tokens, dtype=float)
    u = np.broadcast_to(np.asarray(unique_tokens, dtype=float), d.shape)
    reps = np.maximum(d / u - 1.0, 0.0)
    out = np.where(d <= u, d, u + u * r_star * (1.0 - np.exp(-reps / r_star)))
    return out if out.ndim else float(out)


def token_worth(tokens, unique_tokens, r_star: float = R_STAR):
    """dD'/dD: what one more token is worth after `tokens` (1 in the first epoch, then decaying)."""
    d = np.asarray(tokens, dtype=float)
    return np.where(d <= unique_tokens, 1.0, np.exp(-np.maximum(d / unique_tokens - 1, 0) / r_star))


# --- schedules and areas -------------------------------------------------------------------------
def lr_fracs(sched: dict, max_iters: int, n: int | None = None) -> np.ndarray:
    """lr / peak of steps 1..n (step i ends at iteration i) of a run of `max_iters` under `sched`
    (SCHEDULE_KEYS, as in config.json; fwlab/schedule.py)."""
    c = SimpleNamespace(**{"warmup_iters": None, **sched, "max_iters": int(max_iters)})
    return np.array([schedule.lr_at(i, c) / c.lr for i in range(int(n or max_iters))])


def areas(lr: np.ndarray, tokens_per_iter: float, unique_tokens: float, iters, d_ref: float,
          r_star: float = R_STAR, lam: float = LAMBDA):
    """(S1, S2) of the law (module docstring) after each iteration count in `iters`, for a run whose
    steps 1..len(lr) had these lr/peak fractions."""
    from scipy.signal import lfilter
    tok = np.arange(1, len(lr) + 1) * float(tokens_per_iter)
    s1 = np.cumsum(lr * token_worth(tok, unique_tokens, r_star)) * tokens_per_iter / d_ref
    fall = np.maximum(np.concatenate([[0.0], lr[:-1] - lr[1:]]), 0.0)  # warm-up rises count 0
    s2 = np.cumsum(lfilter([1.0], [1.0, -lam], fall)) * tokens_per_iter / d_ref
    i = np.asarray(iters, dtype=int) - 1
    return s1[i], s2[i]


# --- points from run directories ---------------------------------------------------------------
_POINT_COLS = ["run", "kind", "iter", "tokens", "val_loss", "val_loss_stderr", "unique_tokens",
               "tokens_per_iter", "preset", "max_iters", "schedule", "warmup", "lr", "sched"]


def _run_lr(cfg: dict, n: int, train: pd.DataFrame) -> tuple[np.ndarray, dict | None]:
    """lr/peak of the run's steps 1..n, and its schedule fields: from config.json when it has them,
    else from the logged train lines (each step at the latest logged lr)."""
    sched = {k: cfg.get(k) for k in SCHEDULE_KEYS}
    if all(sched[k] is not None for k in SCHEDULE_KEYS if k != "warmup_iters") and cfg.get(
            "max_iters"):
        try:
            return lr_fracs(sched, cfg["max_iters"], n), sched
        except (ValueError, TypeError, ZeroDivisionError):
            pass
    tr = train.dropna(subset=["lr"]).sort_values("iter") if len(train) else train
    if not len(tr):
        return np.ones(n), None  # nothing says otherwise: treat as at peak
    peak = float(cfg.get("lr") or tr["lr"].max())
    pos = np.searchsorted(tr["iter"].to_numpy(), np.arange(1, n + 1), side="left")
    return tr["lr"].to_numpy()[np.clip(pos, 0, len(tr) - 1)] / peak, None


def load_points(*sources, lab=None) -> pd.DataFrame:
    """One row per validation evaluation of every run in the sweep and/or run directories (a
    branch's own evaluations only, its parent's are the parent's rows): run, kind ('trunk' at peak
    LR, 'anneal' after the LR came down, 'final' the last of a run that completed an annealing
    schedule), iter, tokens, val_loss, val_loss_stderr, unique_tokens, tokens_per_iter, preset,
    max_iters, schedule, warmup (iterations), lr (the run's lr/peak per step, shared array) and
    sched (its schedule fields, or None). `lab`: the sources already loaded (runs.load_runs)."""
    lab = load_runs(*sources) if lab is None else lab
    rows = []
    for _, run in lab.runs.iterrows():
        cfg = lab.config(run["run"])
        unique, tpi = run.get("tokens_per_epoch"), run["tokens_per_iter"]
        if unique is None or not np.isfinite(unique) or unique <= 0 or pd.isna(tpi):
            continue  # no epoch or batch information: the law cannot place the points
        ev = lab.evals[(lab.evals["run"] == run["run"]) & lab.evals["own"]]
        ev = ev[(ev["iter"] > 0) & (ev["tokens"] > 0)].dropna(subset=["val_loss"]).sort_values("iter")
        annealed = schedule.is_annealed(run["schedule"], cfg.get("min_lr_frac", 0))
        final = (run["status"] == "completed" and annealed and pd.notna(run["final_val_loss"])
                 and pd.notna(run["iters"]))
        evs = [(int(e["iter"]), float(e["tokens"]), float(e["val_loss"]),
                float(e["val_loss_stderr"])) for _, e in ev.iterrows()]
        if final:  # the run's final value is final.json's, at its last iteration
            evs = [e for e in evs if e[0] != int(run["iters"])] + [(
                int(run["iters"]), float(run["tokens"]), float(run["final_val_loss"]),
                float(run["val_loss_stderr"]))]
        if not evs:
            continue
        tr = lab.train[lab.train["run"] == run["run"]]
        n = max(e[0] for e in evs)
        lr, sched = _run_lr(cfg, n, tr)
        warm = np.flatnonzero(lr >= 0.999 * lr.max())
        common = dict(run=run["run"], unique_tokens=float(unique), tokens_per_iter=int(tpi),
                      preset=run["preset"], schedule=run["schedule"],
                      max_iters=None if pd.isna(run["max_iters"]) else int(run["max_iters"]),
                      warmup=int(warm[0]) + 1 if len(warm) else 0, lr=lr, sched=sched)
        for it, tok, v, se in evs:
            at_peak = lr[common["warmup"]:it].min(initial=1.0) >= PEAK_FRAC
            kind = "final" if final and it == int(run["iters"]) else (
                "trunk" if at_peak else "anneal")
            rows.append(dict(common, kind=kind, iter=it, tokens=tok, val_loss=v,
                             val_loss_stderr=se))
    return pd.DataFrame(rows, columns=_POINT_COLS)


# --- the fit -------------------------------------------------------------------------------------
@dataclass
class LawFit:
    """One least-squares fit of L = E + A·S1^-α - C·S2 (module docstring)."""
    E: float
    A: float
    alpha: float
    C: float                # nan when no point has seen the LR come down (C unknown)
    lam: float
    r_star: float
    d_ref: float
    rmse: float = 0.0
    n: int = 0

    def loss(self, s1, s2=0.0):
        c = 0.0 if math.isnan(self.C) else self.C
        return self.E + self.A * np.power(s1, -self.alpha) - c * np.asarray(s2)

    def to_dict(self) -> dict:
        return jsonable(dict(self.__dict__))


def _solve(X: np.ndarray, y: np.ndarray):
    """Least squares with every coefficient >= 0, exactly, at each grid row of X (grid x points x
    columns): the optimum is the unconstrained solution on some set of free columns (the others
    held at 0), so take the best feasible one over all such sets. Returns (sse, coefficients)."""
    g, _, p = X.shape
    best_sse, best = np.full(g, np.inf), np.zeros((g, p))
    for mask in range(1, 1 << p):
        keep = [j for j in range(p) if mask >> j & 1]
        Xk = X[:, :, keep]
        A = np.einsum("gnp,gnq->gpq", Xk, Xk) + 1e-12 * np.eye(len(keep))
        c = np.zeros((g, p))
        c[:, keep] = np.linalg.solve(A, np.einsum("gnp,n->gp", Xk, y)[:, :, None])[:, :, 0]
        r = np.einsum("gnp,gp->gn", X, c) - y
        sse = np.where(np.all(c >= -1e-12, axis=1), np.einsum("gn,gn->g", r, r), np.inf)
        better = sse < best_sse
        best_sse[better], best[better] = sse[better], c[better]
    return best_sse, best


def _fit_arrays(s1, s2, y, lam, r_star, d_ref, anneal: bool) -> LawFit:
    """α on a log grid, refined on a finer one around the best; E, A (and C) exactly given α."""
    def design(alphas):
        cols = [np.ones((len(alphas), len(y))), np.power(s1[None, :], -alphas[:, None])]
        if anneal:
            cols.append(np.broadcast_to(-s2[None, :], cols[0].shape))
        return np.stack(cols, axis=2)

    sse, _ = _solve(design(_ALPHAS), y)
    i = int(np.argmin(sse))
    fine = np.geomspace(_ALPHAS[max(i - 1, 0)], _ALPHAS[min(i + 1, len(_ALPHAS) - 1)], 41)
    sse, coefs = _solve(design(fine), y)
    j = int(np.argmin(sse))
    c = coefs[j]
    rmse = math.sqrt(float(sse[j]) / max(len(y) - len(c) - 1, 1))
    return LawFit(float(c[0]), float(c[1]), float(fine[j]), float(c[2]) if anneal else math.nan,
                  lam, r_star, d_ref, rmse, len(y))


def _usable(points: pd.DataFrame) -> pd.DataFrame:
    """The points the law is fitted to: after warm-up and from FIT_FROM of the latest evaluated
    iteration on. The first evaluations are the fast initial descent (the model learning token
    frequencies), which no curve law of this kind describes."""
    if not len(points):
        return points
    keep = (points["iter"] > points["warmup"]) & (points["iter"] >= FIT_FROM * points["iter"].max())
    return points[keep].reset_index(drop=True)


def features(points: pd.DataFrame, d_ref: float, r_star: float = R_STAR, lam: float = LAMBDA):
    """(S1, S2) of every point (its run's schedule; rows of one run share their lr array)."""
    s1, s2 = np.zeros(len(points)), np.zeros(len(points))
    for _, idx in points.groupby("run").indices.items():
        r = points.iloc[idx[0]]
        s1[idx], s2[idx] = areas(r["lr"], r["tokens_per_iter"], r["unique_tokens"],
                                 points["iter"].to_numpy()[idx], d_ref, r_star, lam)
    return s1, s2


def _d_ref(points: pd.DataFrame, r_star: float = R_STAR) -> float:
    return float(effective_tokens(points["tokens"].to_numpy(float),
                                  points["unique_tokens"].to_numpy(float), r_star).max())


def fit_points(points: pd.DataFrame, r_star: float = R_STAR, lam: float = LAMBDA,
               d_ref: float | None = None) -> LawFit:
    """Least-squares fit of the law to the points (columns as `load_points`) after warm-up. C is
    fitted when some point was evaluated after the LR came down, else left unknown (nan)."""
    pts = _usable(points)
    d_ref = float(d_ref or _d_ref(pts if len(pts) else points, r_star))
    s1, s2 = features(pts, d_ref, r_star, lam)
    anneal = bool((s2 > 0).any())
    need = 5 if anneal else 4
    if len(pts) < need:
        raise FwlabError(f"too few validation points to fit a loss curve ({len(pts)} after "
                         f"warm-up, {need} needed); evaluate more often (--eval-interval) or let "
                         f"the run go further")
    return _fit_arrays(s1, s2, pts["val_loss"].to_numpy(float), lam, r_star, d_ref, anneal)


def schedule_of(points: pd.DataFrame) -> tuple[dict | None, int]:
    """The schedule fields and tokens/iter of the points' longest run: what budgets are planned
    with by default."""
    r = points.loc[points["max_iters"].fillna(points["iter"]).astype(float).idxmax()]
    return r["sched"], int(r["tokens_per_iter"])


def budget_lrs(iters, sched: dict | None) -> list[np.ndarray]:
    """lr/peak per step of runs of `iters` iterations under `sched` (None: constant LR)."""
    ns = [max(int(n), 1) for n in np.asarray(iters, dtype=int)]
    return [lr_fracs(sched, n) if sched else np.ones(n) for n in ns]


def budget_features(lrs, tokens_per_iter: int, unique_tokens: float, d_ref: float,
                    r_star: float = R_STAR, lam: float = LAMBDA):
    """(S1, S2) at the end of runs with these `budget_lrs`, and S1 of the same runs at constant
    LR."""
    out = np.zeros((3, len(lrs)))
    for k, lr in enumerate(lrs):
        n = len(lr)
        s1, s2 = areas(lr, tokens_per_iter, unique_tokens, [n], d_ref, r_star, lam)
        c1, _ = areas(np.ones(n), tokens_per_iter, unique_tokens, [n], d_ref, r_star, lam)
        out[:, k] = s1[0], s2[0], c1[0]
    return out


def _quantiles(draws: np.ndarray, level: float):
    a = (1 - level) / 2
    return np.quantile(draws, [0.5, a, 1 - a], axis=0)


def _despike(pts: pd.DataFrame, r_star: float) -> tuple[pd.DataFrame, int]:
    """Drop evaluations over OUTLIER_Z robust SDs (1.4826 x MAD) off a first fit (which raises
    the "too few points" error)."""
    fit = fit_points(pts, r_star)
    s1, s2 = features(pts, fit.d_ref, r_star)
    res = pts["val_loss"].to_numpy(float) - fit.loss(s1, s2)
    mad = 1.4826 * np.median(np.abs(res - np.median(res)))
    keep = np.abs(res - np.median(res)) <= OUTLIER_Z * max(mad, 1e-6)
    return pts[keep].reset_index(drop=True), int((~keep).sum())


def forecast_loss(points: pd.DataFrame, tokens, unique_tokens, n_boot: int = N_BOOT,
                  level: float = LEVEL, seed: int = 0, r_star: float = R_STAR,
                  sched: dict | None = None, tokens_per_iter: int | None = None,
                  progress: bool = False) -> dict:
    """Final validation loss of runs of `tokens` tokens (array) on `unique_tokens` unique ones, from
    the points (see the module docstring). The runs follow `sched` at `tokens_per_iter` (default:
    those of the points' longest run). Returns dict(val_loss, low, high: arrays; method: str;
    fits: the point fit per setting; drop_assumed: bool)."""
    tokens = np.atleast_1d(np.asarray(tokens, dtype=float))
    pts, n_spikes = _despike(_usable(points), r_star)
    if sched is None and tokens_per_iter is None:
        sched, tokens_per_iter = schedule_of(points)
    tokens_per_iter = int(tokens_per_iter or schedule_of(points)[1])
    lrs = budget_lrs(np.maximum(np.round(tokens / tokens_per_iter), 1), sched)
    y = pts["val_loss"].to_numpy(float)
    d_ref = _d_ref(pts, r_star)
    annealed_target = bool(sched) and schedule.is_annealed(sched.get("schedule"),
                                                           sched.get("min_lr_frac"))
    repeats = bool((tokens > np.asarray(unique_tokens, dtype=float)).any()
                   or (pts["tokens"] > pts["unique_tokens"]).any())
    r_stars = (r_star / 2, r_star, 4 * r_star) if repeats else (r_star,)
    anneal_known = bool((features(pts, d_ref, r_star)[1] > 0).any())
    rng = np.random.default_rng(seed)
    draws, fits = {}, {}
    from tqdm.auto import tqdm
    settings = [(lam, rs) for lam in (LAMBDAS if anneal_known else (LAMBDA,)) for rs in r_stars]
    for lam, rs in tqdm(settings, desc="bootstrap", disable=not progress, leave=False):
        s1, s2 = features(pts, d_ref, rs, lam)
        base = _fit_arrays(s1, s2, y, lam, rs, d_ref, anneal_known)
        fits[f"lambda={lam:g}, R*={rs:g}"] = base.to_dict()
        t1, t2, c1 = budget_features(lrs, tokens_per_iter, unique_tokens, d_ref, rs, lam)
        res = y - base.loss(s1, s2)
        inflate = math.sqrt(len(y) / max(len(y) - (4 if anneal_known else 3), 1))
        out = []
        for _ in range(n_boot):
            yb = base.loss(s1, s2) + rng.choice(res, len(y)) * inflate
            f = _fit_arrays(s1, s2, yb, lam, rs, d_ref, anneal_known)
            if anneal_known or not annealed_target:
                pred = f.loss(t1, t2)
            else:  # the cooldown's worth is unknown: the constant-LR curve minus an assumed gain
                pred = f.loss(c1) * (1 - rng.uniform(*DEFAULT_DROP_FRAC))
            out.append(pred + rng.normal(0, f.rmse, pred.shape))
        draws[(lam, rs)] = np.array(out)  # (λ only matters once the LR has come down)
    mid = np.median(draws[(LAMBDA, r_star)], axis=0)
    qs = [_quantiles(d, level) for d in draws.values()]
    lo, hi = np.min([q[1] for q in qs], axis=0), np.max([q[2] for q in qs], axis=0)
    runs = pts["run"].nunique()
    method = (f"annealing-aware law (Tissue et al. 2024) fitted to {len(pts)} evals of {runs} "
              f"run(s)")
    if n_spikes:
        method += f" ({n_spikes} spike(s) dropped)"
    if not anneal_known and annealed_target:
        method += (f"; no evaluation after the LR came down, so the cooldown is ASSUMED to remove "
                   f"{DEFAULT_DROP_FRAC[0]:.0%}-{DEFAULT_DROP_FRAC[1]:.0%} of the loss: finish "
                   f"one short cooldown branch to measure it")
    else:
        method += f"; λ={LAMBDA:g} (interval: {LAMBDAS[0]:g}-{LAMBDAS[-1]:g})"
    method += (f"; Muennighoff R*={r_star:g}" + (f" (interval: {r_stars[0]:g}-{r_stars[-1]:g})"
                                                  if repeats else "")
               + f"; {level:.0%} residual-bootstrap interval "
                 f"({sum(len(d) for d in draws.values())} draws)")
    return dict(val_loss=mid, low=lo, high=hi, method=method, fits=fits,
                drop_assumed=not anneal_known and annealed_target)


# --- the preset's model (for the priors and the plan's FLOPs) ----------------------------------
def preset_model(preset: str):
    """The preset's GPT on the meta device: its sizes without allocating or initialising weights."""
    import torch  # here: torch costs ~1 s to import, and only the prior and the plan's FLOPs need it

    from fwlab.model import GPT
    with torch.device("meta"):
        return GPT(TrainConfig(preset=preset).model_config())


def preset_params(preset: str) -> int:
    return int(preset_model(preset).num_params())


# --- loss per budget (for the plan and the claims checker) ---------------------------------------
def source_settings(points: pd.DataFrame) -> dict:
    return dict(presets=sorted(set(points["preset"].dropna())),
                tokens_per_iter=sorted({int(v) for v in points["tokens_per_iter"].dropna()}),
                unique_tokens=float(points["unique_tokens"].median()) if len(points) else None)


def loss_forecast_for(budgets, tokens_per_iter: int, data_tokens: float, preset: str,
                      sources=(), points: pd.DataFrame | None = None, n_boot: int = N_BOOT,
                      level: float = LEVEL, progress: bool = False) -> dict:
    """Predicted final val loss per budget from the curves in `sources` (or `points`); without
    curves, fwlab.prior.prior_for. dict(val_loss, low, high, basis 'curves', row_basis, method)."""
    tokens = np.asarray(budgets, dtype=float) * tokens_per_iter
    if points is None and sources:
        points = load_points(*sources)
    if points is not None:
        if not len(points):
            raise FwlabError(f"{', '.join(map(str, sources))}: no validation evaluations to fit")
        st = source_settings(points)
        if st["presets"] and st["presets"] != [preset]:
            raise FwlabError(f"the curves in {', '.join(map(str, sources))} are of preset "
                             f"{'/'.join(st['presets'])}, the plan is for {preset}: pass --preset "
                             f"{st['presets'][0]}, or drop --from for the published prior")
        sched, _ = schedule_of(points)  # the budgets follow the sources' schedule
        out = forecast_loss(points, tokens, data_tokens, n_boot=n_boot, level=level,
                            sched=sched, tokens_per_iter=tokens_per_iter, progress=progress)
        out["basis"] = "curves"
        out["row_basis"] = ["forecast"] * len(tokens)
        if st["tokens_per_iter"] and st["tokens_per_iter"] != [int(tokens_per_iter)]:
            out["method"] += (f"; NOTE the curves used {st['tokens_per_iter']} tokens/iter, the "
                              f"plan {int(tokens_per_iter)} (the fit is in tokens)")
            return out
        # a budget the source has run to completion in this very setting: its measured value
        # (the law's own value kept: comparisons between budgets want one model on both sides)
        out["forecast_val_loss"] = np.array(out["val_loss"], dtype=float)
        fin = points[(points["kind"] == "final")
                     & np.isclose(points["unique_tokens"], data_tokens, rtol=1e-3)]
        z = normal_z(level)
        for i, d in enumerate(tokens):
            m = fin[fin["tokens"] == d]
            if len(m):
                v, se = float(m["val_loss"].iloc[-1]), float(m["val_loss_stderr"].iloc[-1] or 0)
                out["val_loss"][i], out["low"][i], out["high"][i] = v, v - z * se, v + z * se
                out["row_basis"][i] = f"measured ({m['run'].iloc[-1]})"
        return out
    raise FwlabError("loss_forecast_for: no curves given; without curves the answer is a prior "
                     "(fwlab.prior.prior_for)")


def normal_z(level: float) -> float:
    """Two-sided normal quantile: a measured value's interval is ± z stderr at this level."""
    from scipy.stats import norm
    return float(norm.ppf(0.5 + level / 2))


def jsonable(o):
    """numpy scalars to Python ones, non-finite floats to None: what json.dumps writes validly."""
    if isinstance(o, dict):
        return {k: jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


# --- backtest ------------------------------------------------------------------------------------
TARGET_ABS_ERROR = 0.03


def backtest(sweep_dir=None, frac: float = 0.3, n_boot: int = N_BOOT, level: float = LEVEL,
             r_star: float = R_STAR, seed: int = 0, lab=None) -> dict:
    """Forecast the final val loss of the sweep's longest budget from what `frac` of its compute
    can show, and compare with the value it reached.

    The compute is counted in iterations, frac x the budget's: the other runs that fit in it, the
    shortest first (a WSD branch needs the trunk at its branch point; an independent run its whole
    length), and the rest goes to the longest budget's own run (with its trunk). In a WSD sweep at
    the reference ratios, that is the 0.85-epoch branch and the trunk up to its branch point plus
    what is left. Only those runs' evaluations (the longest run's up to `cutoff_iter`) are used.
    `lab`: the sweep already loaded (runs.load_runs). Returns a dict with forecast, low, high,
    actual, error (forecast - actual), inside, passed (|error| <= TARGET_ABS_ERROR and inside),
    compute_frac and what was used."""
    if not 0 < frac < 1:
        raise FwlabError(f"frac={frac}: must be in (0, 1)")
    if lab is None and sweep_dir is None:
        raise FwlabError("backtest: give a sweep directory (or a loaded Lab)")
    lab = load_runs(sweep_dir) if lab is None else lab
    sweep_dir = lab.describe_sources() if sweep_dir is None else sweep_dir
    pts = load_points(lab=lab)
    fin = pts[pts["kind"] == "final"]
    if not len(fin):
        raise FwlabError(f"{sweep_dir}: no completed (annealed) run to backtest against")
    target = fin.loc[fin["tokens"].idxmax()]
    budget = frac * float(target["iter"])
    runs = lab.runs.set_index("run")
    lineage = {target["run"]}
    par = runs.loc[target["run"]].get("parent_run")
    if isinstance(par, str) and par:
        lineage.add(par)
    others = []
    for name, r in runs.iterrows():
        if name in lineage or pd.isna(r["iters_computed"]) or name not in set(pts["run"]):
            continue
        start = int(r["branch_iter"]) if r.get("parent_run") in lineage and pd.notna(
            r["branch_iter"]) else 0
        others.append((start + int(r["iters_computed"]), start, int(r["iters_computed"]), name))
    used, spent, reach = [], 0, 0
    for _, start, length, name in sorted(others):
        if max(reach, start) + spent + length <= budget:
            used.append(name)
            spent, reach = spent + length, max(reach, start)
    cutoff = int(budget - spent)
    known = pts[(pts["run"].isin(used))
                | (pts["run"].isin(lineage) & (pts["iter"] <= cutoff))]
    T, U = float(target["tokens"]), float(target["unique_tokens"])
    res = forecast_loss(known, T, U, n_boot=n_boot, level=level, seed=seed, r_star=r_star,
                        sched=target["sched"], tokens_per_iter=int(target["tokens_per_iter"]))
    f, lo, hi = float(res["val_loss"][0]), float(res["low"][0]), float(res["high"][0])
    actual = float(target["val_loss"])
    inside = lo <= actual <= hi
    return jsonable(dict(
        sweep=str(sweep_dir), run=target["run"], budget_iters=int(target["iter"]), tokens=T,
        epochs=T / U, frac=frac, cutoff_iter=cutoff, compute_frac=(cutoff + spent) / float(
            target["iter"]), runs_used=used,
        n_points=int(len(known)), actual=actual, forecast=f, low=lo, high=hi, error=f - actual,
        inside=bool(inside), passed=bool(inside and abs(f - actual) <= TARGET_ABS_ERROR),
        method=res["method"]))


def seed_floor(sweep_dirs) -> dict:
    """How well the longest budget's final loss can be told at all, across sweeps of one setting
    that differ only in their training seed: the spread of that loss, and the error of a 'seed
    oracle' that reads, per sweep, the shortest budget's final loss (inside a backtest's 30%) and
    adds the mean gain from it to the longest budget that the *other* seeds reached. It knows those
    seeds' outcomes, which no forecast does, so its errors are a floor to judge `backtest`'s by.
    Returns dict(n, budgets, final_sd, rows: [dict(sweep, anchor, actual, oracle, error)])."""
    rows, budgets = [], None
    for s in sweep_dirs:
        fin = load_points(s)
        fin = fin[fin["kind"] == "final"].sort_values("tokens")
        if len(fin) < 2:
            raise FwlabError(f"{s}: a seed floor needs two completed (annealed) budgets, found "
                             f"{len(fin)}")
        b = (int(fin["iter"].iloc[0]), int(fin["iter"].iloc[-1]))
        if budgets is not None and b != budgets:
            raise FwlabError(f"{s}: budgets {b[0]}..{b[1]} iterations, the first sweep's "
                             f"{budgets[0]}..{budgets[1]}: a seed floor compares one setting")
        budgets = b
        rows.append(dict(sweep=str(s), anchor=float(fin["val_loss"].iloc[0]),
                         actual=float(fin["val_loss"].iloc[-1])))
    if len(rows) < 3:
        raise FwlabError(f"a seed floor needs sweeps of at least 3 seeds, got {len(rows)}")
    gain = np.array([r["actual"] - r["anchor"] for r in rows])
    for k, r in enumerate(rows):
        r["oracle"] = r["anchor"] + float(np.delete(gain, k).mean())
        r["error"] = r["oracle"] - r["actual"]
    return jsonable(dict(n=len(rows), budgets=list(budgets),
                         final_sd=float(np.std([r["actual"] for r in rows], ddof=1)), rows=rows))
