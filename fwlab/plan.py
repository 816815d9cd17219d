"""The plan (`fwlab plan`): hours and predicted final validation loss per iteration budget, side
by side, with the gain per extra hour over the next-smaller budget, and a recommendation: the
largest budget whose extra hour still buys more than `min_gain_per_hour` nats
(DEFAULT_MIN_GAIN_PER_HOUR, 0.01). The loss comes from fwlab/forecast.py (`loss_forecast_for`);
hours from measured tokens/s, or a named GPU's peak FLOPs x an MFU range (`gpu_hours`).

Throughput: fwlab/throughput.py measures this machine's tokens/s with the trainer's own step.

Plateau advice (`plateau`, `plateau_of`): whether a running run's validation loss is still falling
(slope over its last evaluations against that slope's standard error).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from fwlab import forecast as fc
from fwlab.config import parse_int_list
from fwlab.errors import FwlabError
from fwlab.runs import ENDED, load_runs
from fwlab.utils import atomic_write_json, fmt_tokens, parse_number

DEFAULT_MIN_GAIN_PER_HOUR = 0.01   # nats per extra hour below which a bigger budget is not worth it
DEFAULT_MFU_RANGE = (0.30, 0.50)   # assumed for a GPU this machine cannot measure


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
         budgets=(6000, 10000, 15000, 20000), sources=(), tok_per_s: float | None = None,
         measure_iters: int = 10, device: str = "auto", dtype: str = "auto",
         compile: bool | None = None, micro_batch: int = 0, data: str | None = None,
         gpu: str | None = None, mfu_range=DEFAULT_MFU_RANGE,
         min_gain_per_hour: float = DEFAULT_MIN_GAIN_PER_HOUR, n_boot: int = fc.N_BOOT,
         level: float = fc.LEVEL, progress: bool = True, lab=None, points=None) -> dict:
    """Hours and predicted final val loss per budget, gain per extra hour, and a recommendation.

    Hours: `gpu` names a GPU from fwlab.hardware's table -> its peak x `mfu_range` (an interval);
    else `tok_per_s` when given, else measured here (measure_throughput). Loss: loss_forecast_for.
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
    b = np.array(budgets, dtype=float)
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
                                   tokens_to_train=int(b.max()) * tokens_per_iter)
            thr = dict(source="measured", **m)
        else:
            thr = dict(source="given", tok_per_s=parse_number(tok_per_s, "--tok-per-s", positive=True),
                       method="given by the user")
        hours = b * tokens_per_iter / thr["tok_per_s"] / 3600
        h_lo = h_hi = hours
    if sources:
        lab = load_runs(*sources) if lab is None else lab
        points = fc.load_points(lab=lab) if points is None else points
    loss = fc.loss_forecast_for(budgets, tokens_per_iter, data_tokens, preset, sources,
                                points=points, n_boot=n_boot, level=level, progress=progress)
    gain, extra, gph = step_gains(loss["val_loss"], hours)
    rows = []
    for i, it in enumerate(budgets):
        rows.append(dict(budget=it, tokens=it * tokens_per_iter,
                         epochs=it * tokens_per_iter / data_tokens,
                         val_loss=float(loss["val_loss"][i]), val_loss_low=float(loss["low"][i]),
                         val_loss_high=float(loss["high"][i]), loss_basis=loss["row_basis"][i],
                         hours=float(hours[i]),
                         hours_low=float(h_lo[i]), hours_high=float(h_hi[i]),
                         gain=None if i == 0 else float(gain[i]),
                         extra_hours=None if i == 0 else float(extra[i]),
                         gain_per_hour=None if np.isnan(gph[i]) else float(gph[i])))
    out = dict(preset=preset, n_params=fc.preset_params(preset),
               flops_per_token=preset_flops_per_token(preset), data_tokens=data_tokens,
               tokens_per_iter=tokens_per_iter, budgets=budgets, throughput=thr,
               loss_basis=loss["basis"], loss_method=loss["method"],
               interval=("spread of the published fits" if loss["basis"] == "prior"
                         else f"{level:.0%} bootstrap"),
               min_gain_per_hour=float(min_gain_per_hour), rows=rows,
               recommendation=recommend(rows, min_gain_per_hour),
               sources=[str(s) for s in sources], plateau=[])
    if sources:
        out["plateau"] = plateau_of(lab, points)
    return fc.jsonable(out)


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
        reason = (f"every step up still buys more than the {min_gain_per_hour:g} nats/hour "
                  f"threshold: the largest budget")
        if len(rows) > 1:
            reason += f" (last step: {pick['gain_per_hour']:.3g} nats/hour)"
    return dict(budget=pick["budget"], val_loss=pick["val_loss"], hours=pick["hours"],
                reason=reason, min_gain_per_hour=min_gain_per_hour)


# --- the table and the CLI -----------------------------------------------------------------------
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
        if data_tokens is None and st["unique_tokens"]:
            data_tokens = st["unique_tokens"]
        if tpi is None and len(st["tokens_per_iter"]) == 1:
            tpi = st["tokens_per_iter"][0]
    if data_tokens is None:
        raise FwlabError("--data-tokens: give the number of unique training tokens (e.g. 3.68e9)")
    n_tpi = parse_number(524_288 if tpi is None else tpi, "--tokens-per-iter", positive=True)
    if n_tpi != int(n_tpi):
        raise FwlabError(f"--tokens-per-iter {tpi}: must be an integer")
    mfu = parse_mfu_range(args.mfu)
    p = plan(preset=preset or "40m", data_tokens=parse_number(data_tokens, "--data-tokens", positive=True),
             tokens_per_iter=int(n_tpi), budgets=args.budgets, sources=sources,
             tok_per_s=args.tok_per_s, measure_iters=args.measure_iters, device=args.device,
             dtype=args.dtype, compile=args.compile, micro_batch=args.micro_batch, data=args.data,
             gpu=args.gpu, mfu_range=mfu, min_gain_per_hour=args.min_gain_per_hour,
             progress=not args.json, lab=lab, points=points)
    if args.out:
        atomic_write_json(args.out, p)
    print(json.dumps(p, indent=2) if args.json else format_plan(p))
    return 0


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
