"""Loss forecasts: what final validation loss each iteration budget will reach, with an interval,
from the user's own curves or, without any, from published fits. Hours per budget and the plan
that weighs the two are in fwlab/plan.py (`fwlab plan`); claims against both are checked in
fwlab/claims.py (`fwlab check-claims`).

The law (`forecast_curves`, `forecast_loss`): the multi-power law of Luo et al. 2025 (fwlab/laws.py),
in steps, on each run's exact per-update learning rate (schedule.spec_from_config / lr_array:
config.json's fields or an imported run's own spec). Every evaluation of every run is a point, so
one fit serves a WSD trunk and its cooldown branches, cosine runs and a run still going. Repeated
data (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models"): an update's tokens are
worth dD'/dD in the law's area S1, 1 in the first epoch and exp(-R/R*) after R repetitions
(R* = 15.4, `effective_tokens`); a run whose unique tokens are unknown is taken as single-epoch,
and the method says so.

The fit: variable projection with multi-start (laws.fit), Gaussian priors on the exponents and on
B, from each of WINDOWS (the share of the latest known step the fit starts at: 5, 10, 20, 40%,
after warm-up); the forecast is the median of the four fits'. Evaluations over OUTLIER_Z robust SDs
off the middle window's fit (spikes) are left out. Before any evaluation has seen the LR come down
(a trunk alone, a WSD run before its cooldown) the cooldown's gain rests on B's prior only: the
method says so and which one short cooldown branch would pin it down, with its cost.

The interval (LEVEL, 90%): forecast ± INTERVAL_K x u, u = sqrt(spread² + sigma²), spread the SD of
the window fits' forecasts (and, B unknown, of the fits with B at its prior's ends), sigma the
fit's residual SD. A residual bootstrap alone is far too narrow here (residuals are correlated,
the error is extrapolation): INTERVAL_K is calibrated instead.

Constants and how they were chosen (benchmarks/bench_forecast.py --reference on
../shared/data/reference-curves, 174 cases of 23 groups, 185 with the stretch protocol; records
in benchmarks/records/):
  PRIOR     exponent priors per target schedule kind. beta (how soon an LR decrease's gain
            saturates) is not identified by one short cooldown branch (B and beta trade off; a
            free fit lands at beta -> 0 and forecasts long cooldowns 0.02-0.045 nats too low).
            Its mean was chosen on a grid {0.3, 0.6, 1, 1.5, 2, 3} on the reference cases: WSD
            targets 2.0 (sweep cases: median |error| 0.0073 vs 0.0093 at 0.6), other targets 0.15
            (the cross-schedule and cosine live cases prefer a slow saturation: max error 0.010 vs
            0.037 at 0.6). Chosen on all groups' cases (in-group): held out strictly, the lr=1e-3
            sweep alone would pick 1.0-2.0 and the lr=5e-4 one 3.0. log C, gamma: wide.
            alpha: 0.50 +- 0.01, the groups' own full-length fits' median (0.495-0.508 leaving
            each out); free, a fit to a third of a run takes 0.38-0.45 and extrapolates the
            trunk 0.01-0.02 nats too low. SD on a grid {0.003, 0.01, 0.15} (in-group).
  B         prior mean and SD: median and robust SD of the groups' own fits (the bench redoes
            this leaving each case's group out).
  UNFINISHED  when the known runs have seen the LR's decrease only in part (an evaluation after
            the peak below PEAK_FRAC of it, none at a decay's end: a run still going), gamma
            1.5 +- 0.3, log C -7 +- 2 and B's prior mean x1.2 replace PRIOR's: a partly seen
            decrease does not identify how its gain grows, the fit stays at the prior, and with
            PRIOR's (gamma 0.6) those runs' own ends were forecast 0.02-0.04 too high. The
            whole-run fits of those runs with the same priors have gamma 1.0-1.5, log C -6 to -9
            and a larger B. Chosen on a grid of 12 (gamma {PRIOR's, 1.0, 1.5} x log C
            {PRIOR's, -7} x B {x1, x1.2}) leaving each group out
            (benchmarks/bench_forecast_choice.py): 9 of 11 folds choose it; live50 (LR down)
            median |error| 0.029 -> 0.0090 out-of-group (0.0045 with it everywhere), max
            0.042 -> 0.031; live30 (LR down) median 0.032 -> 0.030, max 0.091 -> 0.111. Where no
            decrease is seen (a trunk alone, a run whose LR is not yet down) PRIOR stays: applied
            there too, UNFINISHED made them worse (trunk-only median 0.016 -> 0.023, live30 with
            the LR not down 0.025 -> 0.048). The sweep cases have a finished cooldown branch.
  INTERVAL_K  the 90% quantile of |error| / u over the reference cases (the bench calibrates
            each case's on the other groups' cases: leave-one-group-out). 2.70 over the first
            174 cases; 2.96 with the stretch protocol's 11 (a run cut at half its steps -> a
            longer run of its schedule), whose u was too small for the same K (coverage 73%).

Without curves the answer is a prior (fwlab/prior.py: the published L(N, D) fits, or the same
calibrated on published FineWeb-Edu runs), never this module's.

`loss_forecast_for` gives the loss per budget for the plan and the claims checker from curves (a
budget the source completed in the same setting is its measured value).
`backtest` checks the whole loss method on a finished fwlab sweep (a CPU-scale smoke test, judged
against `seed_floor`): forecast the longest budget's final loss from what 30% of its compute can
show, and compare with what it reached.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pandas as pd

from fwlab import laws, schedule
from fwlab.config import TrainConfig
from fwlab.errors import FwlabError
from fwlab.runs import load_runs

R_STAR = 15.4                      # Muennighoff et al. 2023, R*_D
LAMBDA = 0.999                     # Tissue et al. 2024's momentum decay (the `areas` helper)
PEAK_FRAC = 0.95                   # an eval counts as 'trunk' (constant-LR) when lr >= 0.95 x peak
LEVEL = 0.9                        # interval coverage
N_BOOT = 200                       # kept for callers; the interval is calibrated (INTERVAL_K)
OUTLIER_Z = 6.0                    # evals this many robust SDs off a first fit are dropped
MIN_POINTS = 6
# --- constants chosen on the published curves (benchmarks/bench_forecast.py; module docstring) --
FIT_FROM = 0.2                     # the fit starts at this share of the latest known step
WINDOWS = (0.05, 0.1, 0.2, 0.4)    # the fits start at these shares of the latest known step
ALPHA_FREE = (0.46, 0.15)          # the wide alpha prior of a group's own fit (the bench's)
_BASE = dict(alpha=(0.50, 0.01), log_c=(-3.5, 5.0), gamma=(0.6, 1.0), B=(0.17, 0.08))
PRIOR = {"wsd": dict(_BASE, beta=(2.0, 0.3)),      # targets with a WSD (stable, then decay) LR
         "other": dict(_BASE, beta=(0.15, 0.1))}   # cosine, constant, anything else
# no known run has finished its decay (a run still going, a trunk alone): how a decrease's gain
# grows is not measured, and the full-length fits of such runs sit here (module docstring)
UNFINISHED = dict(gamma=(1.5, 0.3), log_c=(-7.0, 2.0), B_scale=1.2)
PRIOR_SOURCE = "published curves"
INTERVAL_K = 2.96                  # the 90% half-width in units of u (bench: 2.96 over 185 cases)
STARTS = [(a, lc, 0.6, 0.6) for a in (0.35, 0.55) for lc in (-6.0, -3.0, -0.5)]
SCHEDULE_KEYS = ("schedule", "lr", "min_lr_frac", "warmup_iters", "cooldown_frac", "cooldown_shape")


# --- repetition ----------------------------------------------------------------------------------

def _enough_points(masks: list, where: str = "") -> list:
    """The fit masks, or a FwlabError when they leave fewer than MIN_POINTS evaluations to fit."""
    n_fit = sum(int(m.sum()) for m in masks)
    if n_fit < MIN_POINTS:
        raise FwlabError(f"too few validation points to fit a loss curve ({n_fit} after warm-up"
                         f"{where}, {MIN_POINTS} needed); evaluate more often (--eval-interval) "
                         f"or let the run go further")
    return masks

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
    """lr/peak of the run's updates 0..n-1, exactly as it trained (schedule.spec_from_config: its
    config.json fields or its own lr_schedule spec), on to its planned end (the spec's
    total_steps) where that lies beyond n, so that a run still going does not pass for a finished
    decay; and its schedule (the config fields, or {"lr_schedule": spec}); without either, from
    the logged train lines (each step at the latest logged lr), as far as n."""
    sched = {k: cfg.get(k) for k in SCHEDULE_KEYS}
    if cfg.get("lr_schedule") is not None or (all(
            sched[k] is not None for k in SCHEDULE_KEYS if k != "warmup_iters")
            and cfg.get("max_iters")):
        try:
            spec = schedule.spec_from_config(cfg)
            lr = schedule.lr_array(spec, max(n, int(spec["total_steps"]))) / spec["peak_lr"]
            return lr, ({"lr_schedule": spec} if cfg.get("lr_schedule") is not None else sched)
        except (FwlabError, ValueError, TypeError, ZeroDivisionError):
            pass
    tr = train.dropna(subset=["lr"]).sort_values("iter") if len(train) else train
    if not len(tr):
        return np.ones(n), None  # nothing says otherwise: treat as at peak
    peak = float(cfg.get("lr") or tr["lr"].max())
    pos = np.searchsorted(tr["iter"].to_numpy(), np.arange(1, n + 1), side="left")
    return tr["lr"].to_numpy()[np.clip(pos, 0, len(tr) - 1)] / peak, None


def _spec_annealed(spec: dict) -> bool:
    try:
        s = schedule.validate_spec(spec)
    except FwlabError:
        return False
    return s["kind"] in ("cosine", "wsd") and s["min_lr_frac"] < 0.5


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
        if pd.isna(tpi):
            continue  # no batch information: the points cannot be placed in tokens
        if unique is None or not np.isfinite(unique) or unique <= 0:
            unique = math.inf  # unknown unique tokens: taken as single-epoch (forecast_loss says so)
        ev = lab.evals[(lab.evals["run"] == run["run"]) & lab.evals["own"]]
        ev = ev[(ev["iter"] > 0) & (ev["tokens"] > 0)].dropna(subset=["val_loss"]).sort_values("iter")
        annealed = schedule.is_annealed(run["schedule"], cfg.get("min_lr_frac", 0)) or (
            cfg.get("lr_schedule") is not None and _spec_annealed(cfg["lr_schedule"]))
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


# --- the fit and the forecast (fwlab/laws.py has the laws themselves) ----------------------------
def warmup_end(lr: np.ndarray) -> int:
    """First step at which the LR reaches its peak (the end of any warm-up)."""
    top = np.flatnonzero(lr >= 0.999 * lr.max()) if len(lr) else np.zeros(1, int)
    return int(top[0]) if len(top) else 0


def fit_masks(curves, fit_from: float = FIT_FROM) -> list[np.ndarray]:
    """The points a fit uses: after each curve's warm-up and from `fit_from` of the latest known
    step on (the first evaluations are the fast initial descent, while the model learns token
    frequencies, which no law of this kind describes)."""
    last = max(int(c.steps.max(initial=0)) for c in curves)
    return [(c.steps > warmup_end(c.lr)) & (c.steps >= fit_from * last) for c in curves]


def _prior(prior: dict) -> tuple[laws.Prior, tuple]:
    return laws.Prior({k: prior[k][0] for k in laws.NONLIN["mpl"]},
                      {k: prior[k][1] for k in laws.NONLIN["mpl"]}), tuple(prior["B"])


def prior_for(kind: str | None) -> dict:
    """PRIOR of a target schedule kind (schedule spec `kind`): 'wsd', else 'other'."""
    return PRIOR["wsd" if kind == "wsd" else "other"]


def decay_finished(curve) -> bool:
    """Whether a known curve is evaluated to its run's end (within 2% of its steps) with the LR
    come down there: a finished cooldown, which measures how a decrease's gain grows."""
    n = len(curve.lr)
    return bool(len(curve.steps) and curve.steps.max() >= 0.98 * n
                and curve.lr[n - 1] < PEAK_FRAC * curve.lr.max())


def decay_begun(curve) -> bool:
    """Whether some evaluation of a known curve lies after the peak (warm-up excluded) where the
    LR has come below PEAK_FRAC of it."""
    if not len(curve.steps):
        return False
    peak = warmup_end(curve.lr)
    st = np.clip(curve.steps, 1, len(curve.lr)) - 1
    st = st[st > peak]
    return bool(len(st) and (curve.lr[st] < PEAK_FRAC * curve.lr.max()).any())


def unfinished_decay(known) -> bool:
    """A decay seen in part and finished nowhere in `known`: UNFINISHED's priors apply."""
    return any(decay_begun(c) for c in known) and not any(decay_finished(c) for c in known)


def forecast_curves(known, targets, prior: dict | None = None, target_kind: str | None = None,
                    level: float = LEVEL, scale: float | None = None,
                    windows=WINDOWS, despike: bool = True) -> dict:
    """The loss at the (last) step of each target curve (laws.Curve, no losses needed) from the
    known curves (laws.Curve with losses). The multi-power law is fitted from each of `windows`
    (a share of the latest known step) on, with the priors of `prior` (default: PRIOR of
    target_kind) on its exponents and on B; the forecast is the median of those fits'. Returns
    dict(val_loss, low, high, u (the spread the interval scales), drop_seen, fit (the middle
    window's parameters), n_spikes, unfinished (UNFINISHED's priors were taken))."""
    known = [c for c in known if len(c.steps)]
    prior = dict(prior or prior_for(target_kind))
    unfinished = unfinished_decay(known)
    if unfinished:
        prior.update(gamma=UNFINISHED["gamma"], log_c=UNFINISHED["log_c"],
                     B=(prior["B"][0] * UNFINISHED["B_scale"], prior["B"][1]))
    pr, bprior = _prior(prior)
    mid = sorted(windows)[len(windows) // 2]
    masks = _enough_points(fit_masks(known, mid), f" and the first {mid:.0%} of the steps")
    seen = laws.features(known, masks).drop_seen
    main = laws.fit("mpl", known, prior=pr, fit_mask=masks, b_prior=bprior, starts=STARTS)
    keep = [np.ones(len(c.steps), bool) for c in known]
    n_spikes = 0
    if despike:  # evaluations far off the first fit (loss spikes) are left out of every fit
        for c, m, k in zip(known, masks, keep):
            res = c.loss[m] - main.predict(laws.features([laws.Curve(c.lr, c.steps[m])]))
            mad = 1.4826 * np.median(np.abs(res - np.median(res))) if len(res) else 0.0
            off = np.abs(res - np.median(res)) > OUTLIER_Z * max(mad, 1e-4)
            k[np.flatnonzero(m)[off]] = False
            n_spikes += int(off.sum())
    ft = laws.features(targets)
    preds, fits = [], {}
    for ff in windows:
        mk = [m & k for m, k in zip(fit_masks(known, ff), keep)]
        if sum(int(m.sum()) for m in mk) < MIN_POINTS:
            continue
        f = main if ff == mid and not n_spikes else laws.fit(
            "mpl", known, prior=pr, fit_mask=mk, b_prior=bprior, starts=STARTS)
        fits[ff] = f
        preds.append(f.predict(ft))
    pred = np.median(np.vstack(preds), axis=0)
    ref = fits.get(mid, main)
    members = list(preds)
    if not seen:  # nothing measured B: its prior's ends are part of the spread
        mk = [m & k for m, k in zip(masks, keep)]
        for b in (max(bprior[0] - bprior[1], 0.0), bprior[0] + bprior[1]):
            members.append(laws.fit("mpl", known, prior=pr, fit_mask=mk, b_prior=(b, 1e-6),
                                    starts=STARTS[:2], noise=max(ref.sigma, 1e-4)).predict(ft))
    spread = np.std(np.vstack(members), axis=0)
    u = np.sqrt(spread ** 2 + ref.sigma ** 2)
    k = (INTERVAL_K if scale is None else scale) * normal_z(level) / normal_z(0.9)
    return dict(val_loss=pred, low=pred - k * u, high=pred + k * u, u=u, drop_seen=seen,
                fit=ref.params(), n_spikes=n_spikes, unfinished=unfinished)


def logo_scale(ratio, groups, level: float = LEVEL) -> np.ndarray:
    """Leave-one-group-out interval scale: per case, the `level` quantile of |error| / u over the
    cases of every other group (ratio: |error| / u per case). A half-width of that times u then
    covers the truth `level` of the time on groups the scale was not chosen on."""
    ratio, groups = np.asarray(ratio, float), np.asarray(groups)
    out = np.empty(len(ratio))
    for g in set(groups.tolist()):
        other = ratio[groups != g]
        out[groups == g] = np.quantile(other, level) if len(other) else np.nan
    return out


def _curves_of(points: pd.DataFrame, r_star: float) -> list:
    """laws.Curve per run of the points (its own evaluations on its schedule; repeated tokens
    worth less, Muennighoff et al.)."""
    out = []
    for _, g in points.sort_values("iter").groupby("run", sort=False):
        r = g.iloc[0]
        lr = np.asarray(r["lr"], float)
        tok = np.arange(1, len(lr) + 1) * float(r["tokens_per_iter"])
        worth = token_worth(tok, float(r["unique_tokens"]), r_star)
        out.append(laws.Curve(lr, g["iter"].to_numpy(int), g["val_loss"].to_numpy(float),
                              worth=worth))
    return out


def fit_points(points: pd.DataFrame, r_star: float = R_STAR, prior: dict | None = None,
               fit_from: float = FIT_FROM) -> laws.Fit:
    """The multi-power law fitted to the points (columns as `load_points`) after warm-up, with
    the exponents' priors (B left at 0 when no point has seen the LR come down)."""
    curves = _curves_of(points, r_star)
    masks = _enough_points(fit_masks(curves, fit_from))
    pr, bp = _prior(prior or PRIOR["other"])
    return laws.fit("mpl", curves, prior=pr, fit_mask=masks, starts=STARTS)


def schedule_of(points: pd.DataFrame) -> tuple[dict | None, int]:
    """The schedule of the points' longest run (its config.json fields, or its lr_schedule spec
    as {"lr_schedule": spec}) and its tokens/iter: what budgets are planned with by default."""
    r = points.loc[points["max_iters"].fillna(points["iter"]).astype(float).idxmax()]
    return r["sched"], int(r["tokens_per_iter"])


def budget_lr(sched: dict | None, n: int) -> np.ndarray:
    """lr/peak per update of a run of `n` iterations under `sched` (None: constant LR)."""
    n = max(int(n), 1)
    if not sched:
        return np.ones(n)
    if sched.get("lr_schedule") is not None:
        spec = schedule.with_total_steps(sched["lr_schedule"], n)
    else:
        spec = schedule.spec_from_config(dict(sched, max_iters=n))
    return schedule.lr_array(spec, n) / spec["peak_lr"]


def budget_lrs(iters, sched: dict | None) -> list[np.ndarray]:
    return [budget_lr(sched, n) for n in np.asarray(iters, dtype=int)]


def branch_advice(sched: dict | None, budgets, known_iter) -> str:
    """What pins an assumed cooldown gain down: one cooldown branch off the trunk, at the shortest
    budget the trunk has passed (else the shortest), and what it costs in iterations."""
    b = np.sort(np.asarray(budgets, float))
    passed = b[b <= float(known_iter)]
    n = int(round(passed[-1] if len(passed) else b[0]))
    frac = None
    if sched:
        frac = (schedule.validate_spec(sched["lr_schedule"]).get("cooldown_frac")
                if sched.get("lr_schedule") is not None else sched.get("cooldown_frac"))
    frac = float(frac) if frac else 0.2
    cost = int(round(frac * n))
    where = "from the trunk's checkpoint there" if len(passed) else "once the trunk gets there"
    return (f"finish one short cooldown branch to pin it down: the {n}-iteration budget's "
            f"{frac:.0%} cooldown ({cost} iterations, {cost / float(b[-1]):.0%} of the longest "
            f"budget's) {where}")


def forecast_loss(points: pd.DataFrame, tokens, unique_tokens, n_boot: int = N_BOOT,
                  level: float = LEVEL, seed: int = 0, r_star: float = R_STAR,
                  sched: dict | None = None, tokens_per_iter: int | None = None,
                  progress: bool = False) -> dict:
    """Final validation loss of runs of `tokens` tokens (array) on `unique_tokens` unique ones
    (None or nan: unknown, taken as single-epoch), from the points (module docstring). The runs
    follow `sched` at `tokens_per_iter` (default: those of the points' longest run). Returns
    dict(val_loss, low, high: arrays; method: str; fits; drop_assumed: bool). n_boot, seed and
    progress are accepted for compatibility: the interval is calibrated, not bootstrapped."""
    tokens = np.atleast_1d(np.asarray(tokens, dtype=float))
    if sched is None and tokens_per_iter is None:
        sched, tokens_per_iter = schedule_of(points)
    tokens_per_iter = int(tokens_per_iter or schedule_of(points)[1])
    unknown_u = unique_tokens is None or not np.isfinite(float(unique_tokens))
    U = math.inf if unknown_u else float(unique_tokens)
    pts = points.copy()
    pts["unique_tokens"] = pts["unique_tokens"].astype(float).fillna(math.inf)
    known = _curves_of(pts, r_star)
    targets = []
    for d in tokens:
        n = max(int(round(d / tokens_per_iter)), 1)
        lr = budget_lr(sched, n)
        worth = token_worth(np.arange(1, n + 1) * float(tokens_per_iter), U, r_star)
        targets.append(laws.Curve(lr, [n], worth=worth))
    kind = (schedule.validate_spec(sched["lr_schedule"])["kind"] if sched and sched.get(
        "lr_schedule") is not None else (sched or {}).get("schedule"))
    out = forecast_curves(known, targets, target_kind=kind, level=level)
    annealed_target = bool(sched) and (
        _spec_annealed(sched["lr_schedule"]) if sched.get("lr_schedule") is not None
        else schedule.is_annealed(sched.get("schedule"), sched.get("min_lr_frac")))
    runs = pts["run"].nunique()
    n_pts = sum(int(m.sum()) for m in fit_masks(known))
    method = (f"multi-power law (Luo et al. 2025) fitted to {n_pts} evals of {runs} run(s), "
              f"exponents with priors from {PRIOR_SOURCE}")
    if out["n_spikes"]:
        method += f" ({out['n_spikes']} spike(s) dropped)"
    if out["unfinished"]:
        method += ("; the LR's decrease is seen only in part, so how its gain grows takes the "
                   "unfinished-decay prior (UNFINISHED)")
    drop_assumed = not out["drop_seen"] and annealed_target
    if drop_assumed:
        method += ("; no evaluation after the LR came down, so the cooldown's gain is ASSUMED "
                   "(B from the prior, hence the wide interval): " + branch_advice(
                       sched, tokens / tokens_per_iter, points["iter"].max()))
    if (pts["unique_tokens"] == math.inf).any() or unknown_u:
        method += "; unknown unique tokens taken as single-epoch (no repetition discount)"
    elif (tokens > U).any() or (pts["tokens"] > pts["unique_tokens"]).any():
        method += f"; repeated tokens discounted (Muennighoff R*={r_star:g})"
    method += (f"; {level:.0%} interval calibrated by leave-one-group-out on published curves "
               f"(x{INTERVAL_K:g} the fit's spread)")
    return dict(val_loss=out["val_loss"], low=out["low"], high=out["high"], method=method,
                fits={"mpl": jsonable(out["fit"])}, drop_assumed=drop_assumed)


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
