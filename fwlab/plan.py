"""The plan (`fwlab plan`): hours and predicted final validation loss per iteration budget, side
by side, with the gain per extra hour over the next-smaller budget, and a recommendation: the
largest budget whose extra hour still buys more than `min_gain_per_hour` nats
(DEFAULT_MIN_GAIN_PER_HOUR, 0.01). The loss comes from fwlab/forecast.py (`loss_forecast_for`)
when curves are given (--from), else from a prior (fwlab/prior.py); hours from measured
tokens/s, or a named GPU's peak FLOPs x an MFU range (`gpu_hours`).

Throughput: fwlab/throughput.py measures this machine's tokens/s with the trainer's own step.

Plateau advice (`plateau`, `plateau_of`, `reconcile_plateau`): whether a run's validation loss is
still falling (slope over its last evaluations against that slope's standard error) is shown as
evidence, but the advice itself (keep training / cool down / a longer budget pays or not) comes
from the same forecast as the recommendation, so the two never disagree: the forecast fits every
evaluation of every run, the slope only the last few.

Coverage: a budget's tokens against the furthest the curves were evaluated (`coverage`). A budget
beyond them is an extrapolation of the law; beyond FAR_BEYOND x that, the plan says so loudly.
"""
from __future__ import annotations

import json
import math
import sys

import numpy as np
import pandas as pd

from fwlab import forecast as fc
from fwlab import prior as pr
from fwlab.config import PRESETS, parse_int_list
from fwlab.errors import FwlabError
from fwlab.runs import ENDED, load_runs
from fwlab.utils import atomic_write_json, fmt_tokens, parse_number

DEFAULT_MIN_GAIN_PER_HOUR = 0.01   # nats per extra hour below which a bigger budget is not worth it
DEFAULT_MFU_RANGE = (0.30, 0.50)   # assumed for a GPU this machine cannot measure
DEFAULT_BUDGETS = (6000, 10000, 15000, 20000)  # without --from: the reference scenario's
FAR_BEYOND = 2.0                   # budgets past this many times the curves' tokens: said loudly
PAST_TOL = 1.05                    # ... by more than this factor (an evaluation's spacing)
NEXT_STEP = 1.5                    # the forecast also weighs one budget this much past the largest


def gpu_hours(gpu: str, preset: str, iters: float, tokens_per_iter: int,
              mfu_range=DEFAULT_MFU_RANGE) -> dict:
    """Hours for `iters` iterations of `preset` on a named GPU that this machine cannot measure:
    tokens x FLOPs per token / (dense bf16 peak x MFU), over the assumed MFU range."""
    from fwlab import hardware  # here: it imports torch (~1 s), which only this and measuring need
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
    return float(fc.preset_model(preset).flops_per_token())


# --- the plan ------------------------------------------------------------------------------------
def plan(preset: str = "40m", data_tokens: float = 3.68e9, tokens_per_iter: int = 524_288,
         budgets=DEFAULT_BUDGETS, sources=(), tok_per_s: float | None = None,
         measure_iters: int = 10, device: str = "auto", dtype: str = "auto",
         compile: bool | None = None, micro_batch: int = 0, data: str | None = None,
         gpu: str | None = None, mfu_range=DEFAULT_MFU_RANGE,
         min_gain_per_hour: float = DEFAULT_MIN_GAIN_PER_HOUR, n_boot: int = fc.N_BOOT,
         level: float = fc.LEVEL, progress: bool = True, lab=None, points=None) -> dict:
    """Hours and predicted final val loss per budget, gain per extra hour, and a recommendation.

    Hours: `gpu` names a GPU from fwlab.hardware's table -> its peak x `mfu_range` (an interval);
    else `tok_per_s` when given, else measured here (measure_throughput). Loss: loss_forecast_for
    on the sources' curves, else prior.prior_for.
    `lab`, `points`: the sources already loaded (runs.load_runs, forecast.load_points), else
    they are loaded here, once.
    Returns a JSON-ready dict (see format_plan for what the keys mean)."""
    if isinstance(budgets, str):
        budgets = parse_int_list(budgets, "--budgets")
    else:  # through the same check as the flag: non-negative whole numbers
        budgets = parse_int_list(",".join(str(int(b)) for b in budgets), "budgets")
    budgets = sorted(budgets)
    if not budgets or min(budgets) < 1:
        raise FwlabError(f"budgets {budgets}: give positive iteration counts, e.g. 6000,10000")
    tokens_per_iter, data_tokens = int(tokens_per_iter), float(data_tokens)
    if tokens_per_iter < 1 or not data_tokens > 0:
        raise FwlabError(f"tokens_per_iter={tokens_per_iter}, data_tokens={data_tokens:g}: "
                         f"both must be positive")
    # nan would compare false with every gain (and inf refuse every step): the recommendation
    # would read as if it followed from the threshold
    min_gain_per_hour = parse_number(min_gain_per_hour, "--min-gain-per-hour")
    if min_gain_per_hour < 0:
        raise FwlabError(f"--min-gain-per-hour {min_gain_per_hour:g}: must be >= 0 (nats of val "
                         f"loss per extra hour)")
    # one forecast for the budgets and one step past the largest: the recommendation and the
    # advice about a longer budget (plateau) then come from the same draws
    probe = int(round(NEXT_STEP * budgets[-1])) if sources else None
    b = np.array(budgets + ([probe] if probe else []), dtype=float)
    if gpu:
        g = gpu_hours(gpu, preset, 1.0, tokens_per_iter, mfu_range)
        hours, h_lo, h_hi = b * g["hours"], b * g["hours_low"], b * g["hours_high"]
        thr = dict(source="gpu", gpu=gpu, tok_per_s=g["tok_per_s"], mfu=None,
                   peak_flops=g["peak_flops"], mfu_range=g["mfu_range"], method=g["method"])
    else:
        if tok_per_s is None:
            from fwlab.throughput import measure_throughput  # here: it imports torch (~1 s)
            m = measure_throughput(preset, tokens_per_iter, device, dtype, compile, measure_iters,
                                   micro_batch, data, progress=progress,
                                   tokens_to_train=int(budgets[-1]) * tokens_per_iter)
            thr = dict(source="measured", **m)
        else:
            thr = dict(source="given", tok_per_s=parse_number(tok_per_s, "--tok-per-s", positive=True),
                       method="given by the user")
        hours = b * tokens_per_iter / thr["tok_per_s"] / 3600
        h_lo = h_hi = hours
    cover, going = None, {}
    if sources:
        lab = load_runs(*sources) if lab is None else lab
        points = fc.load_points(lab=lab) if points is None else points
        if not len(points) and len(lab.evals):
            raise FwlabError(f"{', '.join(map(str, sources))}: its runs do not say how many unique "
                             f"tokens they trained on, which the forecast needs (an imported run "
                             f"without --train-tokens): re-import with --train-tokens N, or plan "
                             f"without --from")
        loss = fc.loss_forecast_for(list(b.astype(int)), tokens_per_iter, data_tokens, preset,
                                    sources, points=points, n_boot=n_boot, level=level,
                                    progress=progress)
        cover = coverage(points, b * tokens_per_iter, data_tokens)
        going = still_going(points, tokens_per_iter)
        if fc.schedule_of(points)[0] is None and (points["kind"] != "trunk").any():
            loss["method"] += ("; NOTE the runs' schedule is known only as their logged lr (no "
                               "schedule fields in config.json), so forecast budgets assume a "
                               "constant LR with no cooldown, while measured ones are what the "
                               "runs reached: gains between the two kinds are not comparable")
    else:
        loss = pr.prior_for(budgets, tokens_per_iter, data_tokens, preset)
    gain, extra, gph = step_gains(loss["val_loss"], hours)
    rows = []
    for i, it in enumerate(b.astype(int)):
        rows.append(dict(budget=int(it), tokens=int(it) * tokens_per_iter,
                         epochs=it * tokens_per_iter / data_tokens,
                         val_loss=float(loss["val_loss"][i]), val_loss_low=float(loss["low"][i]),
                         val_loss_high=float(loss["high"][i]), loss_basis=loss["row_basis"][i],
                         hours=float(hours[i]),
                         hours_low=float(h_lo[i]), hours_high=float(h_hi[i]),
                         gain=None if i == 0 else float(gain[i]),
                         extra_hours=None if i == 0 else float(extra[i]),
                         gain_per_hour=None if np.isnan(gph[i]) else float(gph[i]),
                         beyond_curves=None if cover is None else cover["ratio"][i],
                         own_end=going.get(int(it))))
    next_step = rows.pop() if probe else None
    if next_step is not None:  # law against law: a measured largest budget is not the law's value
        law = np.asarray(loss.get("forecast_val_loss", loss["val_loss"]), dtype=float)
        next_step["gain"] = float(law[-2] - law[-1])
        next_step["gain_per_hour"] = (next_step["gain"] / next_step["extra_hours"]
                                      if next_step["extra_hours"] else None)
    if loss["basis"] == "prior":
        interval = ("spread of the published fits" if loss.get("prior") == "published" else
                    "spread of the calibrated fits, widened by the FineWeb runs' spread")
    else:
        interval = f"{level:.0%}, calibrated on published curves"
    out = dict(preset=preset, n_params=fc.preset_params(preset),
               flops_per_token=preset_flops_per_token(preset), data_tokens=data_tokens,
               tokens_per_iter=tokens_per_iter, budgets=budgets, throughput=thr,
               loss_basis=loss["basis"], loss_method=loss["method"], interval=interval,
               prior=loss.get("prior"),
               min_gain_per_hour=float(min_gain_per_hour), rows=rows,
               recommendation=recommend(rows, min_gain_per_hour, next_step),
               next_step=next_step, sources=[str(s) for s in sources], plateau=[],
               coverage=None if cover is None else {k: v for k, v in cover.items()
                                                    if k != "ratio"})
    if sources:
        out["plateau"] = reconcile_plateau(plateau_of(lab, points), out, lab)
    return fc.jsonable(out)


def coverage(points: pd.DataFrame, tokens, data_tokens: float) -> dict:
    """How far each budget's `tokens` reach past the furthest evaluation of the curves: ratio
    (tokens / the curves' furthest tokens), the curves' furthest tokens and epochs, and the
    budgets' epochs against the curves' (the law extrapolates repetition too)."""
    reach = float(points["tokens"].max())
    # a run that does not say its unique tokens is taken to be on the plan's data
    unique = points["unique_tokens"].astype(float)
    unique = unique.where(np.isfinite(unique), float(data_tokens))
    reach_ep = float((points["tokens"] / unique).max())
    tok = np.asarray(tokens, dtype=float)
    return dict(ratio=[float(t / reach) for t in tok], curves_tokens=reach,
                curves_epochs=reach_ep, epochs=[float(t / data_tokens) for t in tok],
                far_beyond=FAR_BEYOND)


def still_going(points: pd.DataFrame, tokens_per_iter: int) -> dict[int, str]:
    """{planned max_iters: run} of the runs (of `points`, at the plan's batch) that have not
    reached their planned end. A budget that is such an end is forecast along a schedule the fit
    already knows (the bench's live protocol), not a longer run's."""
    at = points[(points["tokens_per_iter"] == tokens_per_iter) & points["max_iters"].notna()]
    last = at.groupby("run").agg(end=("max_iters", "first"), iter=("iter", "max"))
    going = {}
    for run, r in last[last["iter"] < last["end"]].iterrows():
        going.setdefault(int(r["end"]), str(run))
    return going


def step_gains(val_loss, hours):
    """Per budget (smallest first) against the next-smaller one: (gain = its val loss minus this
    one's, extra_hours, gain_per_hour = gain / extra_hours), as arrays, NaN for the first budget
    and gain_per_hour NaN where the extra hours are not positive. The one rule behind the plan's
    table and the report's decision table."""
    loss, h = np.asarray(val_loss, dtype=float), np.asarray(hours, dtype=float)
    gain, extra = np.full(len(loss), np.nan), np.full(len(loss), np.nan)
    gain[1:], extra[1:] = loss[:-1] - loss[1:], h[1:] - h[:-1]
    ok = extra > 0
    gph = np.full(len(loss), np.nan)
    gph[ok] = gain[ok] / extra[ok]
    return gain, extra, gph


def recommend(rows: list[dict], min_gain_per_hour: float, next_step: dict | None = None) -> dict:
    """Walk up the budgets while each step's extra hour buys more than min_gain_per_hour nats.
    `next_step`: the same forecast one step past the largest budget (plan's NEXT_STEP), to say
    whether a longer budget than any planned would still pay."""
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
    longer = None
    if reason is None:
        reason = (f"every step up still buys more than the {min_gain_per_hour:g} nats/hour "
                  f"threshold: the largest budget")
        if len(rows) > 1:
            reason += f" (last step: {pick['gain_per_hour']:.3g} nats/hour)"
        if next_step is not None and next_step.get("gain_per_hour") is not None:
            longer = next_step["gain_per_hour"] > min_gain_per_hour
            reason += (f"; the same forecast says going on to {next_step['budget']:,} would buy "
                       f"{next_step['gain_per_hour']:.3g} nats/hour, "
                       + ("so a longer budget would still pay" if longer else
                          "below the threshold: a longer budget buys little"))
    else:
        longer = False
    return dict(budget=pick["budget"], val_loss=pick["val_loss"], hours=pick["hours"],
                reason=reason, min_gain_per_hour=min_gain_per_hour, longer_pays=longer)


# --- the table and the CLI -----------------------------------------------------------------------
def _h(x) -> str:
    return "-" if x is None else (f"{x:,.0f}" if x >= 100 else f"{x:.3g}")


def _f(x, spec: str = ".3f") -> str:
    return "?" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def _list(rows) -> str:
    return ", ".join(f"{r['budget']:,}" for r in rows)


def coverage_lines(p: dict) -> list[str]:
    """What the plan says about budgets past the curves: nothing when every budget is within
    them, a note when some go past, a loud warning when some go past FAR_BEYOND x."""
    cov = p.get("coverage")
    if not cov:
        return []
    past = [r for r in p["rows"] if (r.get("beyond_curves") or 0) > PAST_TOL]
    if not past:
        return []
    # (a run cut at the evaluation nearest half its steps is about 2.0x: the live50 protocol)
    far = [r for r in past if r["beyond_curves"] > cov["far_beyond"] * PAST_TOL]
    reach = (f"the curves reach {fmt_tokens(cov['curves_tokens'])} tokens "
             f"({cov['curves_epochs']:.2f} epochs)")
    lines = [f"note: budget {r['budget']:,} is the planned end of {r['own_end']}, still going: "
             f"its loss is forecast along that run's own known schedule" for r in past
             if r.get("own_end")]
    if not far:
        return [f"note: budgets {_list(past)} go past what the "
                f"curves cover ({reach}): their losses are extrapolations of the fitted law"] + lines
    worst = max(far, key=lambda r: r["beyond_curves"])
    return lines + [f"*** FAR BEYOND THE CURVES: budgets {_list(far)} "
                    f"need up to {worst['beyond_curves']:.1f}x the tokens ({worst['epochs']:.1f} "
                    f"epochs) where {reach}; their losses are long extrapolations, not "
                    f"forecasts. Plan within the curves (--budgets), or train a longer run "
                    f"first ***"]


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
        what = ("PRIOR ONLY (calibrated on published FineWeb-Edu runs)"
                if p.get("prior") == "calibrated" else "INDICATIVE PRIOR ONLY (published fits)")
        lines.append(f"      *** {what} — give --from RUN_OR_SWEEP to forecast from your own "
                     f"curves ***")
    lines += coverage_lines(p)
    head = (f"{'budget':>8} {'tokens':>9} {'epochs':>6}  {'val loss':>8} {'[interval]':<16} "
            f"{'hours':>18} {'gain':>7} {'gain/extra h':>12}  loss from")
    lines += ["", head, "-" * len(head)]
    rec = p["recommendation"]
    for r in p["rows"]:
        hrs = _h(r["hours"]) if r["hours_low"] == r["hours_high"] else \
            f"{_h(r['hours'])} [{_h(r['hours_low'])}-{_h(r['hours_high'])}]"
        iv = f"[{_f(r['val_loss_low'])}, {_f(r['val_loss_high'])}]"
        gain = "-" if r["gain"] is None else "%.3f" % r["gain"]
        gph = "-" if r["gain_per_hour"] is None else "%.4g" % r["gain_per_hour"]
        basis = r.get("loss_basis", "")
        if (r.get("beyond_curves") or 0) > PAST_TOL:
            basis += f", {r['beyond_curves']:.1f}x past the curves"
        mark = " <- recommended" if r["budget"] == rec["budget"] else ""
        lines.append(f"{r['budget']:>8,} {fmt_tokens(r['tokens']):>9} {r['epochs']:>6.2f}  "
                     f"{_f(r['val_loss']):>8} {iv:<16} {hrs:>18} {gain:>7} {gph:>12}  "
                     f"{basis}{mark}")
    lines.append(f"(interval: {p['interval']}; gain/extra h in nats per hour)")
    lines += ["", f"recommendation: {rec['budget']:,} iterations (predicted val loss "
                  f"{_f(rec['val_loss'])}, {_h(rec['hours'])} h): {rec['reason']}"]
    for pl in p.get("plateau") or []:
        lines.append(f"plateau: {pl['run']} ({pl['status']}): {pl['advice']}")
    return "\n".join(lines)


def parse_mfu_range(s) -> list[float]:
    """--mfu LOW,HIGH (fractions of the peak) -> [low, high], for plan and check-claims."""
    mfu = [parse_number(x, "--mfu", positive=True) for x in str(s).split(",")]
    if len(mfu) != 2 or not all(0 < m <= 1 for m in mfu):
        raise FwlabError(f"--mfu {s}: give a range LOW,HIGH of fractions, e.g. 0.3,0.5")
    return mfu


def main_plan(args) -> int:
    """`fwlab plan` (flags: fwlab/cli.py)."""
    sources = list(args.from_ or [])
    lab = load_runs(*sources) if sources else None
    points = fc.load_points(lab=lab) if sources else None
    preset, data_tokens, tpi = args.preset, args.data_tokens, args.tokens_per_iter
    if sources and None in (preset, data_tokens, tpi):  # defaults from the curves' own setting
        st = fc.source_settings(points)
        if preset is None and st["presets"]:
            preset = st["presets"][0]
        elif preset is None and (preset := preset_of_params(lab)):
            print(f"plan: {', '.join(sources)} names no fwlab preset, but its model has "
                  f"{fc.preset_params(preset):,} parameters, exactly the {preset} preset's: hours "
                  f"and FLOPs are for {preset} (--preset to choose another)", file=sys.stderr)
        elif preset is None:
            print(f"plan: {', '.join(sources)} does not name a fwlab preset; hours and FLOPs are "
                  f"for the 40m preset (--preset to choose another)", file=sys.stderr)
        if data_tokens is None and st["unique_tokens"] and math.isfinite(st["unique_tokens"]):
            data_tokens = st["unique_tokens"]
        if tpi is None and len(st["tokens_per_iter"]) == 1:
            tpi = st["tokens_per_iter"][0]
    if data_tokens is None:
        why = (f" ({', '.join(sources)} does not say it: imported without --train-tokens?)"
               if sources else "")
        raise FwlabError(f"--data-tokens: give the number of unique training tokens (e.g. "
                         f"3.68e9){why}")
    n_tpi = parse_number(524_288 if tpi is None else tpi, "--tokens-per-iter", positive=True)
    if n_tpi != int(n_tpi):
        raise FwlabError(f"--tokens-per-iter {tpi}: must be an integer")
    mfu = parse_mfu_range(args.mfu)
    budgets = getattr(args, "budgets", None)
    if budgets is None:  # the sweep's own budgets, as its preset and tokens/iter; else the default
        budgets = sweep_budgets(lab) if sources else None
        if budgets:
            print(f"plan: budgets {', '.join(f'{b:,}' for b in budgets)} iterations, those of "
                  f"{', '.join(sources)} (--budgets to choose others)", file=sys.stderr)
        budgets = budgets or list(DEFAULT_BUDGETS)
    p = plan(preset=preset or "40m", data_tokens=parse_number(data_tokens, "--data-tokens", positive=True),
             tokens_per_iter=int(n_tpi), budgets=budgets, sources=sources,
             tok_per_s=args.tok_per_s, measure_iters=args.measure_iters, device=args.device,
             dtype=args.dtype, compile=args.compile, micro_batch=args.micro_batch, data=args.data,
             gpu=args.gpu, mfu_range=mfu, min_gain_per_hour=args.min_gain_per_hour,
             progress=not args.json, lab=lab, points=points)
    if args.out:
        atomic_write_json(args.out, p)
    print(json.dumps(p, indent=2) if args.json else format_plan(p))
    return 0


def preset_of_params(lab) -> str | None:
    """The fwlab preset whose parameter count is exactly the one every run that states it has
    (an imported run's --params), or None: the same count is the same GPT-2 shape in practice
    (llm.c's d12 is the 124m preset's 124,475,904)."""
    counts = {int(v) for v in lab.runs["n_params"].dropna()} if "n_params" in lab.runs else set()
    if len(counts) != 1:
        return None
    n = counts.pop()
    return next((p for p in PRESETS if fc.preset_params(p) == n), None)


def sweep_budgets(lab) -> list[int]:
    """The budgets the runs of `lab` stand for (runs.load_runs' is_budget rows), else the max_iters
    of its runs."""
    r = lab.runs
    b = r[r["is_budget"]]["max_iters"].dropna() if "is_budget" in r else r["max_iters"].dropna()
    if not len(b):
        b = r["max_iters"].dropna()
    return sorted({int(v) for v in b})


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


def plateau_of(lab, points: pd.DataFrame, last: int = 6) -> list[dict]:
    """plateau() for every unfinished run of `lab` (runs.load_runs) on its latest evaluations;
    when all have finished, for the one with the most peak-LR evaluations among `points`
    (forecast.load_points of the same runs: the trunk of a wsd sweep) on those."""
    running = lab.runs[~lab.runs["status"].isin(ENDED)]
    out = []
    for _, r in running.iterrows():
        ev = lab.evals[(lab.evals["run"] == r["run"]) & lab.evals["own"]]
        out.append(dict(run=r["run"], status=r["status"], **plateau(ev, last)))
    if not out:
        t = points[points["kind"] == "trunk"]
        if len(t):
            run = t.groupby("run").size().idxmax()
            status = lab.runs.set_index("run").loc[run, "status"]
            out.append(dict(run=run, status=status,
                            **plateau(t[t["run"] == run], last, finished=True)))
    return out


def reconcile_plateau(pls: list[dict], p: dict, lab) -> list[dict]:
    """plateau_of's rows with their advice taken from the plan's own forecast (`p`: plan()'s dict,
    its recommendation and next_step), the slope test kept as evidence: `plateaued` then says
    whether more iterations (a running run) or a longer budget (a finished sweep) buy less than
    the threshold per hour by that forecast; `slope_flat` is the slope test's own answer."""
    rec, thr = p["recommendation"], p["min_gain_per_hour"]
    largest = max(r["budget"] for r in p["rows"])
    out = []
    for pl in pls:
        pl = dict(pl)
        flat = pl.get("plateaued")
        if pl.get("slope_per_1k_iters") is not None:
            evidence = (f"its last {pl['n']} evaluations fall {pl['slope_per_1k_iters']:+.4f}"
                        f" ± {pl['slope_stderr']:.4f} nats per 1k iterations "
                        f"({'not significantly' if flat else 'significantly'}, by that test alone)")
        else:
            evidence = pl["advice"]
        pl["slope_flat"] = flat
        if pl["status"] in ENDED:
            if rec.get("longer_pays"):
                ns = p["next_step"]
                pl["plateaued"] = False
                pl["advice"] = (f"a longer budget than {largest:,} would still pay by the "
                                f"forecast ({ns['budget']:,} iterations: {ns['gain_per_hour']:.3g} "
                                f"nats/hour, above {thr:g}); {evidence}")
            else:
                pl["plateaued"] = True
                pl["advice"] = (f"a longer budget buys little by the forecast (past "
                                f"{rec['budget']:,} iterations each step buys under {thr:g} "
                                f"nats/hour); {evidence}")
        else:
            ev = lab.evals[lab.evals["run"] == pl["run"]]
            at = int(pl.get("last_iter") or (ev["iter"].max() if len(ev) else 0))
            if rec["budget"] > at or rec.get("longer_pays"):
                pl["plateaued"] = False
                pl["advice"] = (f"keep training: the forecast recommends {rec['budget']:,} "
                                f"iterations (it is at {at:,}); {evidence}")
            else:
                pl["plateaued"] = True
                pl["advice"] = (f"by the forecast, iterations past {rec['budget']:,} buy under "
                                f"{thr:g} nats/hour and it is at {at:,}: cool down (anneal) now, or "
                                f"stop; {evidence}")
        pl["advice_from"] = "the plan's forecast (the slope test is evidence only)"
        out.append(pl)
    return out
