"""Learning-rate schedules: linear warmup, then cosine, constant, or WSD (warmup-stable-decay).

Iterations are counted from 0: `lr_at(it, cfg)` is the rate of the optimizer step that takes the
model from `it` completed iterations to `it + 1` (metrics.jsonl logs it on the line with
`"iter": it + 1`). `lr_at(max_iters, cfg)` is the end value (the floor for cosine and WSD).

WSD (Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training
Durations"): constant after warmup, then a cooldown over the last `cooldown_frac` of max_iters to
`min_lr_frac * lr`, linear or 1-sqrt shaped. Its point: one constant-LR trunk serves every budget B,
each budget's run being a short cooldown branch that starts from the trunk's checkpoint at
`cooldown_start(B, cooldown_frac)`. Before that iteration a branch's LR equals the trunk's exactly,
provided both use the same warmup: pass `warmup_iters` explicitly to every run of a sweep, since the
default depends on max_iters.

Beyond fwlab's own three, `lr_array(spec, n)` evaluates a schedule spec: one parametric form
(warmup, stable phase, decay of any length to any floor in any of five shapes, or an explicit list)
that expresses fwlab's schedules exactly (spec_from_config) and those of the published runs fwlab
imports (spec_from_reference); `with_total_steps` moves a spec to another horizon.
"""
from __future__ import annotations

import math

import numpy as np

from fwlab.errors import FwlabError


def default_warmup(max_iters: int) -> int:
    """Warmup used when cfg.warmup_iters is None: 5% of the run (as the reference step's
    `reference_lr`), at least 1, at most 1000 iterations (GPT-2-scale runs need no more)."""
    return max(1, min(1000, max_iters // 20))


def warmup_of(cfg) -> int:
    return default_warmup(cfg.max_iters) if cfg.warmup_iters is None else cfg.warmup_iters


def cooldown_start(max_iters: int, cooldown_frac: float) -> int:
    """First iteration of a WSD cooldown: the iteration a branch of budget `max_iters` starts from."""
    return max_iters - int(round(cooldown_frac * max_iters))


def lr_at(it: int, cfg) -> float:
    """Learning rate of step `it` (0-based) under cfg.schedule; cfg is a TrainConfig (or anything with
    lr, min_lr_frac, max_iters, warmup_iters, schedule, cooldown_frac, cooldown_shape)."""
    peak, floor = cfg.lr, cfg.lr * cfg.min_lr_frac
    warmup = warmup_of(cfg)
    if it < warmup:
        return peak * (it + 1) / warmup
    if cfg.schedule == "constant":
        return peak
    if cfg.schedule == "cosine":
        progress = min(1.0, (it - warmup) / max(1, cfg.max_iters - warmup))
        return peak - (peak - floor) * 0.5 * (1.0 - math.cos(math.pi * progress))
    if cfg.schedule == "wsd":
        start = cooldown_start(cfg.max_iters, cfg.cooldown_frac)
        if it < start:
            return peak
        progress = min(1.0, (it - start) / max(1, cfg.max_iters - start))
        if cfg.cooldown_shape == "linear":
            decayed = progress
        elif cfg.cooldown_shape == "1-sqrt":
            decayed = math.sqrt(progress)
        else:
            raise ValueError(f"unknown cooldown shape {cfg.cooldown_shape!r}")
        # written so that progress 0 gives exactly `peak`: a branch's first step sees the trunk's LR
        return peak - (peak - floor) * decayed
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


# --- the general parametric form: a schedule spec -------------------------------------------------
#
# A spec is a small JSON dict that describes any schedule fwlab trains with or reads from another
# trainer's run (stored in config.json as `lr_schedule`). Step s is the number of updates done;
# lr_array(spec, n)[s] is the rate of the update that follows step s (as lr_at and the `lr` column
# of published curves). The phases, in order of precedence:
#
#   warmup   s < warmup_steps: from warmup_from x peak_lr up to peak_lr, shape linear or cosine, with
#            u = (s+1)/W (nanoGPT, llm.c, fwlab: reaches peak at W-1), s/W (epfml: peak at W) or
#            s/(W-1) (numpy linspace, torch OneCycleLR: first value exactly the start, peak at W-1)
#   stable   s < decay_start: peak_lr
#   decay    x = (s - decay_start) / decay_steps clamped to [0, 1] (decay_steps 0: a step drop),
#            lr = peak - (peak - floor) * d(x), floor = min_lr_frac x peak_lr, with
#            d = x (linear), sqrt(x) (1-sqrt), (1 - cos(pi x)) / 2 (cosine), 1 (step) or
#            lr = peak * (floor/peak)**x (exp); after the decay the floor holds
#   float32  the warmup and a cosine decay computed in float32 arithmetic (llm.c's C code)
#
# or, for a schedule no formula fits, {"kind": "explicit", "lrs": [...]} (the last value holds).
# `kind` (constant, cosine, wsd, two_stage, explicit) names the family, which says how the schedule
# follows a change of horizon (with_total_steps); `total_steps` is the planned number of updates.

KINDS = ("constant", "cosine", "wsd", "two_stage", "explicit")
WARMUP_SHAPES = ("linear", "cosine")
WARMUP_CONVENTIONS = ("(s+1)/W", "s/W", "s/(W-1)")
DECAY_SHAPES = ("linear", "1-sqrt", "cosine", "exp", "step")
SPEC_FIELDS = ("kind", "peak_lr", "total_steps", "warmup_steps", "warmup_shape", "warmup_from",
               "warmup_convention", "decay_start", "decay_steps", "decay_shape", "min_lr_frac",
               "float32", "cooldown_frac")
SPEC_DEFAULTS = dict(warmup_steps=0, warmup_shape="linear", warmup_from=0.0,
                     warmup_convention="(s+1)/W", decay_start=None, decay_steps=0,
                     decay_shape="linear", min_lr_frac=0.0, float32=False, cooldown_frac=None)


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate_spec(spec) -> dict:
    """The spec with its defaults filled in; FwlabError naming the first bad field otherwise."""
    if not isinstance(spec, dict):
        raise FwlabError(f"lr_schedule {spec!r}: expected a dict with a 'kind' field")

    def bad(name, why):
        raise FwlabError(f"lr_schedule {name}={spec.get(name)!r}: {why}")

    kind = spec.get("kind")
    if kind not in KINDS:
        bad("kind", f"choose one of {', '.join(KINDS)}")
    if kind == "explicit":
        lrs = spec.get("lrs")
        if not isinstance(lrs, list) or not lrs or not all(_num(v) and v >= 0 for v in lrs):
            raise FwlabError("lr_schedule lrs: an explicit schedule needs a non-empty list of "
                             "finite learning rates >= 0")
        unknown = sorted(set(spec) - {"kind", "lrs", "total_steps"})
        if unknown:
            bad(unknown[0], "unknown field for an explicit schedule")
        return {"kind": kind, "lrs": [float(v) for v in lrs],
                "total_steps": spec.get("total_steps", len(lrs))}
    unknown = sorted(set(spec) - set(SPEC_FIELDS))
    if unknown:
        bad(unknown[0], f"unknown field; known: {', '.join(SPEC_FIELDS)}")
    s = SPEC_DEFAULTS | dict(spec)
    if not (_num(s.get("peak_lr")) and s["peak_lr"] > 0):
        bad("peak_lr", "must be a number > 0")
    if not (isinstance(s.get("total_steps"), int) and s["total_steps"] > 0):
        bad("total_steps", "must be a positive integer")
    if not (isinstance(s["warmup_steps"], int) and not isinstance(s["warmup_steps"], bool)
            and s["warmup_steps"] >= 0):
        bad("warmup_steps", "must be an integer >= 0")
    if s["warmup_shape"] not in WARMUP_SHAPES:
        bad("warmup_shape", f"choose one of {', '.join(WARMUP_SHAPES)}")
    if s["warmup_convention"] not in WARMUP_CONVENTIONS:
        bad("warmup_convention", f"choose one of {', '.join(WARMUP_CONVENTIONS)}")
    if s["warmup_convention"] == "s/(W-1)" and s["warmup_steps"] == 1:
        bad("warmup_steps", "must be 0 or >= 2 with warmup_convention s/(W-1)")
    if not (_num(s["warmup_from"]) and 0 <= s["warmup_from"] <= 1):
        bad("warmup_from", "must be a fraction of peak_lr in [0, 1]")
    if s["decay_start"] is None:
        s["decay_start"] = s["total_steps"]
    if not (_num(s["decay_start"]) and s["decay_start"] >= 0):
        bad("decay_start", "must be a number of steps >= 0")
    if not (_num(s["decay_steps"]) and s["decay_steps"] >= 0):
        bad("decay_steps", "must be a number of steps >= 0")
    if s["decay_shape"] not in DECAY_SHAPES:
        bad("decay_shape", f"choose one of {', '.join(DECAY_SHAPES)}")
    if not (_num(s["min_lr_frac"]) and 0 <= s["min_lr_frac"] <= 1):
        bad("min_lr_frac", "must be a fraction of peak_lr in [0, 1]")
    if s["decay_shape"] == "exp" and s["min_lr_frac"] <= 0:
        bad("min_lr_frac", "an exp decay needs a floor > 0")
    if not isinstance(s["float32"], bool):
        bad("float32", "must be true or false")
    if s["float32"] and (s["warmup_convention"] != "(s+1)/W" or s["warmup_from"] != 0
                         or s["warmup_shape"] != "linear" or s["decay_shape"] != "cosine"):
        bad("float32", "float32 arithmetic is defined for llm.c's schedule only: linear warmup "
                       "(s+1)/W from 0 and a cosine decay")
    if s["cooldown_frac"] is not None and not (_num(s["cooldown_frac"]) and 0 <= s["cooldown_frac"] <= 1):
        bad("cooldown_frac", "must be in [0, 1] or null")
    return s


def _cos(x: np.ndarray) -> np.ndarray:
    """math.cos of each value: the libm result lr_at gets (numpy's own cos may differ in the last
    bit, and spec_from_config promises lr_at's floats exactly)."""
    return np.fromiter((math.cos(v) for v in x.tolist()), dtype=np.float64, count=len(x))


def _warmup(s: dict, steps: np.ndarray) -> np.ndarray:
    peak, W, start = s["peak_lr"], s["warmup_steps"], s["warmup_from"]
    if s["float32"]:  # llm.c: lr * (step+1) / warmup in float32
        f32 = np.float32
        return (f32(peak) * (steps + 1).astype(f32) / f32(W)).astype(np.float64)
    conv = s["warmup_convention"]
    if conv == "(s+1)/W":
        num, den = steps + 1.0, float(W)
    elif conv == "s/W":
        num, den = steps.astype(float), float(W)
    else:
        num, den = steps.astype(float), float(W - 1)
    if s["warmup_shape"] == "cosine":  # OneCycleLR's cosine annealing from start to peak
        a = peak * start
        return peak + (a - peak) / 2.0 * (_cos(np.pi * (num / den)) + 1)
    if start == 0:
        return peak * num / den  # the order of lr_at's peak * (it + 1) / warmup: the same floats
    u = num / den
    return peak * (u + (1 - u) * start)


def _decay(s: dict, steps: np.ndarray) -> np.ndarray:
    peak = s["peak_lr"]
    floor = peak * s["min_lr_frac"]
    D, N, shape = s["decay_start"], s["decay_steps"], s["decay_shape"]
    if N == 0 or shape == "step":
        return np.full(len(steps), floor)
    if s["float32"]:  # llm.c: cosine in float32, cos itself in double on the float32 angle
        f32 = np.float32
        ratio = (steps - D).astype(f32) / f32(N)
        ratio = np.minimum(ratio, f32(1.0))
        angle = (np.pi * ratio.astype(np.float64)).astype(f32)
        coeff = f32(0.5) * (f32(1.0) + _cos(angle.astype(np.float64)).astype(f32))
        mn = f32(peak) * f32(s["min_lr_frac"])
        return (mn + coeff * (f32(peak) - mn)).astype(np.float64)
    x = np.minimum(1.0, (steps - D) / N)
    if shape == "exp":
        return peak * (floor / peak) ** x
    if shape == "linear":
        d = x
    elif shape == "1-sqrt":
        d = np.sqrt(x)
    else:
        d = 0.5 * (1.0 - _cos(np.pi * x))
    # as lr_at writes it: progress 0 gives exactly peak (a branch's first step sees its trunk's lr)
    return peak - (peak - floor) * d


def lr_array(spec: dict, n: int) -> np.ndarray:
    """Learning rates of steps 0..n-1 (float64): entry s is the rate of the update that follows the
    evaluation at step s (s updates done), as lr_at(s, cfg) and the reference curves' `lr` column."""
    s = validate_spec(spec)
    n = int(n)
    if n < 0:
        raise FwlabError(f"lr_array: n={n} must be >= 0")
    if s["kind"] == "explicit":
        lrs = np.asarray(s["lrs"], dtype=np.float64)
        return np.concatenate([lrs[:n], np.full(max(0, n - len(lrs)), lrs[-1])])
    steps = np.arange(n)
    out = np.full(n, float(s["peak_lr"]))
    W, D = s["warmup_steps"], s["decay_start"]
    dec = (steps >= D) & (steps >= W)
    out[dec] = _decay(s, steps[dec])
    warm = steps < W
    out[warm] = _warmup(s, steps[warm])
    return out


def spec_from_config(cfg) -> dict:
    """The spec of a fwlab TrainConfig (or its config.json dict): lr_array(spec, n) equals
    [lr_at(i, cfg) for i in range(n)] exactly. A config.json dict that carries its own spec
    (`lr_schedule`, as an imported run's does) gives that spec."""
    if isinstance(cfg, dict) and cfg.get("lr_schedule") is not None:
        return validate_spec(cfg["lr_schedule"])
    get = (lambda k, d=None: cfg.get(k, d)) if isinstance(cfg, dict) else (
        lambda k, d=None: getattr(cfg, k, d))
    from fwlab.config import TrainConfig
    dflt = TrainConfig()
    vals = {k: get(k, getattr(dflt, k)) for k in ("schedule", "lr", "min_lr_frac", "warmup_iters",
                                                  "max_iters", "cooldown_frac", "cooldown_shape")}
    T = vals["max_iters"]
    if not (isinstance(T, int) and T > 0):
        raise FwlabError(f"max_iters={T!r}: must be a positive integer")
    W = default_warmup(T) if vals["warmup_iters"] is None else vals["warmup_iters"]
    base = dict(peak_lr=float(vals["lr"]), total_steps=T, warmup_steps=int(W), warmup_shape="linear",
                warmup_from=0.0, warmup_convention="(s+1)/W", min_lr_frac=float(vals["min_lr_frac"]))
    sch = vals["schedule"]
    if sch == "constant":
        spec = dict(kind="constant", **base, decay_start=T, decay_steps=0, decay_shape="step")
        spec["min_lr_frac"] = 1.0  # lr_at holds the peak for ever
    elif sch == "cosine":
        spec = dict(kind="cosine", **base, decay_start=W, decay_steps=max(1, T - W),
                    decay_shape="cosine")
    elif sch == "wsd":
        if vals["cooldown_shape"] not in ("linear", "1-sqrt"):
            raise FwlabError(f"cooldown_shape={vals['cooldown_shape']!r}: choose linear or 1-sqrt")
        cf = vals["cooldown_frac"]  # TrainConfig's range; inf would be an OverflowError below
        if isinstance(cf, bool) or not isinstance(cf, (int, float)) or not 0 < cf <= 1:
            raise FwlabError(f"cooldown_frac={cf!r}: must be in (0, 1]")
        start = cooldown_start(T, cf)
        spec = dict(kind="wsd", **base, decay_start=start, decay_steps=max(1, T - start),
                    decay_shape=vals["cooldown_shape"], cooldown_frac=float(vals["cooldown_frac"]))
    else:
        raise FwlabError(f"schedule={sch!r}: choose one of cosine, wsd, constant")
    return validate_spec(spec)


def spec_from_reference(schedule: dict) -> dict:
    """The spec of a published run's schedule record (reference-curves run.json `schedule`), for
    every `impl` there; FwlabError for an impl it does not know."""
    sch = schedule
    impl = sch.get("impl")
    peak, T = float(sch["peak_lr"]), int(sch["total_steps"])
    W = int(sch.get("warmup_steps") or 0)
    if impl in ("llmc_cosine_float32", "nanogpt_cosine"):
        E = int(sch["decay_end"])
        spec = dict(kind="cosine", peak_lr=peak, total_steps=T, warmup_steps=W,
                    decay_start=W, decay_steps=E - W, decay_shape="cosine",
                    min_lr_frac=float(sch["min_lr_frac"]), float32=impl == "llmc_cosine_float32")
    elif impl == "torch_onecycle_cos":
        # OneCycleLR: cosine from peak/div_factor up to peak at step W-1, cosine down to min_lr at T-1
        initial = peak / sch["div_factor"]
        mn = sch["min_lr"] if sch.get("min_lr") is not None else initial / sch["final_div_factor"]
        spec = dict(kind="cosine", peak_lr=peak, total_steps=T, warmup_steps=W, warmup_shape="cosine",
                    warmup_from=1.0 / sch["div_factor"], warmup_convention="s/(W-1)",
                    decay_start=W - 1, decay_steps=T - W, decay_shape="cosine", min_lr_frac=mn / peak)
    elif impl == "epfml_wsd":
        n_anneal = int(sch["cooldown_frac"] * T)
        spec = dict(kind="wsd" if n_anneal else "constant", peak_lr=peak, total_steps=T,
                    warmup_steps=W, warmup_from=1.0 / sch["init_div_factor"], warmup_convention="s/W",
                    decay_start=T - n_anneal, decay_steps=n_anneal,
                    decay_shape=sch["cooldown_shape"] if n_anneal else "step",
                    min_lr_frac=float(sch["final_lr_factor"]), cooldown_frac=float(sch["cooldown_frac"]))
    elif impl == "mng_trapezoid":
        WD = int(sch["cooldown_steps"])
        spec = dict(kind="wsd", peak_lr=peak, total_steps=T, warmup_steps=W, decay_start=T - WD,
                    decay_steps=WD, decay_shape="linear", min_lr_frac=0.0, cooldown_frac=WD / T)
    elif impl in ("mng_stable_linear", "mng_cooldown_floor"):
        cf = float(sch["cooldown_frac"])
        floor = float(sch.get("min_lr_frac") or 0.0) if impl == "mng_cooldown_floor" else 0.0
        if impl == "mng_cooldown_floor":
            W = 0
        # the cooldown starts where s/T reaches 1 - cooldown_frac: not always a whole step
        spec = dict(kind="wsd", peak_lr=peak, total_steps=T, warmup_steps=W,
                    decay_start=T - cf * T, decay_steps=cf * T, decay_shape="linear",
                    min_lr_frac=floor, cooldown_frac=cf)
    elif impl == "mpl_numpy":
        kind = sch["mpl_kind"]
        base = dict(peak_lr=peak, total_steps=T, warmup_steps=W, warmup_convention="s/(W-1)")
        if kind == "constant":
            spec = dict(kind="constant", **base, decay_start=T, decay_shape="step", min_lr_frac=1.0)
        elif kind == "cosine":
            spec = dict(kind="cosine", **base, decay_start=W, decay_steps=T - W, decay_shape="cosine",
                        min_lr_frac=sch["end_lr"] / peak)
        elif kind == "two_stage":
            spec = dict(kind="two_stage", **base, decay_start=int(sch["stage_a_steps"]),
                        decay_shape="step", min_lr_frac=sch["lr_b"] / peak)
        elif kind in ("wsd_exp", "wsd_linear"):
            D = int(sch["cooldown_start"])
            spec = dict(kind="wsd", **base, decay_start=D, decay_steps=T - D,
                        decay_shape="exp" if kind == "wsd_exp" else "linear",
                        min_lr_frac=sch["end_lr"] / peak, cooldown_frac=(T - D) / T)
        else:
            raise FwlabError(f"schedule mpl_kind={kind!r}: unknown")
    else:
        raise FwlabError(f"schedule impl={impl!r}: unknown; known: llmc_cosine_float32, "
                         "nanogpt_cosine, torch_onecycle_cos, epfml_wsd, mng_trapezoid, "
                         "mng_stable_linear, mng_cooldown_floor, mpl_numpy")
    return validate_spec(spec)


def with_total_steps(spec: dict, total_steps: int) -> dict:
    """The same schedule for a run of `total_steps` updates: constant keeps its rate, cosine re-spans
    its decay to end as far from the new end as before, WSD keeps its cooldown fraction (the
    cooldown ending where it ended relative to the end). FwlabError for two-stage and explicit
    schedules (no rule says how they stretch) and for a horizon the warmup does not fit."""
    s = validate_spec(spec)
    T2 = int(total_steps)
    if T2 <= 0:
        raise FwlabError(f"total_steps={total_steps!r}: must be a positive integer")
    if s["kind"] in ("two_stage", "explicit"):
        raise FwlabError(f"lr_schedule kind={s['kind']!r}: has no rule for another horizon; "
                         "give the schedule of the new run explicitly")
    if T2 <= s["warmup_steps"]:
        raise FwlabError(f"total_steps={T2}: not longer than the warmup ({s['warmup_steps']} steps)")
    T = s["total_steps"]
    out = dict(s, total_steps=T2)
    if s["kind"] == "constant":
        if s["decay_start"] >= T:  # no drop before the end: keep it so
            out["decay_start"] = T2 + (s["decay_start"] - T)
    elif s["kind"] == "cosine":
        end = s["decay_start"] + s["decay_steps"]
        out["decay_steps"] = end + (T2 - T) - s["decay_start"]
        if out["decay_steps"] <= 0:
            raise FwlabError(f"total_steps={T2}: too short for a cosine decay from step "
                             f"{s['decay_start']}")
    else:  # wsd
        end = s["decay_start"] + s["decay_steps"]
        frac = s["cooldown_frac"] if s["cooldown_frac"] is not None else s["decay_steps"] / T
        whole = isinstance(s["decay_start"], int) and isinstance(s["decay_steps"], int)
        n = int(round(frac * T2)) if whole else frac * T2
        end2 = end + (T2 - T)
        out["decay_start"], out["decay_steps"] = end2 - n, n
        if out["decay_start"] < 0:
            raise FwlabError(f"total_steps={T2}: too short for its cooldown")
    return validate_spec(out)


def is_annealed(schedule: str | None, min_lr_frac) -> bool:
    """Whether a run of this schedule ends annealed: its learning rate comes down to less than half
    its peak by the last step (cosine or WSD to a floor below 0.5 x lr). Such a run's final loss is
    a budget's result; a constant-LR run's is only a point on the way."""
    return schedule in ("cosine", "wsd") and float(min_lr_frac or 0) < 0.5
