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
"""
from __future__ import annotations

import math


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


def is_annealed(schedule: str | None, min_lr_frac) -> bool:
    """Whether a run of this schedule ends annealed: its learning rate comes down to less than half
    its peak by the last step (cosine or WSD to a floor below 0.5 x lr). Such a run's final loss is
    a budget's result; a constant-LR run's is only a point on the way."""
    return schedule in ("cosine", "wsd") and float(min_lr_frac or 0) < 0.5
