"""Backtest of fwlab's loss forecast: at real scale on published curves (--reference), and end to
end at CPU scale on fwlab's own sweeps.

--reference DIR: every case of a folder of published curves (../shared/data/reference-curves's
layout: each run found by its run.json), for six protocols: sweep (a trunk up to <= 35% of the
longest budget's steps plus the cooldown branches ending inside it -> each longer WSD budget),
sweep-cross (the same -> the longest budget under cosine), live30 / live50 (one run's evaluations up
to 30% / 50% of its steps -> its final loss), trunk-only (a constant-LR trunk -> the WSD budgets),
stretch (one run's evaluations up to 50% of its steps -> the final loss of each longer run of its
schedule in its group: what `fwlab plan --from` a run still going does for a longer budget).
Whatever is fitted on the data is chosen leaving the case's group out. --json OUT writes
{"cases": [...], "summary": {...}}; the README's table is its summary.

    python benchmarks/bench_forecast.py --reference ../shared/data/reference-curves --json OUT.json

Without --reference, the CPU-scale smoke test:

Prepares both shared FineWeb(-Edu) sample files, runs wsd sweeps of fwlab demo's setting (the tiny
preset at the reference scenario's 0.85/1.42/2.13/2.85 epochs; fwlab.demo, fwlab.sweep, papermill) for one or
more training seeds, then for each forecasts the final validation loss of the longest budget from
what 30% of its compute can show (fwlab.forecast.backtest) and prints the error against the value
it reached. Target: |error| <= 0.03 nats and the real value inside the interval. One seed is one
draw of the training noise: judge the method on several. The forecast's one free choice
(fwlab.forecast.FIT_FROM) was made looking at seeds 1337, 7 and 42; 2026 and 31337 were held out.

Given sweeps of three or more seeds of one setting, it also prints the seed floor
(fwlab.forecast.seed_floor): how much the longest budget's final loss varies from seed to seed, and
the error of a 'seed oracle' that knows the other seeds' outcomes. A forecast from 30% of one run
cannot be expected to beat that oracle; where the oracle misses 0.03 too, the miss is the noise of
training at this scale, not the method's.

    python benchmarks/bench_forecast.py                        # 5 seeds (~6 min each on 2 cores)
    python benchmarks/bench_forecast.py --seeds 1337           # one
    python benchmarks/bench_forecast.py --sweep DIR [DIR ...]  # backtest existing sweeps
    python benchmarks/bench_forecast.py --sweep DIR ... --seeds 5,101   # both
Finished sweeps under --out are reused, interrupted ones resumed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / ".." / "shared" / "data" / "fineweb-edu-sample"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
if (REPO / ".." / "shared" / "tiktoken_cache").is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str((REPO / ".." / "shared" / "tiktoken_cache")
                                                    .resolve()))
sys.path.insert(0, str(REPO))


DEFAULT_SEEDS = "1337,7,42,2026,31337"


def make_sweep(out: Path, seed: int, eval_interval: int) -> Path:
    from fwlab.prepare import prepare
    from fwlab.demo import DEMO_CONFIG, DEMO_EPOCHS, DEMO_VAL_TOKENS
    from fwlab.sweep import run_sweep
    data = out / "data"
    sources = [str((SAMPLE / f).resolve()) for f in ("fineweb.jsonl.gz", "fineweb_edu.jsonl.gz")]
    prepare(sources, str(data), val_tokens=DEMO_VAL_TOKENS)  # a no-op once prepared
    sweep = out / f"sweep_seed{seed}"
    state = run_sweep(sweep, data, mode="wsd", epochs=list(DEMO_EPOCHS),
                      config=dict(DEMO_CONFIG, seed=seed, eval_interval=eval_interval))
    if state.get("status") != "completed":
        raise SystemExit(f"the sweep did not complete: {sweep / 'sweep.json'}")
    return sweep


# --- the forecast at real scale: published curves (--reference) --------------------------------
SWEEP_FRAC = 0.35       # the trunk a sweep case may use, of the longest WSD budget's steps
LIVE_FRACS = (0.3, 0.5)
STRETCH_FRAC = 0.5      # a stretch case's run is cut here, of its own steps
CANON_FRAC = 0.2        # the cooldown fraction a sweep's budgets are read at (closest to it)
PROTOCOLS = ("sweep", "sweep-cross", "live30", "live50", "trunk-only", "stretch")
GROUP_FIT_POINTS = 25   # points per curve in a group's own fit (evenly thinned; for the priors)


def load_reference(root) -> dict:
    """Every published curve under ROOT (runs/*/ and seeds/*/*/, each found by its run.json):
    name -> dict(run (run.json), spec, lr (lr/peak per update), steps, loss, group, role). A
    branch's curve includes its trunk's points before its branch_step (importers)."""
    from fwlab import importers, schedule
    root = Path(root)
    out = {}
    for rj in sorted(list(root.glob("runs/*/run.json")) + list(root.glob("seeds/*/*/run.json"))):
        run = json.loads(rj.read_text())
        c = importers.reference_curves([rj.parent])[0]
        spec = schedule.spec_from_reference(run["schedule"])
        lr = schedule.lr_array(spec, int(run["total_steps"]) + 1) / spec["peak_lr"]
        out[run["name"]] = dict(run=run, spec=spec, lr=lr, steps=np.asarray(c["steps"], int),
                                loss=np.asarray(c["loss"], float), kind=c["kind"],
                                group=run.get("group") or run["name"],
                                role=run.get("role") or "run")
    if not out:
        raise SystemExit(f"{root}: no run.json under runs/ or seeds/*/")
    return out


def _final(r) -> tuple[int, float]:
    """The last evaluated step and its loss (Schaipp et al.'s last evaluation is 200 steps before
    the end: the target is that evaluation, forecast at that step)."""
    return int(r["steps"][-1]), float(r["loss"][-1])


def _cooldown_start(r) -> float:
    return float(r["spec"].get("decay_start") or r["spec"]["total_steps"])


def _lr_down_by(r, step: int) -> bool:
    """Whether the run's LR had come down (below 95% of its peak, after warm-up) by `step`."""
    lr = r["lr"][:max(step, 1)]
    w = int(np.flatnonzero(lr >= 0.999 * lr.max())[0]) if len(lr) else 0
    return bool(len(lr) > w and lr[w:].min() < 0.95)


def select_cases(R: dict) -> list[dict]:
    """The bench's cases (the module docstring's six protocols) from load_reference's curves.
    Each: case, group, protocol, compute_frac, known [(name, first step, last step)] (the
    evaluations a forecast may see: of that curve, steps in [first, last]), target (name, step),
    actual, lr_down (whether the known points include an LR decrease)."""
    cases = []
    groups: dict[str, list[str]] = {}
    for n, r in R.items():
        groups.setdefault(r["group"], []).append(n)
    for g, names in sorted(groups.items()):
        trunk = [n for n in names if R[n]["role"] == "trunk"]
        if trunk:
            cases += _sweep_cases(R, g, trunk[0], names)
    for n, r in sorted(R.items()):
        if r["role"] != "run" or len(r["steps"]) < 8:
            continue
        T, (last, actual) = int(r["spec"]["total_steps"]), _final(r)
        for frac in LIVE_FRACS:
            cut = int(frac * T)
            known = [(n, 0, cut)]
            cases.append(dict(case=f"{n}@{frac:.0%}", group=r["group"],
                              protocol=f"live{int(frac * 100)}", compute_frac=cut / T,
                              known=known, target=(n, last), actual=actual,
                              lr_down=_lr_down_by(r, cut)))
    return cases + _stretch_cases(R)


def _family(r) -> tuple:
    """A run's schedule family: its group and every schedule field but its length."""
    s = r["spec"]
    return (r["group"], s["kind"], s.get("decay_shape"), round(float(s.get("min_lr_frac") or 0), 6),
            s.get("warmup_steps"), s.get("cooldown_frac"))


def _stretch_cases(R) -> list[dict]:
    """Each run cut at STRETCH_FRAC of its steps -> each longer run of its family."""
    fams: dict[tuple, list[str]] = {}
    for n, r in sorted(R.items()):
        if r["role"] == "run" and len(r["steps"]) >= 8:
            fams.setdefault(_family(r), []).append(n)
    out = []
    for names in fams.values():
        for n in names:
            cut = int(STRETCH_FRAC * int(R[n]["spec"]["total_steps"]))
            for m in names:
                total = int(R[m]["spec"]["total_steps"])
                if total <= int(R[n]["spec"]["total_steps"]):
                    continue
                last, actual = _final(R[m])
                out.append(dict(case=f"{m}<-{n}@{STRETCH_FRAC:.0%}", group=R[n]["group"],
                                protocol="stretch", compute_frac=cut / total, known=[(n, 0, cut)],
                                target=(m, last), actual=actual, lr_down=_lr_down_by(R[n], cut)))
    return out


def _sweep_cases(R, g, trunk, names) -> list[dict]:
    wsd = [n for n in names if n != trunk and R[n]["spec"]["kind"] == "wsd"]
    if not wsd:
        return []
    top = max(int(R[n]["spec"]["total_steps"]) for n in wsd)
    cut = int(SWEEP_FRAC * top)
    out = []

    def canon(cands):  # per budget, the WSD run with the cooldown fraction closest to 0.2
        by = {}
        for n in cands:
            s = R[n]["spec"]
            key = (abs(s["cooldown_frac"] - CANON_FRAC), s["decay_shape"] != "linear", n)
            by.setdefault(int(s["total_steps"]), []).append((key, n))
        return {b: min(v)[1] for b, v in by.items()}

    def row(name, protocol, known, compute, lr_down):
        last, actual = _final(R[name])
        what = "+".join(f"trunk@{k[2]}" if k[0] == trunk else k[0] for k in known)
        return dict(case=f"{name}<-{what}",
                    group=g, protocol=protocol, compute_frac=compute, known=known,
                    target=(name, last), actual=actual, lr_down=lr_down)

    short = [n for n in wsd if int(R[n]["spec"]["total_steps"]) <= cut]
    canon_short = canon(short).get(max((int(R[n]["spec"]["total_steps"]) for n in short),
                                       default=-1))
    for kb in sorted(short):
        s = R[kb]["spec"]
        end = int(s["total_steps"])
        known = [(trunk, 0, end), (kb, int(_cooldown_start(R[kb])) + 1, end)]
        compute = (end + end - _cooldown_start(R[kb])) / top
        for n in sorted(wsd):
            t = R[n]["spec"]
            if int(t["total_steps"]) <= end:
                continue
            same = t["decay_shape"] == s["decay_shape"] and abs(
                t["cooldown_frac"] - s["cooldown_frac"]) < 1e-9
            if same or (kb == canon_short and abs(t["cooldown_frac"] - s["cooldown_frac"]) < 1e-9):
                out.append(row(n, "sweep", known, compute, True))
        if kb == canon_short:
            for n in sorted(names):
                t = R[n]["spec"]
                if t["kind"] == "cosine" and int(t["total_steps"]) == top and R[n]["role"] != "trunk":
                    out.append(row(n, "sweep-cross", known, compute, True))
    for b, n in sorted(canon(wsd).items()):
        out.append(row(n, "trunk-only", [(trunk, 0, cut)], cut / top, False))
    # the other shape at the canonical fraction too (Luo et al.: exponential and linear decay)
    seen = {c["target"][0] for c in out if c["protocol"] == "trunk-only"}
    for n in sorted(wsd):
        s = R[n]["spec"]
        if n in seen:
            continue
        for m in seen:
            t = R[m]["spec"]
            if int(t["total_steps"]) == int(s["total_steps"]) and abs(
                    t["cooldown_frac"] - s["cooldown_frac"]) < 1e-9:
                out.append(row(n, "trunk-only", [(trunk, 0, cut)], cut / top, False))
                break
    return out


def known_curves(R, case) -> list:
    from fwlab import laws
    out = []
    for name, lo, hi in case["known"]:
        r = R[name]
        m = (r["steps"] >= lo) & (r["steps"] <= hi)
        out.append(laws.Curve(r["lr"], r["steps"][m], r["loss"][m]))
    return out


def target_curve(R, case):
    from fwlab import laws
    name, step = case["target"]
    return laws.Curve(R[name]["lr"], [step])


def group_fit(R, names, kind: str):
    """One group's own fit (all its curves, thinned), with the exponents' priors of targets of
    schedule `kind` (so that its B is the quantity the cases' fits of that kind have)."""
    from fwlab import forecast as F, laws
    curves = []
    for n in names:
        r = R[n]
        st, lo = r["steps"], r["loss"]
        m = st > F.warmup_end(r["lr"][:max(int(st.max()), 1)])
        if r["role"] == "branch":
            m &= st > _cooldown_start(r)
        idx = np.flatnonzero(m)
        if len(idx):
            idx = idx[np.unique(np.linspace(0, len(idx) - 1,
                                            min(len(idx), GROUP_FIT_POINTS)).astype(int))]
            curves.append(laws.Curve(r["lr"], st[idx], lo[idx]))
    masks = F.fit_masks(curves, min(F.WINDOWS))
    pr, _ = F._prior(dict(F.prior_for(kind), alpha=F.ALPHA_FREE))  # alpha free: its prior's data
    return laws.fit("mpl", curves, prior=pr, fit_mask=masks, starts=F.STARTS).params()


def group_fits(R) -> tuple[dict, dict]:
    """The groups ({group: [run names]}) and each group's own fit per target kind
    ({kind: {group: params}})."""
    groups: dict[str, list[str]] = {}
    for n, r in R.items():
        groups.setdefault(r["group"], []).append(n)
    fits = {kind: {} for kind in ("wsd", "other")}
    for g, names in sorted(groups.items()):
        # a repeat-run group: four of its trials are enough for its own fit
        use = names[:4] if len(names) > 12 and all(R[n]["role"] == "run" for n in names) else names
        for kind in fits:
            fits[kind][g] = group_fit(R, use, kind)
    return groups, fits


PRIOR_FLOOR = dict(alpha=0.05, log_c=0.7, beta=0.2, gamma=0.15, B=0.03)


def prior_from(fits: dict, exclude=None) -> dict:
    """Priors from the groups' own fits (all but `exclude`): per parameter the median and a
    robust SD (1.4826 x MAD, at least PRIOR_FLOOR)."""
    rows = [p for g, p in fits.items() if g != exclude]
    out = {}
    for k in ("alpha", "log_c", "beta", "gamma", "B"):
        v = np.array([p[k] for p in rows])
        med = float(np.median(v))
        out[k] = (med, max(1.4826 * float(np.median(np.abs(v - med))), PRIOR_FLOOR[k]))
    return out


def target_kind(R, case) -> str:
    """'wsd' or 'other': which of the module's PRIOR a case's target takes."""
    return "wsd" if R[case["target"][0]]["spec"]["kind"] == "wsd" else "other"


def case_prior(kind: str, p: dict) -> dict:
    """The module's prior for `kind` with B and alpha's mean from the groups' fits `p`
    (prior_from; alpha's SD stays the module's)."""
    from fwlab import forecast as F
    base = F.prior_for(kind)
    return dict(base, B=p["B"], alpha=(p["alpha"][0], base["alpha"][1]))


def run_reference(root, json_out=None, quick: bool = False, only=None) -> dict:
    from fwlab import forecast as F
    t0 = time.time()
    R = load_reference(root)
    cases = select_cases(R)
    if only:
        cases = [c for c in cases if c["protocol"] in only]
    if quick:
        cases = cases[::4]
    groups, fits = group_fits(R)
    print(f"{len(R)} curves, {len(groups)} groups fitted in {time.time() - t0:.0f} s; "
          f"{len(cases)} cases", flush=True)
    all_prior = {k: prior_from(v) for k, v in fits.items()}
    rows = []
    for i, c in enumerate(cases):
        known, tgt = known_curves(R, c), [target_curve(R, c)]
        r = dict(case=c["case"], group=c["group"], protocol=c["protocol"],
                 compute_frac=round(c["compute_frac"], 4), target_step=c["target"][1],
                 actual=c["actual"], lr_down=c["lr_down"])
        kind = target_kind(R, c)
        try:
            out = F.forecast_curves(known, tgt, prior=case_prior(
                kind, prior_from(fits[kind], c["group"])), scale=1.0)
            ing = F.forecast_curves(known, tgt, prior=case_prior(kind, all_prior[kind]), scale=1.0)
        except Exception as e:  # a case the method cannot take is reported, not hidden
            print(f"  {c['case']}: {type(e).__name__}: {e}")
            continue
        r.update(forecast=float(out["val_loss"][0]), u=float(out["u"][0]),
                 in_group_forecast=float(ing["val_loss"][0]), in_group_u=float(ing["u"][0]))
        rows.append(r)
        if (i + 1) % 20 == 0:
            print(f"  {i + 1}/{len(cases)} cases, {time.time() - t0:.0f} s", flush=True)
    # the interval: half-width K x u, K the 90% quantile of |error| / u over the other groups' cases
    ks = F.logo_scale([abs(r["forecast"] - r["actual"]) / r["u"] for r in rows],
                      [r["group"] for r in rows], F.LEVEL)
    for r, k in zip(rows, ks):
        k, f = float(k), r["forecast"]
        r.update(low=f - k * r["u"], high=f + k * r["u"], error=f - r["actual"], k=k)
        r["inside"] = bool(r["low"] <= r["actual"] <= r["high"])
        r["in_group_error"] = r["in_group_forecast"] - r["actual"]
    k_all = float(np.quantile(np.array([abs(r["in_group_error"]) / r["in_group_u"]
                                        for r in rows]), F.LEVEL))
    summary = summarise(rows)
    summary.update(interval_k_all_cases=k_all, b_prior_all_groups={
        k: v["B"] for k, v in all_prior.items()}, alpha_prior_all_groups={
        k: v["alpha"][0] for k, v in all_prior.items()}, group_fits={
        kind: {g: {k: round(v, 4) for k, v in p.items()} for g, p in f.items()}
        for kind, f in fits.items()},
                   ranking=rankings(rows), seconds=round(time.time() - t0, 1),
                   reference=str(root))
    print_table(rows, summary)
    if json_out:
        write_record(json_out, rows, summary)
    return dict(cases=rows, summary=summary)


def _stats(rows, key="error"):
    e = np.array([abs(r[key]) for r in rows])
    return dict(n=len(rows), median_abs_error=float(np.median(e)), max_abs_error=float(e.max()),
                within_0_01=int((e <= 0.01).sum()))


def summarise(rows) -> dict:
    out = {}
    for p in PROTOCOLS:
        sel = [r for r in rows if r["protocol"] == p]
        if not sel:
            continue
        s = _stats(sel)
        s.update(coverage=float(np.mean([r["inside"] for r in sel])),
                 median_width=float(np.median([r["high"] - r["low"] for r in sel])),
                 in_group=_stats(sel, "in_group_error"))
        if p.startswith("live"):
            for down in (True, False):
                sub = [r for r in sel if r["lr_down"] == down]
                if sub:
                    s["lr_down" if down else "lr_not_down"] = dict(
                        _stats(sub), coverage=float(np.mean([r["inside"] for r in sub])),
                        in_group=_stats(sub, "in_group_error"))
        out[p] = s
    out["all"] = dict(n=len(rows), coverage=float(np.mean([r["inside"] for r in rows])),
                      median_width=float(np.median([r["high"] - r["low"] for r in rows])))
    sw, cr = out.get("sweep"), out.get("sweep-cross")
    l30, l50 = out.get("live30", {}).get("lr_down"), out.get("live50", {}).get("lr_down")
    out["targets"] = {
        "sweep |error| <= 0.01 on every case": bool(sw and sw["max_abs_error"] <= 0.01),
        "sweep median |error| <= 0.005": bool(sw and sw["median_abs_error"] <= 0.005),
        "sweep-cross |error| <= 0.02": bool(cr and cr["max_abs_error"] <= 0.02),
        "live30 (LR down) |error| <= 0.03": bool(l30 and l30["max_abs_error"] <= 0.03),
        "live50 (LR down) |error| <= 0.01": bool(l50 and l50["max_abs_error"] <= 0.01),
        "coverage of the 90% interval in 80-95%": bool(0.8 <= out["all"]["coverage"] <= 0.95),
    }
    return out


def rankings(rows) -> dict:
    """Per sweep case set (one group, one known branch): do the forecasts rank the extra budgets'
    loss gain per step (per hour at a fixed throughput) as the truth does?"""
    sets: dict[tuple, list] = {}
    for r in rows:
        if r["protocol"] == "sweep":
            sets.setdefault((r["group"], r["case"].split("<-")[1]), []).append(r)
    right, total, detail = 0, 0, []
    for (g, known), rs in sorted(sets.items()):
        fam = {}
        for r in rs:  # one family: same shape and fraction as each other (target name minus budget)
            fam.setdefault(r["case"].split("<-")[0].rsplit("_", 1)[0], []).append(r)
        for f, rr in sorted(fam.items()):
            if len(rr) < 2:
                continue
            rr = sorted(rr, key=lambda r: r["target_step"])
            steps = np.array([r["target_step"] for r in rr], float)
            gf = -np.diff([r["forecast"] for r in rr]) / np.diff(steps)
            ga = -np.diff([r["actual"] for r in rr]) / np.diff(steps)
            ok = bool((np.argsort(-gf) == np.argsort(-ga)).all())
            right, total = right + ok, total + 1
            detail.append(dict(group=g, known=known, family=f, right=ok))
    return dict(right=right, total=total, detail=detail)


def print_table(rows, s) -> None:
    print(f"\n{'case':<78} {'proto':<11} {'cmp':>5} {'forecast':>8} {'interval':>17} "
          f"{'actual':>7} {'error':>7} in")
    for r in rows:
        print(f"{r['case'][:78]:<78} {r['protocol']:<11} {r['compute_frac']:5.2f} "
              f"{r['forecast']:8.4f} [{r['low']:7.4f},{r['high']:7.4f}] {r['actual']:7.4f} "
              f"{r['error']:+7.4f} {'y' if r['inside'] else 'N'}")
    print("\n" + summary_table(s))


def summary_table(s) -> str:
    """The summary as a Markdown table (the README's)."""
    lines = ["| protocol | cases | median abs error | max abs error | within 0.01 | "
             "in-group median / max | 90% coverage | median width |",
             "|---|---|---|---|---|---|---|---|"]
    for p in PROTOCOLS:
        if p not in s:
            continue
        subs = [(p, s[p])]
        for k in ("lr_down", "lr_not_down"):
            if k in s[p]:
                subs.append((f"{p}, {k.replace('_', ' ').replace('lr', 'LR')}", s[p][k]))
        for name, x in subs:
            cov = f"{x['coverage']:.0%}" if "coverage" in x else ""
            wid = f"{x['median_width']:.3f}" if "median_width" in x else ""
            ig = x["in_group"]
            lines.append(f"| {name} | {x['n']} | {x['median_abs_error']:.4f} | "
                         f"{x['max_abs_error']:.4f} | {x['within_0_01']}/{x['n']} | "
                         f"{ig['median_abs_error']:.4f} / {ig['max_abs_error']:.4f} | {cov} | "
                         f"{wid} |")
    a = s["all"]
    lines.append(f"| all | {a['n']} | | | | | {a['coverage']:.0%} | {a['median_width']:.3f} |")
    rk = s.get("ranking")
    if rk:
        lines.append(f"\nbudget ranking (gain per hour of each extra budget) right on "
                     f"{rk['right']}/{rk['total']} sweep families")
    lines.append("targets: " + "; ".join(f"{k}: {'met' if v else 'NOT met'}"
                                         for k, v in s["targets"].items()))
    return "\n".join(lines)


def write_record(path, rows, summary) -> None:
    """The JSON record: summary, then one compact line per case."""
    from fwlab.forecast import jsonable
    from fwlab.utils import atomic_write_text
    keep = ("case", "group", "protocol", "compute_frac", "forecast", "low", "high", "actual",
            "error", "inside", "target_step", "lr_down", "in_group_error")
    cases = [json.dumps(jsonable({k: (round(r[k], 5) if isinstance(r[k], float) else r[k])
                                  for k in keep})) for r in rows]
    text = ('{"summary": ' + json.dumps(jsonable(summary), indent=1) + ',\n "cases": [\n  '
            + ",\n  ".join(cases) + "\n ]}\n")
    atomic_write_text(path, text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", nargs="+", default=None,
                    help="backtest these finished sweeps instead of running new ones")
    ap.add_argument("--out", default=str(REPO / "results" / "bench_forecast"))
    ap.add_argument("--seeds", default=None,
                    help=f"training seeds, one sweep each (default without --sweep: "
                         f"{DEFAULT_SEEDS})")
    ap.add_argument("--eval-interval", type=int, default=None,
                    help="evaluate every N iterations (default: fwlab demo's)")
    ap.add_argument("--frac", type=float, default=0.3)
    ap.add_argument("--n-boot", type=int, default=400)
    ap.add_argument("--reference", default=None, metavar="DIR",
                    help="back-test on the published curves in DIR (a reference-curves folder: "
                         "runs/*/run.json, seeds/*/*/run.json) instead of CPU sweeps")
    ap.add_argument("--json", default=None, metavar="OUT", help="with --reference: write the cases "
                    "and the summary to OUT")
    ap.add_argument("--quick", action="store_true", help="with --reference: every 4th case only")
    ap.add_argument("--protocols", default=None, help="with --reference: only these protocols "
                    "(comma-separated: sweep, sweep-cross, live30, live50, trunk-only)")
    a = ap.parse_args(argv)
    if a.reference:
        res = run_reference(a.reference, a.json, quick=a.quick,
                            only=a.protocols.split(",") if a.protocols else None)
        return 0 if all(res["summary"]["targets"].values()) else 1

    from fwlab import forecast as F
    from fwlab.errors import FwlabError
    from fwlab.demo import DEMO_CONFIG
    from fwlab.utils import atomic_write_json
    every = a.eval_interval or DEMO_CONFIG["eval_interval"]
    sweeps = [Path(s) for s in a.sweep or []]
    seeds = a.seeds if a.seeds is not None else ("" if a.sweep else DEFAULT_SEEDS)
    if seeds:
        for seed in [int(s) for s in seeds.split(",") if s.strip()]:
            t0 = time.time()
            sweeps.append(make_sweep(Path(a.out), seed, every))
            print(f"sweep {sweeps[-1]}: {(time.time() - t0) / 60:.1f} min")
    results = []
    for sweep in sweeps:
        t1 = time.time()
        bt = F.backtest(sweep, frac=a.frac, n_boot=a.n_boot)
        results.append(bt)
        print(f"\n{sweep}: run {bt['run']}, {bt['budget_iters']} iterations = {bt['epochs']:.2f} "
              f"epochs, final val loss {bt['actual']:.4f}")
        print(f"  known: {bt['n_points']} evals of the runs {[bt['run']] + bt['runs_used']} "
              f"(the longest up to iteration {bt['cutoff_iter']}), "
              f"{bt['compute_frac']:.1%} of its compute")
        print(f"  method: {bt['method']}")
        print(f"  forecast {bt['forecast']:.4f} [{bt['low']:.4f}, {bt['high']:.4f}]  actual "
              f"{bt['actual']:.4f}  error {bt['error']:+.4f} nats  inside={bt['inside']}  "
              f"{'PASS' if bt['passed'] else 'FAIL'} (fit + bootstrap {time.time() - t1:.1f} s)")
    errs = [abs(b["error"]) for b in results]
    print(f"\n{len(results)} backtest(s): |error| mean {sum(errs) / len(errs):.4f}, max "
          f"{max(errs):.4f} nats; inside the interval {sum(b['inside'] for b in results)}/"
          f"{len(results)}; passed (|error| <= {F.TARGET_ABS_ERROR} and inside) "
          f"{sum(b['passed'] for b in results)}/{len(results)}")
    floor = None
    if len(sweeps) >= 3:
        try:
            floor = F.seed_floor(sweeps)
        except FwlabError as e:
            print(f"\nno seed floor: {e}")
    if floor:
        ok = sum(abs(r["error"]) <= F.TARGET_ABS_ERROR for r in floor["rows"])
        print(f"\nseed floor over {floor['n']} sweeps (budgets {floor['budgets'][0]} and "
              f"{floor['budgets'][1]} iterations): the longest budget's final loss has SD "
              f"{floor['final_sd']:.4f} nats from seed to seed")
        print(f"{'sweep':<48} {'actual':>8} {'oracle err':>10} {'forecast err':>12}")
        for r, bt in zip(floor["rows"], results):
            print(f"{str(r['sweep'])[-48:]:<48} {r['actual']:8.4f} {r['error']:+10.4f} "
                  f"{bt['error']:+12.4f}")
        print(f"the seed oracle (the short budget's loss + the other seeds' mean gain) is within "
              f"{F.TARGET_ABS_ERROR} on {ok}/{floor['n']}; the forecast on "
              f"{sum(abs(b['error']) <= F.TARGET_ABS_ERROR for b in results)}/{len(results)}")
    atomic_write_json(Path(a.out) / "backtest.json", dict(frac=a.frac, backtests=results,
                                                          seed_floor=floor))
    return 0 if all(b["passed"] for b in results) else 1


if __name__ == "__main__":
    sys.exit(main())
