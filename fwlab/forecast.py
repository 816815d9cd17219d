"""Loss forecasts: what final validation loss each iteration budget will reach, with an interval,
from the user's own curves or, without any, from published fits. Hours per budget and the plan
that weighs the two are in fwlab/plan.py (`fwlab plan`); claims against both are checked in
fwlab/claims.py (`fwlab check-claims`).

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

`loss_forecast_for` gives the loss per budget for the plan and the claims checker: from curves
when there are any (a budget the source completed in the same setting is its measured value),
else the prior. `plateau` says whether a running run's validation loss is still falling (slope
over its last evaluations against that slope's standard error).
`backtest` checks the whole loss method on a finished sweep: forecast the longest budget's final
loss from the evaluations of its first 30% only, and compare with what it reached.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from fwlab.errors import FwlabError
from fwlab.utils import read_json

R_STAR = 15.4                      # Muennighoff et al. 2023, R*_D
PEAK_FRAC = 0.95                   # an eval counts as constant-LR when lr >= 0.95 x peak
LEVEL = 0.9                        # interval coverage
N_BOOT = 200
OUTLIER_Z = 5.0                    # trunk evals this many robust SDs off a first fit are dropped
START_FRACS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)  # candidate fit starts (x the last trunk tokens)
HOLDOUT = 0.7                      # ... each scored on forecasting the trunk evals beyond 0.7 x
DEFAULT_DROP_FRAC = (0.0, 0.03)    # share of the loss a cooldown removes, when none measured
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


def _lr_frac(cfg: dict, iters: np.ndarray, train: pd.DataFrame) -> np.ndarray:
    """Learning rate / peak for the step that ended at each iteration: from the schedule when the
    config has its fields, else from the logged train points (nearest earlier one)."""
    from fwlab import schedule
    need = ("lr", "min_lr_frac", "max_iters", "schedule", "cooldown_frac", "cooldown_shape")
    if all(cfg.get(k) is not None for k in need):
        c = SimpleNamespace(**{"warmup_iters": None, **cfg})  # lr_at reads config attributes
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
        cfg = read_json(cfg_path) if cfg_path.is_file() else {}
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


def preset_model(preset: str):
    """The preset's GPT on the meta device: its sizes without allocating or initialising weights."""
    import torch

    from fwlab.config import TrainConfig
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
    """Predicted final val loss per budget: from the curves in `sources` (or `points`) when given,
    else the published prior. dict(val_loss, low, high, basis ('curves'|'prior'), method)."""
    tokens = np.asarray(budgets, dtype=float) * tokens_per_iter
    if points is None and sources:
        points = load_points(*sources)
    if points is not None:
        if not len(points):
            raise FwlabError(f"{', '.join(map(str, sources))}: no validation points to fit (no "
                             f"evaluations at peak learning rate and no completed runs)")
        st = source_settings(points)
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
        z = normal_z(level)
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


def normal_z(level: float) -> float:
    """Two-sided normal quantile: a measured value's interval is ± z stderr at this level."""
    from scipy.stats import norm
    return float(norm.ppf(0.5 + level / 2))


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
    return jsonable(out)


def _verdict(res: dict, actual: float) -> dict:
    f, lo, hi = float(res["val_loss"][0]), float(res["low"][0]), float(res["high"][0])
    inside = lo <= actual <= hi
    return dict(forecast=f, low=lo, high=hi, error=f - actual, inside=bool(inside),
                passed=bool(inside and abs(f - actual) <= TARGET_ABS_ERROR))
