"""Claims checker (`fwlab check-claims CLAIMS.yaml --from SWEEP_OR_RUN_OR_PLAN`): a recommendation
table people pass around, held against what fwlab measured or predicts.

Claims file (YAML; examples/claims_40m_fineweb_edu.yaml):
    name: ...                      # optional, shown in the output
    preset: 40m                    # the setting the claims are about; each defaults to the source's
    tokens_per_iter: 524288
    data_tokens: 3.68e9            # unique training tokens
    claims:
      - iters: 20000               # final validation loss after this many iterations
        val_loss: [2.42, 2.55]
      - hours: [8, 11]             # wall-clock hours for `per_iters` iterations ...
        per_iters: 10000
        gpu: RTX 4070              # ... on this GPU (omit: the machine the source was measured on)

Each claim gets a row: the value fwlab holds for it (measured where the source measured exactly
that, else predicted), its interval, the basis, and a verdict. Lower is better for both losses and
hours, so a claimed range entirely below fwlab's interval is optimistic, entirely above it
pessimistic, and overlapping it "consistent"; "unchecked" says why nothing could be said.

How sure a verdict is: `basis_kind` (measured / forecast from curves / gpu peak / prior) and
`misses_by`, the gap between the claimed range and fwlab's interval in widths of that interval
(0 when they overlap; a measured hours value has no width, so any gap is infinitely many). Only a
strong basis (measured, forecast, plan from curves, gpu peak: a physical bound at an assumed MFU)
gives the categorical "too optimistic" / "too pessimistic"; a prior gives "likely optimistic
(prior only)" / "likely pessimistic (prior only)", however far the claim misses.
Bases, in order of preference:
  measured (RUN)  a run of the source that completed this budget in the claims' setting (interval:
                  ± z·stderr of its final evaluation, z for the 90% level)
  forecast        fwlab.forecast's fit of the source's curves (a sweep or run directory)
  plan (...)      the numbers of a plan JSON (`fwlab plan --out FILE`) made for this setting
  prior (...)     when the source is of another setting (e.g. a CPU-scale sweep against claims
                  about the 40m model): fwlab/prior.py, calibrated on published FineWeb-Edu runs
                  when the reference curves are beside the checkout, else the published fits
  measured        hours from a run's median training tokens/s, when it ran the claims' setting on
                  the claimed GPU (or no GPU is named)
  gpu peak        hours from the named GPU's dense bf16 peak (fwlab.hardware) x an assumed MFU
                  range (30-50% unless --mfu)
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from fwlab import forecast as fc
from fwlab import plan as pl
from fwlab import prior as pr
from fwlab.config import PRESETS
from fwlab.errors import FwlabError
from fwlab.runs import Lab, load_runs
from fwlab.utils import atomic_write_text, fmt_tokens, parse_number, read_json, resolve_path

COLUMNS = ["claim", "kind", "iters", "gpu", "claimed_low", "claimed_high", "value", "low", "high",
           "basis", "basis_kind", "misses_by", "verdict", "note"]
STRONG = ("measured", "forecast", "gpu peak")  # basis kinds that earn a categorical verdict


# --- the claims file -----------------------------------------------------------------------------
def _num(v, where: str) -> float:
    return parse_number(v, where)


def _whole(v, where: str) -> int:
    """A count of iterations or tokens: 30.7 iterations is a typo, not 30."""
    n = _num(v, where)
    if not n.is_integer():
        raise FwlabError(f"{where} {v!r}: must be a whole number")
    return int(n)


def _range(v, where: str) -> tuple[float, float]:
    if isinstance(v, (int, float, str)):
        v = [v, v]
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise FwlabError(f"{where}: give a range [low, high], got {v!r}")
    lo, hi = _num(v[0], where), _num(v[1], where)
    if lo > hi:
        raise FwlabError(f"{where}: low {lo:g} is above high {hi:g}")
    return lo, hi


def load_claims(path) -> dict:
    """Parse and validate a claims file; returns dict(name, preset, tokens_per_iter, data_tokens,
    claims=[{kind, iters, low, high, gpu}])."""
    path = Path(path)
    if not path.is_file():
        raise FwlabError(f"{path}: claims file not found")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise FwlabError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("claims"), list) or not doc["claims"]:
        raise FwlabError(f"{path}: expected a mapping with a non-empty `claims:` list")
    known = {"name", "source", "preset", "tokens_per_iter", "data_tokens", "claims", "notes"}
    extra = sorted(set(doc) - known)
    if extra:
        raise FwlabError(f"{path}: unknown key(s) {', '.join(extra)}; known: "
                         f"{', '.join(sorted(known))}")
    out = dict(name=str(doc.get("name") or path.stem), preset=doc.get("preset"),
               tokens_per_iter=None, data_tokens=None, claims=[])
    for key in ("tokens_per_iter", "data_tokens"):
        if doc.get(key) is not None:  # tokens per iteration: a whole number, as iters below
            out[key] = (_whole if key == "tokens_per_iter" else _num)(doc[key], f"{path}: {key}")
            if out[key] <= 0:
                raise FwlabError(f"{path}: {key} must be positive, got {doc[key]!r}")
    if out["preset"] is not None:
        if not isinstance(out["preset"], str):
            raise FwlabError(f"{path}: preset {out['preset']!r}: give one preset name, one of "
                             f"{', '.join(PRESETS)}")
        if out["preset"] not in PRESETS:
            raise FwlabError(f"{path}: preset {out['preset']!r} unknown; one of "
                             f"{', '.join(PRESETS)}")
    for i, c in enumerate(doc["claims"], 1):
        where = f"{path}: claim {i}"
        if not isinstance(c, dict):
            raise FwlabError(f"{where}: expected a mapping, got {c!r}")
        if ("val_loss" in c) == ("hours" in c):
            raise FwlabError(f"{where}: give exactly one of val_loss: [low, high] or "
                             f"hours: [low, high]")
        if "val_loss" in c:
            unknown = sorted(set(c) - {"iters", "val_loss"})
            if "iters" not in c:
                raise FwlabError(f"{where}: a val_loss claim needs `iters` (the budget)")
            lo, hi = _range(c["val_loss"], f"{where} val_loss")
            rec = dict(kind="val_loss", iters=_whole(c["iters"], f"{where} iters"), low=lo,
                       high=hi, gpu=None)
        else:
            unknown = sorted(set(c) - {"hours", "per_iters", "gpu"})
            if "per_iters" not in c:
                raise FwlabError(f"{where}: an hours claim needs `per_iters` (hours per how many "
                                 f"iterations)")
            lo, hi = _range(c["hours"], f"{where} hours")
            if c.get("gpu") is not None and not isinstance(c["gpu"], str):
                raise FwlabError(f"{where}: gpu {c['gpu']!r}: give one GPU name (e.g. RTX 4070)")
            rec = dict(kind="hours", iters=_whole(c["per_iters"], f"{where} per_iters"),
                       low=lo, high=hi, gpu=c.get("gpu") or None)
        if unknown:
            raise FwlabError(f"{where}: unknown key(s) {', '.join(unknown)}")
        if rec["iters"] < 1:
            raise FwlabError(f"{where}: iterations must be >= 1")
        out["claims"].append(rec)
    return out


def verdict(claimed_low: float, claimed_high: float, low: float, high: float,
            basis_kind: str = "measured") -> str:
    """Lower is better: a claim entirely below fwlab's interval promises too much. Categorical
    on a strong basis (STRONG), hedged on a prior."""
    side = ("optimistic" if claimed_high < low else "pessimistic" if claimed_low > high
            else None)
    if side is None:
        return "consistent"
    return f"too {side}" if basis_kind in STRONG else f"likely {side} (prior only)"


def misses_by(claimed_low: float, claimed_high: float, low: float, high: float) -> float:
    """The gap between the claimed range and fwlab's interval, in widths of that interval (0 when
    they overlap, inf when the interval has no width)."""
    gap = max(low - claimed_high, claimed_low - high, 0.0)
    if gap == 0:
        return 0.0
    width = high - low
    return gap / width if width > 0 else float("inf")


def basis_kind(basis: str) -> str:
    """measured / forecast / gpu peak / prior, from a row's basis text."""
    b = str(basis or "")
    if pr.is_prior(b):
        return "prior"
    if b.startswith("measured") or b.startswith("plan (measured"):
        return "measured"
    if b == "gpu peak":
        return "gpu peak"
    return "forecast" if b else ""


# --- what the source says ------------------------------------------------------------------------
def _from_plan(path: Path) -> dict:
    p = read_json(path)
    if not isinstance(p, dict) or "rows" not in p or "tokens_per_iter" not in p:
        raise FwlabError(f"{path}: not a plan JSON (made by `fwlab plan --out FILE`)")
    if not isinstance(p["rows"], list):
        raise FwlabError(f"{path}: 'rows' must be a list of budget rows, got {p['rows']!r:.60}")
    for i, r in enumerate(p["rows"]):  # what check_claims reads from a row, each a number
        bad = [k for k in ("budget", "val_loss", "val_loss_low", "val_loss_high")
               if not isinstance(r, dict) or isinstance(r.get(k), bool)
               or not isinstance(r.get(k), (int, float))]
        if bad:
            raise FwlabError(f"{path}: rows[{i}]: {', '.join(bad)} must be numbers, got "
                             f"{r!r:.80}; write the plan again with `fwlab plan --out FILE`")
    for k in ("tokens_per_iter", "data_tokens"):
        if p.get(k) is not None and (isinstance(p[k], bool) or not isinstance(p[k], (int, float))):
            raise FwlabError(f"{path}: '{k}' must be a number, got {p[k]!r:.60}")
    thr = p.get("throughput")
    if thr is not None and not isinstance(thr, dict):
        raise FwlabError(f"{path}: 'throughput' must be an object, got {thr!r:.60}")
    return p


def _setting_mismatch(want: dict, have: dict) -> list[str]:
    out = []
    if want["preset"] and have.get("preset") and want["preset"] != have["preset"]:
        out.append(f"preset {have['preset']} vs the claims' {want['preset']}")
    if want["tokens_per_iter"] and have.get("tokens_per_iter") and \
            int(want["tokens_per_iter"]) != int(have["tokens_per_iter"]):
        out.append(f"{int(have['tokens_per_iter']):,} tokens/iter vs "
                   f"{int(want['tokens_per_iter']):,}")
    return out


def check_claims(claims_path, source=None, mfu_range=pl.DEFAULT_MFU_RANGE,
                 n_boot: int = fc.N_BOOT, level: float = fc.LEVEL, lab: Lab | None = None
                 ) -> pd.DataFrame:
    """One row per claim (COLUMNS): claimed range, fwlab's value and interval, basis, verdict.
    `source`: a sweep directory, a run directory, or a plan JSON from `fwlab plan --out`; or give
    `lab`, runs already loaded (runs.load_runs), instead."""
    cl = load_claims(claims_path)
    plan = points = None
    if lab is None:
        if source is None:
            raise FwlabError("check_claims: give a sweep, run or plan JSON (or a loaded Lab)")
        src = resolve_path(source)
        if not src.exists():
            raise FwlabError(f"{src}: no such sweep, run or plan JSON")
        if src.is_file():
            plan = _from_plan(src)
        else:
            lab = load_runs(src)
    else:
        src = Path(lab.describe_sources() if source is None else source)
    if plan is not None:
        have = dict(preset=plan.get("preset"), tokens_per_iter=plan.get("tokens_per_iter"),
                    data_tokens=plan.get("data_tokens"))
    else:
        points = fc.load_points(lab=lab)
        presets, tpis = lab.runs["preset"].dropna(), lab.runs["tokens_per_iter"].dropna()
        # an imported run names no preset: the one whose parameter count is exactly its own
        have = dict(preset=presets.iloc[0] if len(presets) else pl.preset_of_params(lab),
                    tokens_per_iter=int(tpis.iloc[0]) if len(tpis) else None,
                    data_tokens=float(points["unique_tokens"].median()) if len(points) else None)
    want = dict(preset=cl["preset"] or have["preset"] or "40m",
                tokens_per_iter=cl["tokens_per_iter"] or have["tokens_per_iter"],
                data_tokens=cl["data_tokens"] or have["data_tokens"])
    mismatch = _setting_mismatch(want, have)
    if want["tokens_per_iter"] is None or want["data_tokens"] is None:
        raise FwlabError(f"{claims_path}: give tokens_per_iter and data_tokens (the source {src} "
                         f"does not say them)")
    tpi, U = int(want["tokens_per_iter"]), float(want["data_tokens"])
    rows = []
    loss_claims = [c for c in cl["claims"] if c["kind"] == "val_loss"]
    # one forecast for all loss budgets: a single bootstrap, so the rows are mutually consistent
    pred = {}  # budget -> (value, low, high, basis, note)
    if loss_claims:
        budgets = sorted({c["iters"] for c in loss_claims})
        f = None
        if plan is not None and not mismatch:
            for r in plan["rows"]:
                pred[int(r["budget"])] = (r["val_loss"], r["val_loss_low"], r["val_loss_high"],
                                          f"plan ({r.get('loss_basis') or plan.get('loss_basis')})",
                                          f"{src.name}: {plan.get('loss_method', '')}")
            why = f"plan {src.name} has no budget rows"  # what the prior stands in for, if used
        elif plan is None and not mismatch and len(points):
            try:
                f = fc.loss_forecast_for(budgets, tpi, U, want["preset"], points=points,
                                         n_boot=n_boot, level=level)
            except FwlabError as e:
                why = f"no fit from {src} ({e})"
        elif plan is not None:
            why = f"plan {src.name} is for {'; '.join(mismatch)}"
        else:
            why = (f"{src} is {'; '.join(mismatch)}: its curves cannot speak for the claims' "
                   f"setting" if mismatch else f"{src} has no validation points")
        if f is None and not pred:
            f = pr.prior_for(budgets, tpi, U, want["preset"])  # no curves: a prior
            f["method"] = f"{why}: {f['prior']} prior used; {f['method']}"
        if f is not None:
            z = fc.normal_z(level)
            for i, b in enumerate(budgets):
                basis = f["row_basis"][i]
                note = (f"final val loss ± {z:.2f} stderr" if basis.startswith("measured")
                        else f["method"])
                pred[b] = (float(f["val_loss"][i]), float(f["low"][i]), float(f["high"][i]),
                           basis, note)
    for c in cl["claims"]:
        row = dict(kind=c["kind"], iters=c["iters"], gpu=c["gpu"], claimed_low=c["low"],
                   claimed_high=c["high"], value=None, low=None, high=None, basis="",
                   basis_kind="", misses_by=None, verdict="unchecked", note="")
        if c["kind"] == "val_loss":
            row["claim"] = f"val loss {c['low']:g}-{c['high']:g} after {c['iters']:,} iterations"
            if c["iters"] in pred:
                row["value"], row["low"], row["high"], row["basis"], row["note"] = pred[c["iters"]]
            else:
                row["note"] = f"budget {c['iters']:,} is not in the plan {src}"
        else:
            on = f" on {c['gpu']}" if c["gpu"] else ""
            row["claim"] = f"{c['low']:g}-{c['high']:g} hours per {c['iters']:,} iterations{on}"
            _hours(row, c, want, tpi, plan, lab, mismatch, mfu_range)
        row["basis_kind"] = basis_kind(row["basis"])
        if row["value"] is not None and row["low"] is not None and not pd.isna(row["low"]):
            row["misses_by"] = misses_by(c["low"], c["high"], row["low"], row["high"])
            row["verdict"] = verdict(c["low"], c["high"], row["low"], row["high"],
                                     row["basis_kind"])
        rows.append(row)
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.attrs["claims"] = cl["name"]
    df.attrs["setting"] = dict(preset=want["preset"], tokens_per_iter=tpi, data_tokens=U)
    return df


def _gpu_key(name: str | None) -> str | None:
    """The fwlab.hardware peak-table entry a GPU name falls under (None: not a known GPU)."""
    from fwlab import hardware  # here: it imports torch (~1 s), which only an hours claim needs
    entry = hardware.gpu_entry(name)
    return entry[0] if entry else None


def _same_gpu(claimed: str, name: str | None) -> bool:
    return _gpu_key(claimed) is not None and _gpu_key(claimed) == _gpu_key(name)


def _hours(row, c, want, tpi, plan, lab, mismatch, mfu_range) -> None:
    """Fill an hours row: measured tokens/s when the source ran the claims' setting on that GPU
    (or no GPU is named), else the named GPU's peak x the MFU range."""
    measured = None  # (tokens/s, where)
    if not mismatch:
        if plan is not None:
            thr = plan.get("throughput") or {}
            same = not c["gpu"] or _same_gpu(c["gpu"], thr.get("device_name"))
            if thr.get("source") == "measured" and same:
                measured = (thr["tok_per_s"], f"measured by the plan on {thr.get('device_name')}")
        elif lab is not None:  # the longest run that ran there: its speed is the steadiest
            for _, run in lab.runs.sort_values("iters_computed", ascending=False).iterrows():
                name = run["device_name"]
                if pd.isna(run["tok_per_s"]) or not run["tok_per_s"] or (
                        c["gpu"] and not _same_gpu(c["gpu"], name)):
                    continue
                measured = (float(run["tok_per_s"]), f"measured: median training tokens/s of run "
                                                     f"{run['run']} on {name} (evaluations not "
                                                     f"counted)")
                break
    if measured is not None:
        h = c["iters"] * tpi / measured[0] / 3600
        row.update(value=h, low=h, high=h, basis="measured", note=measured[1])
        return
    if not c["gpu"]:
        row["note"] = "no GPU named and the source has no measured speed for this setting"
        return
    try:
        g = pl.gpu_hours(c["gpu"], want["preset"], c["iters"], tpi, mfu_range)
    except FwlabError as e:
        row["note"] = str(e)
        return
    row.update(value=g["hours"], low=g["hours_low"], high=g["hours_high"], basis="gpu peak",
               note=g["method"])


def strength_text(r) -> str:
    """How far a claim misses fwlab's interval, in words: '' when consistent or unchecked."""
    m = r.get("misses_by") if hasattr(r, "get") else None
    if m is None or pd.isna(m) or m == 0:
        return ""
    return ("misses an exact value" if m == float("inf") else
            f"misses by {m:.1f} interval widths")


def format_verdicts(df: pd.DataFrame) -> str:
    s = df.attrs.get("setting", {})
    lines = [f"claims: {df.attrs.get('claims', '')} (preset {s.get('preset')}, "
             f"{s.get('tokens_per_iter', 0):,} tokens/iter, "
             f"{fmt_tokens(s.get('data_tokens', 0))} unique tokens)", ""]
    for _, r in df.iterrows():
        val = "-" if r["value"] is None or pd.isna(r["value"]) else \
            f"{r['value']:.3g} [{r['low']:.3g}, {r['high']:.3g}]"
        v = r["verdict"]
        shown = v.upper() if r["basis_kind"] in STRONG else v  # shouting only on a strong basis
        how = strength_text(r)
        lines.append(f"{shown:>30}  {r['claim']}")
        lines.append(f"{'':>30}  fwlab: {val} ({r['basis'] or 'no basis'}"
                     + (f"; {how}" if how else "") + ")"
                     + (f" — {r['note']}" if r["note"] else ""))
    return "\n".join(lines)


def main(args) -> int:
    df = check_claims(args.claims, args.from_, mfu_range=pl.parse_mfu_range(args.mfu))
    print(format_verdicts(df))
    if args.csv:
        atomic_write_text(args.csv, df.to_csv(index=False))
    return 0
