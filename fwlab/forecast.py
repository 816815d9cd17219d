"""Forecasts: what each iteration budget will cost in hours on this machine and what final
validation loss it will reach, with an interval, and a plan that weighs the two (`fwlab plan`).
Claims against these numbers are checked in fwlab/claims.py (`fwlab check-claims`).

Throughput (`measure_throughput`). A short timed run of the trainer's own step
(fwlab.train.train_step: forward/backward over micro-batches, clip, AdamW) at the micro-batch,
device, autocast dtype and torch.compile decision the trainer would pick (fwlab.hardware), on
random tokens or a prepared data directory, after untimed warm-up steps (which absorb
compilation). Whole iterations are timed when they are short; when one iteration is long (524,288
tokens of the 40m preset take ~15 minutes on a 2-core CPU) a shortened one of `iters`
micro-steps is timed and scaled, the optimizer step timed on its own: seconds/iteration =
accum · t_micro + t_opt, exact in expectation. MFU is reported against the device's dense bf16
peak (fwlab.hardware) where that is known.

Loss from the user's own curves (`fit_points`, `forecast_loss`). Schedules matter: a validation
loss measured while the learning rate is still high lies on a different curve from the loss a run
reaches once its learning rate has been annealed. So two kinds of points are taken from the runs:
  trunk  evaluations made at peak learning rate (lr >= PEAK_FRAC x peak, after warm-up): the stable
         phase of WSD runs, constant-LR runs, the first ~15% of cosine runs. A branch contributes
         only its own evaluations (after its branch iteration), not its parent's.
  final  the final validation loss of every run that completed an annealing schedule (WSD
         cooldown or cosine decay); constant-LR and early-stopped runs give none.
Both are modelled in effective tokens D' (Muennighoff et al. 2023, "Scaling Data-Constrained
Language Models"): with U unique training tokens and R = D/U - 1 repetitions,
D' = U + U·R*·(1 - exp(-R/R*)), R* = 15.4 (their fit; D' = D up to one epoch, and repeated tokens
are worth less and less after).
With x = D'/D_ref:
  trunk  L(x) = E + B·x^-β                        (the constant-LR curve, not what a run ends at)
  final  ratio variant:   L(x) = E + (1-r)·B·x^-β  (annealing removes a fixed share r of the
                                                     reducible loss)
         offset variant:  L(x) = E + B·x^-β - δ    (annealing removes a fixed δ nats)
fitted jointly by least squares (β on a log grid refined by a finer one; E >= 0, B >= 0, and r
or δ, are linear given β, solved exactly with their bounds). The completed runs calibrate what a
cooldown is worth; the trunk gives the shape in tokens. Before fitting (`select_trunk`), spikes
are dropped and the initial descent is cut off: the first evaluations of a run (while it learns
token frequencies) follow no power law, so the fit starts where a forecast of the last 30% of the
trunk from the rest is about as good as it gets (a choice made on the data at hand only).
Which transfer holds is not known from one completed run, so both are kept. Interval (LEVEL, 90%):
bootstrap — trunk and final points resampled with replacement (separately), both variants
refitted, each draw predicted with its fit's residual noise added; the forecast is the median of
the draws, the interval the envelope of the two variants' own percentile intervals — and, when
repeated data is involved, of R*/2 and 4·R* as well (R* comes from other data). Without any
completed run the cooldown's worth is unknown: the trunk curve minus a drop drawn from
DEFAULT_DROP_FRAC (0-3% of the loss; cooldowns of LLM-scale runs gain a few percent, CPU-scale
ones far less) is forecast, and the method says so.

Without curves: published parametric fits L(N, D) = E + A/N^α + B/D^β of Hoffmann et al. 2022 and
the Besiroglu et al. 2024 replication, evaluated at the preset's parameter count and D' — an
INDICATIVE PRIOR ONLY (other data, other tokenizer). Its interval spans the two fits, from the
optimistic end (repeated tokens as good as fresh, D' = D) to the pessimistic one (D' as above).

The plan (`plan`) puts hours (measured tokens/s, or a named GPU's peak FLOPs x an MFU range) and the
loss forecast side by side per budget, with the gain per extra hour over the next-smaller budget,
and recommends the largest budget whose extra hour still buys more than `min_gain_per_hour` nats
(DEFAULT_MIN_GAIN_PER_HOUR, 0.01). `plateau` says whether a running run's validation loss is still
falling (slope over its last evaluations against that slope's standard error).
`backtest` checks the whole loss method on a finished sweep: forecast the longest budget's final
loss from the evaluations of its first 30% only, and compare with what it reached.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fwlab.errors import FwlabError

R_STAR = 15.4                      # Muennighoff et al. 2023, R*_D
PEAK_FRAC = 0.95                   # an eval counts as constant-LR when lr >= 0.95 x peak
LEVEL = 0.9                        # interval coverage
N_BOOT = 200
OUTLIER_Z = 5.0                    # trunk evals this many robust SDs off a first fit are dropped
START_FRACS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)  # candidate fit starts (x the last trunk tokens)
HOLDOUT = 0.7                      # ... each scored on forecasting the trunk evals beyond 0.7 x
DEFAULT_DROP_FRAC = (0.0, 0.03)    # share of the loss a cooldown removes, when none measured
DEFAULT_MIN_GAIN_PER_HOUR = 0.01   # nats per extra hour below which a bigger budget is not worth it
DEFAULT_MFU_RANGE = (0.30, 0.50)   # assumed for a GPU this machine cannot measure
PRIORS = {
    "hoffmann2022": dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28,
                         label="Hoffmann et al. 2022 (Chinchilla, approach 3)"),
    "besiroglu2024": dict(E=1.82, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658,
                          label="Besiroglu et al. 2024 (Chinchilla replication)"),
}
PRIOR_NOTE = ("indicative prior only: published fits on other data and another tokenizer "
              "(MassiveText, SentencePiece), not on your curves")
_BETAS = np.geomspace(0.02, 3.0, 64)


# --- repetition ----------------------------------------------------------------------------------
def effective_tokens(tokens, unique_tokens, r_star: float = R_STAR):
    """Muennighoff et al. 2023 effective data: D' = D up to one epoch, then U + U·R*·(1 - e^(-R/R*))
    with R = D/U - 1 repetitions. Works on scalars and arrays."""
    d = np.asarray(tokens, dtype=float)
    u = np.broadcast_to(np.asarray(unique_tokens, dtype=float), d.shape)
    reps = np.maximum(d / u - 1.0, 0.0)
    out = np.where(d <= u, d, u + u * r_star * (1.0 - np.exp(-reps / r_star)))
    return out if out.ndim else float(out)


# --- points from run directories ---------------------------------------------------------------
_POINT_COLS = ["run", "kind", "iter", "tokens", "val_loss", "val_loss_stderr", "unique_tokens",
               "tokens_per_iter", "preset", "max_iters", "schedule"]


class _Cfg:
    """config.json as attributes (fwlab.schedule.lr_at reads a handful of fields)."""

    def __init__(self, d: dict):
        self.__dict__.update(d)


def _lr_frac(cfg: dict, iters: np.ndarray, train: pd.DataFrame) -> np.ndarray:
    """Learning rate / peak for the step that ended at each iteration: from the schedule when the
    config has its fields, else from the logged train points (nearest earlier one)."""
    from fwlab import schedule
    need = ("lr", "min_lr_frac", "max_iters", "schedule", "cooldown_frac", "cooldown_shape")
    if all(cfg.get(k) is not None for k in need):
        c = _Cfg({"warmup_iters": None, **cfg})
        try:
            return np.array([schedule.lr_at(max(int(i) - 1, 0), c) / c.lr for i in iters])
        except (ValueError, TypeError, ZeroDivisionError):
            pass
    tr = train.dropna(subset=["lr"]).sort_values("iter") if len(train) else train
    if not len(tr):
        return np.ones(len(iters))  # nothing says otherwise: treat as at peak
    peak = float(cfg.get("lr") or tr["lr"].max())
    pos = np.searchsorted(tr["iter"].to_numpy(), iters, side="right") - 1
    return tr["lr"].to_numpy()[np.clip(pos, 0, None)] / peak


def load_points(*sources) -> pd.DataFrame:
    """Trunk and final points (see the module docstring) from sweep and/or run directories, one row
    each: run, kind ('trunk'|'final'), iter, tokens, val_loss, val_loss_stderr, unique_tokens,
    tokens_per_iter, preset, max_iters, schedule."""
    from fwlab.analysis import load_runs
    lab = load_runs(*sources)
    rows = []
    for _, run in lab.runs.iterrows():
        cfg_path = Path(run["path"]) / "config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        ev = lab.evals[(lab.evals["run"] == run["run"]) & lab.evals["own"]].sort_values("iter")
        tr = lab.train[(lab.train["run"] == run["run"]) & lab.train["own"]]
        unique = run.get("tokens_per_epoch")
        if unique is None or not np.isfinite(unique) or unique <= 0:
            continue  # no epoch information: effective tokens cannot be computed
        tpi = run["tokens_per_iter"]
        common = dict(run=run["run"], unique_tokens=float(unique),
                      tokens_per_iter=None if pd.isna(tpi) else int(tpi), preset=run["preset"],
                      max_iters=None if pd.isna(run["max_iters"]) else int(run["max_iters"]),
                      schedule=run["schedule"])
        ev = ev[ev["iter"] > 0].dropna(subset=["val_loss"])
        if len(ev):
            frac = _lr_frac(cfg, ev["iter"].to_numpy(), tr)
            for (_, e), f in zip(ev.iterrows(), frac):
                if f >= PEAK_FRAC:
                    rows.append(dict(common, kind="trunk", iter=int(e["iter"]),
                                     tokens=float(e["tokens"]), val_loss=float(e["val_loss"]),
                                     val_loss_stderr=float(e["val_loss_stderr"])))
        annealed = run["schedule"] in ("cosine", "wsd") and float(cfg.get("min_lr_frac", 0)) < 0.5
        if (run["status"] == "completed" and annealed and pd.notna(run["final_val_loss"])
                and pd.notna(run["tokens"])):
            rows.append(dict(common, kind="final", iter=int(run["iters"]),
                             tokens=float(run["tokens"]), val_loss=float(run["final_val_loss"]),
                             val_loss_stderr=float(run["val_loss_stderr"])))
    return pd.DataFrame(rows, columns=_POINT_COLS)


# --- the fit -------------------------------------------------------------------------------------
@dataclass
class CurveFit:
    """One least-squares fit of the trunk/final model (module docstring) in x = D'/d_ref."""
    variant: str            # 'ratio' | 'offset' | 'trunk' (no final points) | 'final' (no trunk)
    E: float
    B: float                # trunk amplitude (for 'final': the final curve's)
    beta: float
    anneal: float           # ratio: r; offset: δ; else nan
    d_ref: float
    r_star: float = R_STAR
    rmse: float = 0.0
    n_trunk: int = 0
    n_final: int = 0

    def _x(self, tokens, unique_tokens):
        return effective_tokens(tokens, unique_tokens, self.r_star) / self.d_ref

    def trunk(self, tokens, unique_tokens):
        """Constant-LR (plateau) loss at `tokens`."""
        return self.E + self.B * np.power(self._x(tokens, unique_tokens), -self.beta)

    def final(self, tokens, unique_tokens, drop_frac: float | None = None):
        """Loss after the learning rate is annealed, for a run of `tokens` tokens."""
        red = self.B * np.power(self._x(tokens, unique_tokens), -self.beta)
        if self.variant == "ratio":
            return self.E + (1 - self.anneal) * red
        if self.variant == "offset":
            return self.E + red - self.anneal
        if self.variant == "final":
            return self.E + red
        return (self.E + red) * (1 - (drop_frac or 0.0))  # trunk only: an assumed drop

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in self.__dict__.items()}


def _design(betas, xt, xf, variant):
    """Columns of the linear part for each β (shape: betas x points x columns; trunk rows first)
    and which columns are bounded below by 0."""
    b = np.asarray(betas, dtype=float)[:, None]
    pt, pf = np.power(xt[None, :], -b), np.power(xf[None, :], -b)
    nt, nf, g = len(xt), len(xf), len(b)
    if variant == "ratio":        # (E, B, B_final = (1-r)·B)
        X = np.zeros((g, nt + nf, 3))
        X[:, :, 0] = 1
        X[:, :nt, 1], X[:, nt:, 2] = pt, pf
        return X, (True, True, True)
    if variant == "offset":       # (E, B, δ)
        X = np.ones((g, nt + nf, 3))
        X[:, :, 1] = np.concatenate([pt, pf], axis=1)
        X[:, :nt, 2], X[:, nt:, 2] = 0.0, -1.0
        return X, (True, True, False)
    X = np.ones((g, nt + nf, 2))  # 'trunk' or 'final': (E, B)
    X[:, :, 1] = np.concatenate([pt, pf], axis=1)
    return X, (True, True)


def _solve(betas, xt, xf, y, variant):
    """Bounded linear least squares at each β, exactly: the optimum is the unconstrained solution
    on some set of free columns (the others held at their bound 0), so take the best feasible one
    over all such sets. Returns (sse per β, coefficients per β)."""
    X, bounded = _design(betas, xt, xf, variant)
    g, _, p = X.shape
    best_sse, best = np.full(g, np.inf), np.zeros((g, p))
    lower = np.array(bounded)
    free = [j for j in range(p) if not bounded[j]]
    for mask in range(1 << p):
        if any(mask >> j & 1 for j in free):
            continue  # unbounded columns are always free
        keep = free + [j for j in range(p) if bounded[j] and mask >> j & 1]
        c = np.zeros((g, p))
        if keep:
            Xk = X[:, :, keep]  # normal equations: 3 columns at most, x scaled to <= 1
            A = np.einsum("gnp,gnq->gpq", Xk, Xk) + 1e-12 * np.eye(len(keep))
            c[:, keep] = np.linalg.solve(A, np.einsum("gnp,n->gp", Xk, y)[:, :, None])[:, :, 0]
        ok = np.all((c >= -1e-12) | ~lower, axis=1)
        r = np.einsum("gnp,gp->gn", X, c) - y
        sse = np.where(ok, np.einsum("gn,gn->g", r, r), np.inf)
        better = sse < best_sse
        best_sse[better], best[better] = sse[better], c[better]
    return best_sse, best


def _fit_xy(xt, yt, xf, yf, variant, d_ref, r_star) -> CurveFit:
    y = np.concatenate([yt, yf])
    sse, _ = _solve(_BETAS, xt, xf, y, variant)
    i = int(np.argmin(sse))
    fine = np.geomspace(_BETAS[max(i - 1, 0)], _BETAS[min(i + 1, len(_BETAS) - 1)], 41)
    sse, coefs = _solve(fine, xt, xf, y, variant)
    j = int(np.argmin(sse))
    beta, s, c = float(fine[j]), float(sse[j]), coefs[j]
    rmse = math.sqrt(s / max(len(y) - len(c) - 1, 1))
    if variant == "ratio":
        anneal = 1 - c[2] / c[1] if c[1] > 0 else float("nan")
        E, B = c[0], c[1]
    elif variant == "offset":
        E, B, anneal = c
    else:
        (E, B), anneal = c, float("nan")
    return CurveFit(variant, float(E), float(B), beta, float(anneal), d_ref, r_star, rmse,
                    len(xt), len(xf))


def fit_points(points: pd.DataFrame, variant: str | None = None, r_star: float = R_STAR,
               d_ref: float | None = None) -> CurveFit:
    """Least-squares fit of the model to trunk and final points (columns as `load_points`).
    variant None = 'ratio' when both kinds are there, else 'trunk' or 'final'."""
    t = points[points["kind"] == "trunk"]
    f = points[points["kind"] == "final"]
    if variant is None:
        variant = "ratio" if len(t) and len(f) else ("trunk" if len(t) else "final")
    n_par = {"ratio": 4, "offset": 4, "trunk": 3, "final": 3}[variant]
    if len(points) < n_par or (variant in ("ratio", "offset", "trunk") and len(t) < 3):
        raise FwlabError(f"too few validation points to fit a loss curve ({len(t)} at peak "
                         f"learning rate, {len(f)} finished runs); evaluate more often "
                         f"(--eval-interval) or let the run go further")
    dp = effective_tokens(points["tokens"].to_numpy(float), points["unique_tokens"].to_numpy(float),
                          r_star)
    d_ref = float(d_ref or dp.max())
    kinds = points["kind"].to_numpy()
    xt, xf = dp[kinds == "trunk"] / d_ref, dp[kinds == "final"] / d_ref
    yt = points.loc[kinds == "trunk", "val_loss"].to_numpy(float)
    yf = points.loc[kinds == "final", "val_loss"].to_numpy(float)
    if variant == "final":
        xt, yt = xt[:0], yt[:0]
    if variant == "trunk":
        xf, yf = xf[:0], yf[:0]
    return _fit_xy(xt, yt, xf, yf, variant, d_ref, r_star)


def select_trunk(points: pd.DataFrame, r_star: float = R_STAR
                 ) -> tuple[pd.DataFrame, str, float]:
    """Trunk points the power law should be fitted to, a note saying what was dropped, and the
    misspecification error of the chosen fit (below).

    1. Spikes: evaluations more than OUTLIER_Z robust standard deviations (1.4826 x MAD of the
       residuals) away from a first fit are dropped.
    2. Where the power-law regime begins: the first evaluations (the fast initial descent, while
       the model learns token frequencies) follow no power law and drag the extrapolation. Each
       candidate start s in START_FRACS (x the last trunk tokens D_max) is scored by fitting the
       points in [s·D_max, HOLDOUT·D_max] and predicting those beyond (a forecast of the future
       from the past, on the data at hand only); the earliest start scoring within the noise of
       the best is kept. Its forecast error beyond the eval noise (RMS, noise removed in
       quadrature) is returned: what the curve law misses over 1/HOLDOUT x the tokens."""
    t = points[points["kind"] == "trunk"]
    rest = points[points["kind"] != "trunk"]
    if len(t) < 6:
        return points, "", 0.0
    notes, noise = [], 0.0
    try:
        fit = fit_points(t, "trunk", r_star)
        res = t["val_loss"].to_numpy(float) - fit.trunk(t["tokens"].to_numpy(float),
                                                         t["unique_tokens"].to_numpy(float))
        noise = 1.4826 * np.median(np.abs(res - np.median(res)))
        keep = np.abs(res - np.median(res)) <= OUTLIER_Z * max(noise, 1e-6)
        if (~keep).sum():
            notes.append(f"{int((~keep).sum())} spike(s) dropped")
            t = t[keep]
    except FwlabError:
        pass
    d = t["tokens"].to_numpy(float)
    dmax = d.max()
    scores = {}
    for s in START_FRACS:
        train = t[(d >= s * dmax) & (d <= HOLDOUT * dmax)]
        test = t[d > HOLDOUT * dmax]
        if len(train) < 5 or len(test) < 2:
            continue
        try:
            f = fit_points(train, "trunk", r_star)
        except FwlabError:
            continue
        err = test["val_loss"].to_numpy(float) - f.trunk(test["tokens"].to_numpy(float),
                                                         test["unique_tokens"].to_numpy(float))
        scores[s] = float(np.sqrt(np.mean(err ** 2)))
    # the earliest start that forecasts about as well as the best (within the eval noise): a
    # later start only when the early points really bend the curve, not by chance
    best_s, miss = 0.0, 0.0
    if scores:
        best = min(scores.values())
        best_s = min(s for s, v in scores.items() if v <= best + noise)
        miss = math.sqrt(max(scores[best_s] ** 2 - noise ** 2, 0.0))
    if best_s > 0:
        t = t[t["tokens"] >= best_s * dmax]
        notes.append(f"fit from {best_s:.0%} of the last trunk tokens on (earlier evals are the "
                     f"initial descent; chosen by forecasting the last {1 - HOLDOUT:.0%})")
        late = rest["tokens"] >= best_s * dmax  # finished runs inside the fitted range only
        if late.any() and not late.all():
            notes.append(f"{int((~late).sum())} finished run(s) before that left out")
            rest = rest[late]
    return pd.concat([t, rest], ignore_index=True), "; ".join(notes), miss


def _quantiles(draws: np.ndarray, level: float):
    a = (1 - level) / 2
    return np.quantile(draws, [0.5, a, 1 - a], axis=0)


def forecast_loss(points: pd.DataFrame, tokens, unique_tokens, n_boot: int = N_BOOT,
                  level: float = LEVEL, seed: int = 0, r_star: float = R_STAR,
                  select: bool = True, progress: bool = False) -> dict:
    """Final validation loss after training `tokens` tokens (array) on `unique_tokens` unique ones,
    from trunk/final points (see the module docstring). Returns dict(val_loss, low, high: arrays;
    method: str; fits: the point fits of each variant; drop_assumed: bool)."""
    tokens = np.atleast_1d(np.asarray(tokens, dtype=float))
    points, selected, miss = select_trunk(points, r_star) if select else (points, "", 0.0)
    t = points[points["kind"] == "trunk"].reset_index(drop=True)
    f = points[points["kind"] == "final"].reset_index(drop=True)
    if len(t) >= 3 and len(f):
        variants = ("ratio", "offset")
    elif len(t) >= 3:
        variants = ("trunk",)
    elif len(f) >= 3:
        variants = ("final",)
    else:
        fit_points(points)  # raises the "too few points" error
    d_ref = float(effective_tokens(points["tokens"].to_numpy(float),
                                   points["unique_tokens"].to_numpy(float), r_star).max())
    fits = {v: fit_points(points, v, r_star, d_ref) for v in variants}
    # Repetition beyond one epoch is extrapolated: R* is Muennighoff et al.'s fit on their data,
    # so the interval also spans R*/2 (repeats worth less) to 4 R* (nearly as good as fresh).
    repeats = bool((tokens > np.asarray(unique_tokens, dtype=float)).any()
                   or (points["tokens"] > points["unique_tokens"]).any())
    r_stars = (r_star / 2, r_star, 4 * r_star) if repeats else (r_star,)
    yt, yf = t["val_loss"].to_numpy(float), f["val_loss"].to_numpy(float)
    # What the curve law itself misses (select_trunk's in-window forecast error), grown in
    # proportion to how far beyond the last trunk eval each budget lies, in log tokens.
    horizon = np.log(effective_tokens(tokens, unique_tokens, r_star)
                     / float(effective_tokens(t["tokens"], t["unique_tokens"], r_star).max())) \
        if len(t) else np.zeros_like(tokens)
    extra = miss * np.clip(horizon, 0, None) / math.log(1 / HOLDOUT)
    rng = np.random.default_rng(seed)
    draws = {}
    from tqdm.auto import tqdm
    for _ in tqdm(range(n_boot), desc="bootstrap", disable=not progress, leave=False):
        it, jf = rng.integers(0, len(t), len(t)), rng.integers(0, len(f), len(f))
        for rs in r_stars:
            # the bootstrap works on arrays: x = D'/d_ref per kind
            xt = effective_tokens(t["tokens"].to_numpy(float)[it],
                                  t["unique_tokens"].to_numpy(float)[it], rs) / d_ref
            xf = effective_tokens(f["tokens"].to_numpy(float)[jf],
                                  f["unique_tokens"].to_numpy(float)[jf], rs) / d_ref
            for v in variants:
                if v != "final" and len(np.unique(xt)) < 3:
                    continue  # a resample with fewer than 3 distinct trunk points fits anything
                if v == "final" and len(np.unique(xf)) < 3:
                    continue
                use_t = v in ("ratio", "offset", "trunk")
                use_f = v in ("ratio", "offset", "final")
                fit = _fit_xy(xt if use_t else xt[:0], yt[it] if use_t else yt[:0],
                              xf if use_f else xf[:0], yf[jf] if use_f else yf[:0],
                              v, d_ref, rs)
                if v == "trunk":  # no completed run: the cooldown's worth is drawn from the range
                    pred = fit.final(tokens, unique_tokens, rng.uniform(*DEFAULT_DROP_FRAC))
                else:
                    pred = fit.final(tokens, unique_tokens)
                noise = rng.normal(0, 1, pred.shape) * np.hypot(fit.rmse, extra)
                draws.setdefault((v, rs), []).append(pred + noise)
    draws = {k: np.array(d) for k, d in draws.items() if len(d)}
    if not draws:
        raise FwlabError("the loss curve could not be fitted on any bootstrap sample; "
                         "more evaluations are needed")
    # centre: the median of the draws at R*; interval: the envelope of each variant's own interval
    # (which variant holds is unknown; pooling their draws would cut off the tails of both)
    mid = np.median(np.concatenate([d for (v, rs), d in draws.items() if rs == r_star]), axis=0)
    qs = [_quantiles(d, level) for d in draws.values()]
    lo = np.min([q[1] for q in qs], axis=0)
    hi = np.max([q[2] for q in qs], axis=0)
    n_draws = sum(len(d) for d in draws.values())
    if variants == ("trunk",):
        method = (f"fit of the constant-LR curve on {len(t)} evals; no completed (annealed) run, "
                  f"so the cooldown is ASSUMED to remove {DEFAULT_DROP_FRAC[0]:.0%}-"
                  f"{DEFAULT_DROP_FRAC[1]:.0%} of the loss: finish one short cooldown branch to "
                  f"measure it")
    elif variants == ("final",):
        method = f"fit of the final losses of {len(f)} completed runs"
    else:
        method = (f"joint fit of {len(t)} peak-LR evals and {len(f)} completed run(s) "
                  f"(cooldown as a share of reducible loss, and as an offset)")
    if selected:
        method += f" ({selected})"
    if extra.max() > 0:
        method += (f"; plus the curve law's own error, {miss:.3f} nats per {1 / HOLDOUT:.2g}x "
                   f"tokens on its past (±{extra.max():.3f} at the furthest budget)")
    method += (f"; Muennighoff R*={r_star:g}" + (f" (interval: {r_stars[0]:g}-{r_stars[-1]:g})"
                                                  if repeats else "")
               + f"; {level:.0%} bootstrap interval ({n_draws} draws)")
    return dict(val_loss=mid, low=lo, high=hi, method=method, fits=fits,
                drop_assumed=variants == ("trunk",))


# --- published priors ----------------------------------------------------------------------------
def prior_loss(n_params: float, tokens, unique_tokens=None, r_star: float = R_STAR) -> dict:
    """L(N, D) of the published fits (PRIORS) at N parameters and `tokens` tokens (array).
    val_loss = mean of the fits at D'; low = the lowest fit at D (repeats as good as fresh);
    high = the highest fit at D'. INDICATIVE PRIOR ONLY (PRIOR_NOTE)."""
    d = np.atleast_1d(np.asarray(tokens, dtype=float))
    dp = d if unique_tokens is None else effective_tokens(d, unique_tokens, r_star)

    def L(p, dd):
        return p["E"] + p["A"] / n_params ** p["alpha"] + p["B"] / dd ** p["beta"]

    at_dp = np.array([L(p, dp) for p in PRIORS.values()])
    at_d = np.array([L(p, d) for p in PRIORS.values()])
    return dict(val_loss=at_dp.mean(0), low=np.minimum(at_d, at_dp).min(0),
                high=at_dp.max(0), fits={k: at_dp[i] for i, k in enumerate(PRIORS)},
                method=f"{PRIOR_NOTE}; mean of {' and '.join(p['label'] for p in PRIORS.values())}"
                       f" at N={n_params / 1e6:.1f}M, Muennighoff R*={r_star:g}")


# --- plateau advice ------------------------------------------------------------------------------
def plateau(evals: pd.DataFrame, last: int = 6, finished: bool = False) -> dict:
    """Is a run's validation loss still falling? Least-squares slope of val_loss over iterations on
    its `last` evaluations and that slope's standard error: plateaued when the slope is not
    significantly negative (slope > -2 stderr). `finished`: the evals are a finished run's
    peak-learning-rate phase, and the advice is about a longer budget rather than this run."""
    ev = evals.dropna(subset=["val_loss"]).sort_values("iter").tail(last)
    if len(ev) < 4:
        return dict(plateaued=None, n=len(ev), advice=f"only {len(ev)} evaluations: too few to "
                    f"judge a plateau (need 4)")
    x, y = ev["iter"].to_numpy(float) / 1000, ev["val_loss"].to_numpy(float)
    A = np.vstack([np.ones_like(x), x]).T
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - A @ coef
    s2 = float(resid @ resid) / (len(x) - 2)
    se = math.sqrt(s2 / float(((x - x.mean()) ** 2).sum()))
    slope = float(coef[1])
    flat = slope > -2 * se
    span = (f"{slope:+.4f} ± {se:.4f} nats per 1k iterations over iterations "
            f"{int(ev['iter'].iloc[0])}-{int(ev['iter'].iloc[-1])}")
    if finished:
        advice = (f"at peak learning rate it had plateaued ({span}): a longer budget buys little"
                  if flat else f"at peak learning rate it was still improving ({span}): a longer "
                               f"budget would still pay")
    elif flat:
        advice = (f"plateaued: {span}, not significantly falling; more iterations at this "
                  f"learning rate buy little — cool down (anneal) now, or stop")
    else:
        advice = f"still improving: {span}; keep training"
    return dict(plateaued=bool(flat), slope_per_1k_iters=slope, slope_stderr=se, n=len(ev),
                first_iter=int(ev["iter"].iloc[0]), last_iter=int(ev["iter"].iloc[-1]),
                advice=advice)


# --- throughput ----------------------------------------------------------------------------------
class _RandomTokens:
    """A loader of uniformly random GPT-2 token windows (speed does not depend on the tokens)."""

    def __init__(self, block_size: int, seed: int = 0):
        import torch
        self.block_size, self.gen = block_size, torch.Generator().manual_seed(seed)

    def next_batch(self, n: int):
        import torch
        w = torch.randint(0, 50257, (n, self.block_size + 1), generator=self.gen)
        return w[:, :-1].contiguous(), w[:, 1:].contiguous()


def measure_throughput(preset: str, tokens_per_iter: int, device: str = "auto",
                       dtype: str = "auto", compile: bool | None = None, iters: int = 10,
                       micro_batch: int = 0, data: str | None = None, warmup: int = 2,
                       tokens_to_train: int | None = None, progress: bool = True) -> dict:
    """Tokens/s of the trainer's own step (fwlab.train.train_step) on this machine, with the
    device, autocast dtype, torch.compile decision and micro-batch the trainer would resolve
    (fwlab.hardware).

    One iteration is `accum` micro-steps then one optimizer step. `iters` micro-steps are timed, as
    whole iterations when they fit (accum <= iters), else as shortened ones of `iters` micro-steps,
    after `warmup` untimed steps (compilation happens there); the optimizer step (clip + AdamW) is
    timed on its own, so seconds/iteration = accum · t_micro + t_opt. `tokens_to_train` feeds the
    trainer's auto-compile rule (default: 10,000 iterations). Returns dict(tok_per_s, s_per_iter,
    micro_batch, accum, device, device_name, dtype, compile, flops_per_token, peak_flops, mfu,
    n_params, timed_micro_steps, method)."""
    import torch
    from tqdm.auto import tqdm

    from fwlab import hardware
    from fwlab.config import TrainConfig
    from fwlab.model import GPT
    from fwlab.train import train_step

    if iters < 1:
        raise FwlabError(f"--measure-iters {iters}: must be at least 1")
    cfg = TrainConfig(preset=preset, tokens_per_iter=int(tokens_per_iter), micro_batch=micro_batch)
    mc = cfg.model_config()
    if cfg.tokens_per_iter % mc.block_size:
        raise FwlabError(f"tokens_per_iter={tokens_per_iter}: must be a multiple of the {preset} "
                         f"preset's block_size={mc.block_size}")
    dev = hardware.resolve_device(device)
    hardware.setup_device(dev)
    dt = hardware.resolve_dtype(dtype, dev)
    comp = hardware.resolve_compile(compile, dev, tokens_to_train or 10_000 * cfg.tokens_per_iter)
    torch.manual_seed(0)
    raw = GPT(mc).to(dev)
    n_params = raw.num_params()
    micro, accum = hardware.pick_micro_batch(cfg.tokens_per_iter, mc.block_size, 1, micro_batch,
                                             hardware.micro_batch_cap(mc, dev, n_params))
    opt = raw.configure_optimizer(cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), dev.type)
    model = torch.compile(raw) if comp else raw
    ctx = hardware.autocast(dev, dt)
    if data:
        from fwlab.data import TrainLoader
        loader = TrainLoader(data, mc.block_size)
    else:
        loader = _RandomTokens(mc.block_size)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def step(k):
        train_step(model, opt, loader, micro, k, dev, ctx, cfg.grad_clip)

    a = min(accum, iters)           # micro-steps per timed call
    reps = max(1, iters // a)
    n_opt = 3
    bar = tqdm(total=warmup + reps + n_opt, desc=f"measuring {preset} on {dev.type}",
               disable=not progress, leave=False)
    for _ in range(warmup):
        step(1)
        bar.update()
    t_opt = 0.0
    for _ in range(n_opt):  # the optimizer step alone: gradients are there from the last step
        for p in raw.parameters():
            p.grad = torch.zeros_like(p)
        sync()
        t0 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        t_opt += (time.perf_counter() - t0) / n_opt
        bar.update()
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        step(a)
        bar.update()
    sync()
    per_call = (time.perf_counter() - t0) / reps
    bar.close()
    t_micro = max(per_call - t_opt, 1e-9) / a
    s_per_iter = per_call if a == accum else accum * t_micro + t_opt
    tok_per_s = cfg.tokens_per_iter / s_per_iter
    fpt = raw.flops_per_token()
    how = (f"{reps} whole iteration(s) of {accum} micro-step(s)" if a == accum else
           f"{reps} x {a} timed micro-steps scaled to {accum} per iteration")
    return dict(tok_per_s=tok_per_s, s_per_iter=s_per_iter, micro_batch=micro, accum=accum,
                device=dev.type, device_name=hardware.device_name(dev), dtype=dt, compile=comp,
                flops_per_token=fpt, peak_flops=hardware.peak_flops(dev),
                mfu=hardware.mfu(tok_per_s, fpt, dev), n_params=n_params,
                timed_micro_steps=reps * a,
                method=f"fwlab.train.train_step: {how} of {micro}x{mc.block_size} tokens, after "
                       f"{warmup} warm-up step(s); {dt}, compile {'on' if comp else 'off'}, "
                       f"{'data ' + str(data) if data else 'random tokens'}")


def gpu_hours(gpu: str, preset: str, iters: float, tokens_per_iter: int,
              mfu_range=DEFAULT_MFU_RANGE) -> dict:
    """Hours for `iters` iterations of `preset` on a named GPU that this machine cannot measure:
    tokens x FLOPs per token / (dense bf16 peak x MFU), over the assumed MFU range."""
    from fwlab import hardware
    peak = hardware.peak_flops_for_name(gpu)
    if peak is None:
        known = ", ".join(p for p, _ in hardware.PEAK_BF16_FLOPS)
        raise FwlabError(f"GPU {gpu!r} is not in fwlab.hardware's peak table (patterns: {known}); "
                         f"measure on it with `fwlab plan` there, or give --tok-per-s")
    lo, hi = sorted(float(m) for m in mfu_range)
    fpt = preset_flops_per_token(preset)
    flops = float(iters) * tokens_per_iter * fpt
    mid = (lo + hi) / 2
    return dict(hours=flops / (peak * mid) / 3600, hours_low=flops / (peak * hi) / 3600,
                hours_high=flops / (peak * lo) / 3600, peak_flops=peak, mfu_range=[lo, hi],
                flops_per_token=fpt, tok_per_s=peak * mid / fpt,
                method=f"{gpu}: {peak / 1e12:.1f} TFLOP/s dense bf16 peak (fwlab.hardware) x "
                       f"assumed MFU {lo:.0%}-{hi:.0%} (centre {mid:.0%}), "
                       f"{fpt / 1e6:.0f}M training FLOPs/token")


def preset_flops_per_token(preset: str) -> float:
    from fwlab.config import TrainConfig
    from fwlab.model import GPT
    import torch
    with torch.device("meta"):
        return float(GPT(TrainConfig(preset=preset).model_config()).flops_per_token())


def preset_params(preset: str) -> int:
    from fwlab.config import TrainConfig
    from fwlab.model import GPT
    import torch
    with torch.device("meta"):
        return int(GPT(TrainConfig(preset=preset).model_config()).num_params())


# --- the plan ------------------------------------------------------------------------------------
def _source_settings(points: pd.DataFrame) -> dict:
    return dict(presets=sorted(set(points["preset"].dropna())),
                tokens_per_iter=sorted({int(v) for v in points["tokens_per_iter"].dropna()}),
                unique_tokens=float(points["unique_tokens"].median()) if len(points) else None)


def loss_forecast_for(budgets, tokens_per_iter: int, data_tokens: float, preset: str,
                      sources=(), points: pd.DataFrame | None = None, n_boot: int = N_BOOT,
                      level: float = LEVEL, progress: bool = False) -> dict:
    """Predicted final val loss per budget: from the curves in `sources` (or `points`) when given,
    else the published prior. dict(val_loss, low, high, basis ('curves'|'prior'), method)."""
    tokens = np.asarray(budgets, dtype=float) * tokens_per_iter
    if points is None and sources:
        points = load_points(*sources)
    if points is not None:
        if not len(points):
            raise FwlabError(f"{', '.join(map(str, sources))}: no validation points to fit (no "
                             f"evaluations at peak learning rate and no completed runs)")
        st = _source_settings(points)
        if st["presets"] and st["presets"] != [preset]:
            raise FwlabError(f"the curves in {', '.join(map(str, sources))} are of preset "
                             f"{'/'.join(st['presets'])}, the plan is for {preset}: pass --preset "
                             f"{st['presets'][0]}, or drop --from for the published prior")
        out = forecast_loss(points, tokens, data_tokens, n_boot=n_boot, level=level,
                            progress=progress)
        out["basis"] = "curves"
        out["row_basis"] = ["forecast"] * len(tokens)
        if st["tokens_per_iter"] and st["tokens_per_iter"] != [int(tokens_per_iter)]:
            out["method"] += (f"; NOTE the curves used {st['tokens_per_iter']} tokens/iter, the "
                              f"plan {int(tokens_per_iter)} (the fit is in tokens)")
            return out
        # a budget the source has run to completion in this very setting: its measured value
        fin = points[(points["kind"] == "final")
                     & np.isclose(points["unique_tokens"], data_tokens, rtol=1e-3)]
        z = _z(level)
        for i, d in enumerate(tokens):
            m = fin[fin["tokens"] == d]
            if len(m):
                v, se = float(m["val_loss"].iloc[-1]), float(m["val_loss_stderr"].iloc[-1] or 0)
                out["val_loss"][i], out["low"][i], out["high"][i] = v, v - z * se, v + z * se
                out["row_basis"][i] = f"measured ({m['run'].iloc[-1]})"
        return out
    out = prior_loss(preset_params(preset), tokens, data_tokens)
    out["basis"] = "prior"
    out["row_basis"] = ["prior"] * len(tokens)
    return out


def _z(level: float) -> float:
    """Two-sided normal quantile: a measured value's interval is ± z stderr at this level."""
    from scipy.stats import norm
    return float(norm.ppf(0.5 + level / 2))


def plan(preset: str = "40m", data_tokens: float = 3.68e9, tokens_per_iter: int = 524_288,
         budgets=(6000, 10000, 15000, 20000), sources=(), tok_per_s: float | None = None,
         measure_iters: int = 10, device: str = "auto", dtype: str = "auto",
         compile: bool | None = None, micro_batch: int = 0, data: str | None = None,
         gpu: str | None = None, mfu_range=DEFAULT_MFU_RANGE,
         min_gain_per_hour: float = DEFAULT_MIN_GAIN_PER_HOUR, n_boot: int = N_BOOT,
         level: float = LEVEL, progress: bool = True) -> dict:
    """Hours and predicted final val loss per budget, gain per extra hour, and a recommendation.

    Hours: `gpu` names a GPU from fwlab.hardware's table -> its peak x `mfu_range` (an interval);
    else `tok_per_s` when given, else measured here (measure_throughput). Loss: loss_forecast_for.
    Returns a JSON-ready dict (see format_plan for what the keys mean)."""
    from fwlab.config import parse_int_list
    budgets = sorted(parse_int_list(",".join(str(int(b)) for b in budgets), "budgets")) \
        if not isinstance(budgets, str) else sorted(parse_int_list(budgets, "--budgets"))
    if not budgets or min(budgets) < 1:
        raise FwlabError(f"budgets {budgets}: give positive iteration counts, e.g. 6000,10000")
    tokens_per_iter, data_tokens = int(tokens_per_iter), float(data_tokens)
    if tokens_per_iter < 1 or not data_tokens > 0:
        raise FwlabError(f"tokens_per_iter={tokens_per_iter}, data_tokens={data_tokens:g}: "
                         f"both must be positive")
    b = np.array(budgets, dtype=float)
    if gpu:
        g = gpu_hours(gpu, preset, 1.0, tokens_per_iter, mfu_range)
        hours, h_lo, h_hi = b * g["hours"], b * g["hours_low"], b * g["hours_high"]
        thr = dict(source="gpu", gpu=gpu, tok_per_s=g["tok_per_s"], mfu=None,
                   peak_flops=g["peak_flops"], mfu_range=g["mfu_range"], method=g["method"])
    else:
        if tok_per_s is None:
            m = measure_throughput(preset, tokens_per_iter, device, dtype, compile, measure_iters,
                                   micro_batch, data, progress=progress,
                                   tokens_to_train=int(b.max()) * tokens_per_iter)
            thr = dict(source="measured", **m)
        else:
            if not float(tok_per_s) > 0:
                raise FwlabError(f"--tok-per-s {tok_per_s}: must be positive")
            thr = dict(source="given", tok_per_s=float(tok_per_s), method="given by the user")
        hours = b * tokens_per_iter / thr["tok_per_s"] / 3600
        h_lo = h_hi = hours
    loss = loss_forecast_for(budgets, tokens_per_iter, data_tokens, preset, sources,
                             n_boot=n_boot, level=level, progress=progress)
    rows = []
    for i, it in enumerate(budgets):
        row = dict(budget=it, tokens=it * tokens_per_iter,
                   epochs=it * tokens_per_iter / data_tokens,
                   val_loss=float(loss["val_loss"][i]), val_loss_low=float(loss["low"][i]),
                   val_loss_high=float(loss["high"][i]), loss_basis=loss["row_basis"][i],
                   hours=float(hours[i]),
                   hours_low=float(h_lo[i]), hours_high=float(h_hi[i]),
                   gain=None, extra_hours=None, gain_per_hour=None)
        if i:
            row["gain"] = rows[-1]["val_loss"] - row["val_loss"]
            row["extra_hours"] = row["hours"] - rows[-1]["hours"]
            row["gain_per_hour"] = row["gain"] / row["extra_hours"] if row["extra_hours"] > 0 \
                else None
        rows.append(row)
    out = dict(preset=preset, n_params=preset_params(preset),
               flops_per_token=preset_flops_per_token(preset), data_tokens=data_tokens,
               tokens_per_iter=tokens_per_iter, budgets=budgets, throughput=thr,
               loss_basis=loss["basis"], loss_method=loss["method"],
               interval=("spread of the published fits" if loss["basis"] == "prior"
                         else f"{level:.0%} bootstrap"),
               min_gain_per_hour=float(min_gain_per_hour), rows=rows,
               recommendation=recommend(rows, min_gain_per_hour),
               sources=[str(s) for s in sources], plateau=[])
    if sources:
        out["plateau"] = plateau_of(sources)
    return _jsonable(out)


def recommend(rows: list[dict], min_gain_per_hour: float) -> dict:
    """Walk up the budgets while each step's extra hour buys more than min_gain_per_hour nats."""
    pick = rows[0]
    reason = None
    for r in rows[1:]:
        gph = r["gain_per_hour"]
        if gph is None or gph <= min_gain_per_hour:
            reason = (f"going {pick['budget']:,} -> {r['budget']:,} iterations buys "
                      f"{r['gain']:.3f} nats in {r['extra_hours']:.3g} more hours "
                      f"({0 if gph is None else gph:.3g} nats/hour), not more than the "
                      f"{min_gain_per_hour:g} nats/hour threshold")
            break
        pick = r
    if reason is None:
        reason = ("every step up still buys more than the " f"{min_gain_per_hour:g} nats/hour "
                  "threshold: the largest budget" + (
                      f" (last step: {pick['gain_per_hour']:.3g} nats/hour)" if len(rows) > 1
                      else ""))
    return dict(budget=pick["budget"], val_loss=pick["val_loss"], hours=pick["hours"],
                reason=reason, min_gain_per_hour=min_gain_per_hour)


def plateau_of(sources, last: int = 6) -> list[dict]:
    """plateau() for every unfinished run in `sources` on its latest evaluations; when all have
    finished, for the one with the most peak-LR evaluations (the trunk of a wsd sweep) on those."""
    from fwlab.analysis import load_runs
    lab = load_runs(*sources)
    done = ("completed", "early_stopped", "diverged")
    running = lab.runs[~lab.runs["status"].isin(done)]
    out = []
    for _, r in running.iterrows():
        ev = lab.evals[(lab.evals["run"] == r["run"]) & lab.evals["own"]]
        out.append(dict(run=r["run"], status=r["status"], **plateau(ev, last)))
    if not out:
        pts = load_points(*sources)
        t = pts[pts["kind"] == "trunk"]
        if len(t):
            run = t.groupby("run").size().idxmax()
            status = lab.runs.set_index("run").loc[run, "status"]
            out.append(dict(run=run, status=status,
                            **plateau(t[t["run"] == run], last, finished=True)))
    return out


def _jsonable(o):
    if isinstance(o, dict):
        return {k: _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


# --- backtest ------------------------------------------------------------------------------------
TARGET_ABS_ERROR = 0.03


def backtest(sweep_dir, frac: float = 0.3, n_boot: int = N_BOOT, level: float = LEVEL,
             r_star: float = R_STAR, seed: int = 0) -> dict:
    """Forecast the final val loss of the sweep's longest budget from what was known when `frac` of
    its iterations were done, and compare with the value it reached.

    Known then: its own peak-LR evaluations up to frac x its tokens, plus the final losses of runs
    that had finished by that point in tokens (in a wsd sweep at the reference ratios, the 0.85-
    epoch branch ends at 0.298 of the 2.85-epoch budget). `compute_frac` reports the compute those
    points cost, the branches' cooldowns included, over the longest budget's. `strict` repeats the
    forecast from the longest run's own evaluations alone (no finished run: assumed cooldown drop).
    Returns a dict with forecast, low, high, actual, error (forecast - actual), inside, passed
    (|error| <= TARGET_ABS_ERROR and inside) and what was used."""
    from fwlab.analysis import load_runs
    if not 0 < frac < 1:
        raise FwlabError(f"frac={frac}: must be in (0, 1)")
    pts = load_points(sweep_dir)
    fin = pts[pts["kind"] == "final"]
    if not len(fin):
        raise FwlabError(f"{sweep_dir}: no completed (annealed) run to backtest against")
    target = fin.loc[fin["tokens"].idxmax()]
    cutoff = frac * float(target["tokens"])
    lab = load_runs(sweep_dir)
    runs = lab.runs.set_index("run")
    # the target's own trunk: its evaluations, and its parent's up to its branch point
    own = {target["run"]}
    par = runs.loc[target["run"]].get("parent_run")
    if isinstance(par, str) and par:
        own.add(par)
    trunk = pts[(pts["kind"] == "trunk") & (pts["tokens"] <= cutoff)]
    done = fin[(fin["tokens"] <= cutoff) & (fin["run"] != target["run"])]
    used = pd.concat([trunk, done], ignore_index=True)
    U, T = float(target["unique_tokens"]), float(target["tokens"])
    res = forecast_loss(used, T, U, n_boot=n_boot, level=level, seed=seed, r_star=r_star)
    extra = sum(float(runs.loc[r, "iters_computed"]) * float(runs.loc[r, "tokens_per_iter"])
                for r in done["run"] if pd.notna(runs.loc[r, "iters_computed"]))
    out = dict(sweep=str(sweep_dir), run=target["run"], budget_iters=int(target["iter"]),
               tokens=T, epochs=T / U, frac=frac, cutoff_iter=int(round(cutoff / float(
                   target["tokens_per_iter"] or 1))),
               actual=float(target["val_loss"]), **_verdict(res, float(target["val_loss"])),
               n_trunk=int(len(trunk)), finals_used=sorted(done["run"].tolist()),
               compute_frac=(cutoff + extra) / T, method=res["method"])
    own_trunk = trunk[trunk["run"].isin(own)]
    if len(own_trunk) >= 3:
        s = forecast_loss(own_trunk, T, U, n_boot=n_boot, level=level, seed=seed, r_star=r_star)
        out["strict"] = dict(n_trunk=int(len(own_trunk)), compute_frac=frac, method=s["method"],
                             **_verdict(s, float(target["val_loss"])))
    return _jsonable(out)


def _verdict(res: dict, actual: float) -> dict:
    f, lo, hi = float(res["val_loss"][0]), float(res["low"][0]), float(res["high"][0])
    inside = lo <= actual <= hi
    return dict(forecast=f, low=lo, high=hi, error=f - actual, inside=bool(inside),
                passed=bool(inside and abs(f - actual) <= TARGET_ABS_ERROR))


def fmt_tokens(n: float) -> str:
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def _h(x) -> str:
    return "-" if x is None else (f"{x:,.0f}" if x >= 100 else f"{x:.3g}")


def format_plan(p: dict) -> str:
    """The plan as text: header (model, data, throughput, loss basis), table, recommendation."""
    thr = p["throughput"]
    lines = [f"fwlab plan: preset {p['preset']} ({p['n_params'] / 1e6:.1f}M params, "
             f"{p['flops_per_token'] / 1e6:.0f}M training FLOPs/token), "
             f"{fmt_tokens(p['data_tokens'])} unique training tokens, {p['tokens_per_iter']:,} "
             f"tokens/iter"]
    if thr["source"] == "gpu":
        lines.append(f"hours: {thr['method']}")
    else:
        mfu = thr.get("mfu")
        where = (f" on {thr.get('device_name')} ({thr.get('device')}, {thr.get('dtype')}, compile "
                 f"{'on' if thr.get('compile') else 'off'})" if thr["source"] == "measured" else "")
        lines.append(f"hours: {thr['tok_per_s']:,.0f} tokens/s {thr['source']}{where}"
                     + (f", MFU {mfu:.1%}" if mfu is not None else
                        ", MFU unknown (no peak FLOPs for this device)"
                        if thr["source"] == "measured" else ""))
        if thr["source"] == "measured":
            lines.append(f"       ({thr['method']})")
    lines.append(f"loss: {p['loss_method']}")
    if p["loss_basis"] == "prior":
        lines.append("      *** INDICATIVE PRIOR ONLY — give --from RUN_OR_SWEEP to forecast from "
                     "your own curves ***")
    head = (f"{'budget':>8} {'tokens':>9} {'epochs':>6}  {'val loss':>8} {'[interval]':<16} "
            f"{'hours':>18} {'gain':>7} {'gain/extra h':>12}  loss from")
    lines += ["", head, "-" * len(head)]
    for r in p["rows"]:
        hrs = _h(r["hours"]) if r["hours_low"] == r["hours_high"] else \
            f"{_h(r['hours'])} [{_h(r['hours_low'])}-{_h(r['hours_high'])}]"
        iv = "[%.3f, %.3f]" % (r["val_loss_low"], r["val_loss_high"])
        gain = "-" if r["gain"] is None else "%.3f" % r["gain"]
        gph = "-" if r["gain_per_hour"] is None else "%.4g" % r["gain_per_hour"]
        lines.append(f"{r['budget']:>8,} {fmt_tokens(r['tokens']):>9} {r['epochs']:>6.2f}  "
                     f"{r['val_loss']:>8.3f} {iv:<16} {hrs:>18} {gain:>7} {gph:>12}  "
                     f"{r.get('loss_basis', '')}")
    lines.append(f"(interval: {p['interval']})")
    rec = p["recommendation"]
    lines += ["", f"recommendation: {rec['budget']:,} iterations (predicted val loss "
                  f"{rec['val_loss']:.3f}, {_h(rec['hours'])} h): {rec['reason']}"]
    for pl in p.get("plateau") or []:
        lines.append(f"plateau: {pl['run']} ({pl['status']}): {pl['advice']}")
    return "\n".join(lines)


def _parse_count(s, flag: str) -> float:
    try:
        v = float(str(s).replace("_", "").replace(",", ""))
    except ValueError:
        raise FwlabError(f"{flag} {s!r}: not a number (e.g. 3.68e9)") from None
    if not v > 0:
        raise FwlabError(f"{flag} {s!r}: must be positive")
    return v


def main_plan(args) -> int:
    """`fwlab plan` (flags: fwlab/cli.py)."""
    from fwlab.config import parse_int_list
    from fwlab.utils import atomic_write_json
    sources = list(args.from_ or [])
    preset, data_tokens, tpi = args.preset, args.data_tokens, args.tokens_per_iter
    if sources and None in (preset, data_tokens, tpi):  # defaults from the curves' own setting
        st = _source_settings(load_points(*sources))
        if preset is None and st["presets"]:
            preset = st["presets"][0]
        if data_tokens is None and st["unique_tokens"]:
            data_tokens = st["unique_tokens"]
        if tpi is None and len(st["tokens_per_iter"]) == 1:
            tpi = st["tokens_per_iter"][0]
    if data_tokens is None:
        raise FwlabError("--data-tokens: give the number of unique training tokens (e.g. 3.68e9)")
    tpi = 524_288 if tpi is None else tpi
    tpi_v = _parse_count(tpi, "--tokens-per-iter")
    if tpi_v != int(tpi_v):
        raise FwlabError(f"--tokens-per-iter {tpi}: must be an integer")
    tpi = tpi_v
    mfu = [_parse_count(x, "--mfu") for x in str(getattr(args, "mfu", "0.3,0.5")).split(",")]
    if len(mfu) != 2 or not all(0 < m <= 1 for m in mfu):
        raise FwlabError(f"--mfu {args.mfu}: give a range LOW,HIGH of fractions, e.g. 0.3,0.5")
    p = plan(preset=preset or "40m", data_tokens=_parse_count(data_tokens, "--data-tokens"),
             tokens_per_iter=int(tpi), budgets=parse_int_list(args.budgets, "--budgets"),
             sources=sources, tok_per_s=getattr(args, "tok_per_s", None),
             measure_iters=args.measure_iters, device=getattr(args, "device", "auto"),
             dtype=getattr(args, "dtype", "auto"), compile=getattr(args, "compile", None),
             micro_batch=getattr(args, "micro_batch", 0), data=getattr(args, "data", None),
             gpu=getattr(args, "gpu", None), mfu_range=mfu,
             min_gain_per_hour=getattr(args, "min_gain_per_hour", DEFAULT_MIN_GAIN_PER_HOUR),
             progress=not args.json)
    if getattr(args, "out", None):
        atomic_write_json(args.out, p)
    print(json.dumps(p, indent=2) if args.json else format_plan(p))
    return 0


def main_check_claims(args) -> int:
    """`fwlab check-claims` (fwlab/claims.py)."""
    from fwlab import claims
    return claims.main(args)


def check_claims(claims_path, source, **kw):
    """fwlab.claims.check_claims (kept here too: `fwlab.forecast.check_claims` is the documented
    entry point for notebooks)."""
    from fwlab.claims import check_claims as check
    return check(claims_path, source, **kw)
