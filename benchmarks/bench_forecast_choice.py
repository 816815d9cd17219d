"""Leave-one-group-out choice of fwlab.forecast.UNFINISHED, the priors a forecast takes when the
known runs have seen the LR's decrease only in part (a run still going).

For every reference case that the rule applies to (bench_forecast.py's cases, B's and alpha's
priors from the other groups as there), each setting on a small grid is forecast; then, per group,
the setting that does best on the *other* groups' cases (the mean over those groups of their
median |error|, so that a 20-run repeat group counts once) is the one its cases are judged with.
Prints the grid's in-sample errors, the setting each held-out group got and the out-of-group
errors; --json OUT writes them.

    python benchmarks/bench_forecast_choice.py --reference ../shared/data/reference-curves --json OUT
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time

import numpy as np

import bench_forecast as BF  # also puts the repository on sys.path

from fwlab import forecast as F  # noqa: E402

PRIOR_G, PRIOR_LC = F.PRIOR["other"]["gamma"], F.PRIOR["other"]["log_c"]
GRID = [dict(gamma=g, log_c=lc, B_scale=b) for g, lc, b in itertools.product(
    (PRIOR_G, (1.0, 0.3), (1.5, 0.3)), (PRIOR_LC, (-7.0, 2.0)), (1.0, 1.2))]


def label(s: dict) -> str:
    if (s["gamma"], s["log_c"], s["B_scale"]) == (PRIOR_G, PRIOR_LC, 1.0):
        return "PRIOR (no unfinished-decay prior)"
    return f"gamma {s['gamma'][0]:g}+-{s['gamma'][1]:g}, log C {s['log_c'][0]:g}+-" \
           f"{s['log_c'][1]:g}, B x{s['B_scale']:g}"


def score(case_groups, err, groups) -> float:
    """The mean over `groups` of each group's median |error| (err and case_groups: per case)."""
    return float(np.mean([np.median([abs(e) for h, e in zip(case_groups, err) if h == g])
                          for g in groups]))


def logo_choice(groups, errs) -> tuple[dict, np.ndarray]:
    """Per group, the setting (row of errs: settings x cases) that scores best on the other
    groups' cases, and each case's error under its group's choice."""
    groups = list(groups)
    names = sorted(set(groups))
    chosen, out = {}, np.zeros(len(groups))
    for g in names:
        others = [h for h in names if h != g]
        j = int(np.argmin([score(groups, e, others) for e in errs])) if others else 0
        chosen[g] = j
        mine = np.array([h == g for h in groups])
        out[mine] = np.asarray(errs[j])[mine]
    return chosen, out


def summary(rows, err) -> dict:
    out = {}
    for p in sorted({r["protocol"] for r in rows}):
        e = np.array([abs(x) for r, x in zip(rows, err) if r["protocol"] == p])
        out[p] = dict(n=len(e), median_abs_error=float(np.median(e)), max_abs_error=float(e.max()),
                      within_0_01=int((e <= 0.01).sum()))
    return out


def brief(summ: dict) -> str:
    return "; ".join(f"{p} median {v['median_abs_error']:.4f} max {v['max_abs_error']:.4f} "
                     f"within 0.01 {v['within_0_01']}/{v['n']}" for p, v in summ.items())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True, metavar="DIR")
    ap.add_argument("--json", default=None, metavar="OUT")
    a = ap.parse_args(argv)
    t0 = time.time()
    R = BF.load_reference(a.reference)
    _, fits = BF.group_fits(R)
    # the live cases (the stretch protocol came after the choice; its record has these 59)
    cases = [c for c in BF.select_cases(R) if c["protocol"].startswith("live")
             and F.unfinished_decay(BF.known_curves(R, c))]
    print(f"{len(cases)} cases with a decay seen only in part, {len(GRID)} settings", flush=True)
    rows = [dict(case=c["case"], group=c["group"], protocol=c["protocol"], actual=c["actual"])
            for c in cases]
    errs = np.zeros((len(GRID), len(cases)))
    keep = F.UNFINISHED
    try:
        for j, s in enumerate(GRID):
            F.UNFINISHED = s
            for i, c in enumerate(cases):
                kind = BF.target_kind(R, c)
                pr = BF.case_prior(kind, BF.prior_from(fits[kind], c["group"]))
                out = F.forecast_curves(BF.known_curves(R, c), [BF.target_curve(R, c)],
                                        prior=pr, scale=1.0)
                errs[j, i] = float(out["val_loss"][0]) - c["actual"]
            print(f"  {label(s):<44} {brief(summary(rows, errs[j]))} "
                  f"({time.time() - t0:.0f} s)", flush=True)
    finally:
        F.UNFINISHED = keep
    names = sorted({r["group"] for r in rows})
    picks, logo = logo_choice([r["group"] for r in rows], errs)
    chosen = {g: label(GRID[j]) for g, j in picks.items()}
    module = label(keep)
    print("\nthe setting each held-out group is judged with (chosen on the other groups):")
    for g in names:
        print(f"  {g:<48} {chosen[g]}")
    res = dict(module_setting=module,
               folds_choosing_module=sum(v == module for v in chosen.values()),
               folds=len(names), chosen=chosen, out_of_group=summary(rows, logo),
               in_sample={label(s): summary(rows, errs[j]) for j, s in enumerate(GRID)},
               cases=[dict(r, logo_error=round(float(logo[i]), 5)) for i, r in enumerate(rows)],
               seconds=round(time.time() - t0, 1), reference=str(a.reference))
    print(f"\nthe module's setting ({module}) chosen in {res['folds_choosing_module']} of "
          f"{len(names)} folds; out-of-group: {brief(res['out_of_group'])}")
    if a.json:
        from fwlab.forecast import jsonable
        from fwlab.utils import atomic_write_json
        atomic_write_json(a.json, jsonable(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
