"""Analysis: load runs and sweeps into pandas, draw every budget's curves, build the decision table,
and execute the report notebook (`fwlab report SWEEP`).

Everything here reads files only (CONTRACTS.md): SWEEP/sweep.json, and per run RUN/config.json,
RUN/metrics.jsonl, RUN/final.json and RUN/eval_hellaswag.json. Nothing is imported from the trainer.

Three tidy tables come out of `load_runs` (plus one row per sweep):
  runs   one row per run: what was asked (max_iters, schedule, parent, branch_iter), what came out
         (final.json: final_val_loss, val_loss_stderr, tokens, epochs, wall_s, status), what it cost
         (iters_computed, hours), and HellaSwag when RUN/eval_hellaswag.json exists.
  evals  one row per validation point (metrics.jsonl lines with "val_loss").
  train  one row per training point (metrics.jsonl lines with "train_loss").

WSD branches. A cooldown branch starts from its trunk's checkpoint at `branch_iter` and logs only
the iterations it computed itself. Its curve here is the trunk's points up to branch_iter followed by
its own (`own` says which is which), and its elapsed_s is the trunk's elapsed time at branch_iter
plus its own, i.e. the clock of a run that trained that budget alone. So, per run:
  wall_s          the run's own measured seconds (final.json), what this run itself cost;
  hours           (trunk seconds to branch_iter + wall_s) / 3600, what the budget costs on its own;
  iters_computed  the iterations this run itself computed (sweep.json, else final iters - branch_iter).

Budgets. sweep.json gives each run the "budget" it stands for (fwlab/sweep.py: in wsd mode the
trunk is itself the largest budget's run, a WSD run whose cooldown is that budget's tail). Without
that key (loose run directories, other sweep writers) a run is a budget result unless it is a
constant-learning-rate run in a wsd sweep (it never cools down, so its loss is no final result), and,
when sweep.json lists "budgets", its max_iters must be one of them.
"""
from __future__ import annotations

import io
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fwlab.errors import FwlabError
from fwlab.utils import (atomic_write_bytes, atomic_write_text, iter_jsonl, kernel_config, read_json,
                         strip_ansi)

REPORT_FILES = ("analysis.ipynb", "report.html", "curves.png", "summary.csv")
# summary.csv: one row per budget; these columns at least (contract), with final.json's numbers
SUMMARY_COLUMNS = ("max_iters", "tokens", "epochs", "final_val_loss", "val_loss_stderr", "wall_s",
                   "iters_computed")
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "03_analysis.ipynb"

_EVAL_COLS = ["run", "iter", "tokens", "epoch", "elapsed_s", "val_loss", "val_loss_stderr", "own"]
_TRAIN_COLS = ["run", "iter", "tokens", "epoch", "lr", "train_loss", "tok_per_s", "elapsed_s", "own"]
_INT_COLS = ("max_iters", "branch_iter", "iters", "tokens", "iters_computed", "tokens_per_iter",
             "n_params", "hellaswag_n")


@dataclass
class Lab:
    """What `load_runs` returns: the runs, their eval and train points, and one row per sweep."""
    runs: pd.DataFrame
    evals: pd.DataFrame
    train: pd.DataFrame
    sweeps: pd.DataFrame


# --- loading ---------------------------------------------------------------------------------------
def _maybe_json(path: Path) -> dict | None:
    return read_json(path) if path.is_file() else None


def _points(lines: list, key: str, cols: list[str]) -> pd.DataFrame:
    """The metrics.jsonl lines that have `key`, one row per iteration (a resume re-logs some
    iterations: the later line wins, it is what the finished run went through)."""
    rows = [{c: obj.get(c) for c in cols if c not in ("run", "own")} for obj in lines
            if isinstance(obj, dict) and key in obj and obj.get("iter") is not None]
    df = pd.DataFrame(rows, columns=[c for c in cols if c not in ("run", "own")])
    df = df.astype(float)  # None -> NaN (e.g. an mfu or lr that was null)
    df = df.drop_duplicates("iter", keep="last").sort_values("iter", kind="stable")
    return df.reset_index(drop=True)


def _read_run(run_dir: Path, entry: dict, sweep: dict | None, sweep_name: str) -> dict:
    """One run's files -> its runs-row plus its own (unstitched) eval/train points."""
    cfg = _maybe_json(run_dir / "config.json") or {}
    final = _maybe_json(run_dir / "final.json") or {}
    hs = _maybe_json(run_dir / "eval_hellaswag.json") or {}
    if not cfg and not final and not (run_dir / "metrics.jsonl").is_file() and not entry:
        raise FwlabError(f"{run_dir}: not a run directory (no config.json, metrics.jsonl or "
                         f"final.json); pass a run or sweep directory")
    branch_iter = entry.get("branch_iter", cfg.get("init_iter"))
    parent = entry.get("parent") or cfg.get("init_from") or None
    row = dict(
        name=entry.get("name") or run_dir.name, sweep=sweep_name, path=str(run_dir),
        mode=(sweep or {}).get("mode", ""), role=entry.get("role", ""),
        max_iters=entry.get("max_iters", cfg.get("max_iters")),
        schedule=cfg.get("schedule", ""), parent=parent,
        branch_iter=branch_iter if parent else None,
        # final.json's word when the run finished; else the sweep's (failed, skipped, pending, ...)
        status=final.get("status") or entry.get("status") or "incomplete",
        sweep_status=entry.get("status", ""),
        error=entry.get("error") or entry.get("reason") or "",
        final_val_loss=final.get("final_val_loss"), val_loss_stderr=final.get("val_loss_stderr"),
        iters=final.get("iters"), tokens=final.get("tokens"), epochs=final.get("epochs"),
        wall_s=final.get("wall_s"),
        iters_computed=entry.get("iters_computed", final.get("iters_computed")),
        tokens_per_iter=cfg.get("tokens_per_iter", (sweep or {}).get("tokens_per_iter")),
        preset=cfg.get("preset", (sweep or {}).get("preset", "")),
        n_params=cfg.get("n_params"), device=cfg.get("device", ""),
        iters_per_epoch=cfg.get("iters_per_epoch"),
        hellaswag_acc=hs.get("acc"), hellaswag_acc_norm=hs.get("acc_norm"), hellaswag_n=hs.get("n"),
    )
    metrics = run_dir / "metrics.jsonl"
    lines = list(iter_jsonl(metrics)) if metrics.is_file() else []  # the largest file: read once
    return dict(row=row, evals=_points(lines, "val_loss", _EVAL_COLS),
                train=_points(lines, "train_loss", _TRAIN_COLS))


def _sources(path: Path) -> tuple[dict | None, list[tuple[Path, dict]]]:
    """A sweep dir -> (sweep.json, [(run_dir, sweep entry)]); a run dir -> (None, [(it, {})])."""
    if not path.is_dir():
        raise FwlabError(f"{path}: no such directory; pass a sweep (with sweep.json) or run directory")
    if not (path / "sweep.json").is_file():
        return None, [(path, {})]
    sweep = read_json(path / "sweep.json")
    listed = [e for e in sweep.get("runs") or [] if isinstance(e, dict) and e.get("name")]
    found = [(path / "runs" / e["name"], e) for e in listed]
    names = {e["name"] for e in listed}
    runs_dir = path / "runs"
    if runs_dir.is_dir():  # run directories sweep.json does not (yet) list still count
        for d in sorted(runs_dir.iterdir()):
            if d.is_dir() and d.name not in names and (d / "config.json").is_file():
                found.append((d, {}))
    # a listed run without a directory (pending, or skipped after its trunk failed) stays in the
    # tables with its sweep.json status; a sweep where no run has a directory has nothing to show
    if not any(d.is_dir() for d, _ in found):
        raise FwlabError(f"{path}: sweep has no runs (sweep.json lists none with a directory under "
                         f"{runs_dir}); run `fwlab sweep` first")
    return sweep, found


def _is_budget(row: dict, entry: dict, budgets: list | None) -> bool:
    if "budget" in entry:
        return entry["budget"] is not None
    if row["mode"] == "wsd" and row["schedule"] == "constant":
        return False
    return not budgets or row["max_iters"] in budgets


def _elapsed_at(evals: pd.DataFrame, train: pd.DataFrame, it: float) -> float:
    """Wall seconds a run had spent when it completed iteration `it` (its logged points, linearly
    interpolated between them; the latest time logged at exactly `it` when there is one)."""
    pts = pd.concat([evals[["iter", "elapsed_s"]], train[["iter", "elapsed_s"]]]).dropna()
    if pts.empty:
        return float("nan")
    exact = pts.loc[pts["iter"] == it, "elapsed_s"]
    if len(exact):
        return float(exact.max())
    pts = pts.groupby("iter")["elapsed_s"].max().sort_index()
    return float(np.interp(it, pts.index.to_numpy(), pts.to_numpy()))


def load_runs(*paths) -> Lab:
    """Load sweep directories and/or run directories into a `Lab` (see the module docstring)."""
    if not paths:
        raise FwlabError("load_runs: give at least one sweep or run directory")
    recs, sweeps = [], []
    for p in paths:
        p = Path(p).resolve()
        sweep, found = _sources(p)
        sweep_name = p.name if sweep is not None else ""
        budgets = list((sweep or {}).get("budgets") or []) or None
        for run_dir, entry in found:
            if any(r["dir"] == run_dir for r in recs):  # given twice (a sweep and one of its runs)
                continue
            rec = _read_run(run_dir, entry, sweep, sweep_name)
            rec["row"]["is_budget"] = _is_budget(rec["row"], entry, budgets)
            rec["dir"] = run_dir
            recs.append(rec)
        if sweep is not None:
            sweeps.append(dict(sweep=sweep_name, path=str(p), mode=sweep.get("mode", ""),
                               budgets=list(sweep.get("budgets") or []),
                               preset=sweep.get("preset", ""),
                               tokens_per_iter=sweep.get("tokens_per_iter"),
                               total_iters_computed=sweep.get("total_iters_computed"),
                               data=sweep.get("data", "")))

    # A run's key is its name; when names collide (two sweeps), qualify every one with its sweep.
    names = [r["row"]["name"] for r in recs]
    clash = len(set(names)) < len(names)
    for r in recs:
        row = r["row"]
        row["run"] = f"{row['sweep'] or Path(row['path']).parent.name}/{row['name']}" if clash \
            else row["name"]
    by_dir = {r["dir"]: r for r in recs}
    by_sweep_name = {(r["row"]["sweep"], r["row"]["name"]): r for r in recs}

    def find_parent(r):
        parent = r["row"]["parent"]
        if not parent:
            return None
        if r["row"]["sweep"] and (r["row"]["sweep"], parent) in by_sweep_name:
            return by_sweep_name[(r["row"]["sweep"], parent)]
        for base in (Path.cwd(), r["dir"].parent, r["dir"].parent.parent):  # a path in config.json
            d = (base / parent).resolve()
            if d in by_dir:
                return by_dir[d]
        return None

    done: dict[int, tuple] = {}

    def stitched(r, seen=()):
        """(evals, train, seconds before this run's own first step) as if the run trained alone."""
        if id(r) in done:
            return done[id(r)]
        ev, tr = r["evals"].assign(own=True), r["train"].assign(own=True)
        offset = 0.0
        par = find_parent(r)
        k = r["row"]["branch_iter"]
        if not r["dir"].is_dir():  # never started: no curve, not even the trunk's part
            par = None
        if par is not None and k is not None and id(par) not in seen:
            pev, ptr, _ = stitched(par, seen + (id(r),))
            offset = _elapsed_at(pev, ptr, k)
            ev = ev.assign(elapsed_s=ev["elapsed_s"] + offset)
            tr = tr.assign(elapsed_s=tr["elapsed_s"] + offset)
            # the branch's own line at k (if it logs its starting point) wins over the trunk's
            ev = pd.concat([pev[pev["iter"] <= k].assign(own=False), ev])
            tr = pd.concat([ptr[ptr["iter"] <= k].assign(own=False), tr])
            ev = ev.drop_duplicates("iter", keep="last").sort_values("iter", kind="stable")
            tr = tr.drop_duplicates("iter", keep="last").sort_values("iter", kind="stable")
            r["row"]["parent_run"] = par["row"]["run"]
        elif r["row"]["parent"] and r["dir"].is_dir():
            print(f"warning: {r['dir']}: parent run {r['row']['parent']!r} not loaded; its curve "
                  f"starts at iteration {k}", file=sys.stderr)
        done[id(r)] = (ev.reset_index(drop=True), tr.reset_index(drop=True), offset)
        return done[id(r)]

    rows, evs, trs = [], [], []
    for r in recs:
        ev, tr, offset = stitched(r)
        row = r["row"]
        row.setdefault("parent_run", None)
        own_s = row["wall_s"]
        if own_s is None:  # unfinished: the last time it logged
            own_pts = pd.concat([r["evals"]["elapsed_s"], r["train"]["elapsed_s"]]).dropna()
            own_s = float(own_pts.max()) if len(own_pts) else float("nan")
        row["alone_s"] = offset + own_s
        row["hours"] = row["alone_s"] / 3600
        if row["iters_computed"] is None:
            last = row["iters"] if row["iters"] is not None else (
                r["evals"]["iter"].max() if len(r["evals"]) else None)
            if last is not None and not pd.isna(last):
                row["iters_computed"] = int(last) - int(row["branch_iter"] or 0)
        row["tokens_per_epoch"] = _tokens_per_epoch(row, ev, tr)
        rows.append(row)
        evs.append(ev.assign(run=row["run"]))
        trs.append(tr.assign(run=row["run"]))

    runs = pd.DataFrame(rows)
    for c in _INT_COLS:
        runs[c] = pd.array([None if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)
                            for v in runs[c]], dtype="Int64")
    for c in ("final_val_loss", "val_loss_stderr", "epochs", "wall_s", "hellaswag_acc",
              "hellaswag_acc_norm"):
        runs[c] = runs[c].astype(float)
    lead = ["run", "name", "sweep", "is_budget", "max_iters", "schedule", "parent", "branch_iter",
            "status", "final_val_loss", "val_loss_stderr", "tokens", "epochs", "wall_s", "hours",
            "iters_computed"]
    runs = runs[lead + [c for c in runs.columns if c not in lead]]
    runs = runs.sort_values(["sweep", "max_iters", "name"], kind="stable").reset_index(drop=True)
    evals = _frame(evs, _EVAL_COLS)
    train = _frame(trs, _TRAIN_COLS)
    sweeps_df = pd.DataFrame(sweeps, columns=["sweep", "path", "mode", "budgets", "preset",
                                               "tokens_per_iter", "total_iters_computed", "data"])
    return Lab(runs=runs, evals=evals, train=train, sweeps=sweeps_df)


def _frame(parts: list[pd.DataFrame], cols: list[str]) -> pd.DataFrame:
    df = pd.concat([p[cols] for p in parts if len(p)], ignore_index=True) if any(
        len(p) for p in parts) else pd.DataFrame(columns=cols)
    df["hours"] = df["elapsed_s"].astype(float) / 3600
    df["iter"] = df["iter"].astype(int)
    df["own"] = df["own"].astype(bool)
    return df


def _tokens_per_epoch(row: dict, ev: pd.DataFrame, tr: pd.DataFrame) -> float:
    """Training-set size in tokens: config.json's iters_per_epoch x tokens_per_iter (the trainer's
    own epoch length), else final.json's tokens/epochs, else the logged points' ratio."""
    if row["iters_per_epoch"] and row["tokens_per_iter"]:
        return row["iters_per_epoch"] * row["tokens_per_iter"]
    if row["tokens"] and row["epochs"]:
        return row["tokens"] / row["epochs"]
    pts = pd.concat([ev[["tokens", "epoch"]], tr[["tokens", "epoch"]]]).dropna()
    pts = pts[pts["epoch"] > 0]
    return float((pts["tokens"] / pts["epoch"]).median()) if len(pts) else float("nan")


# --- the decision table ------------------------------------------------------------------------
def decision_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per budget, smallest first within each sweep: what it cost and what it bought.

    gain           final val loss of the next-smaller budget minus this one's (positive = better)
    gain_stderr    the standard error of that difference (the two evals' stderrs in quadrature)
    hours          measured hours for this budget trained alone (see the module docstring)
    extra_hours    hours minus the next-smaller budget's
    gain_per_hour  gain / extra_hours
    The numbers taken from final.json (tokens, epochs, final_val_loss, val_loss_stderr, wall_s) are
    copied unchanged.
    """
    if isinstance(runs, Lab):
        runs = runs.runs
    b = runs[runs["is_budget"]].sort_values(["sweep", "max_iters", "name"], kind="stable")
    out = []
    for _, g in b.groupby("sweep", sort=True, dropna=False):
        g = g.copy()
        prev_loss = g["final_val_loss"].shift(1)
        g["gain"] = prev_loss - g["final_val_loss"]
        g["gain_stderr"] = np.hypot(g["val_loss_stderr"].shift(1), g["val_loss_stderr"])
        g["extra_hours"] = g["hours"] - g["hours"].shift(1)
        ok = g["extra_hours"] > 0
        g["gain_per_hour"] = (g["gain"] / g["extra_hours"]).where(ok)
        out.append(g)
    cols = ["sweep", "run", "max_iters", "tokens", "epochs", "final_val_loss", "val_loss_stderr",
            "gain", "gain_stderr", "hours", "extra_hours", "gain_per_hour", "wall_s",
            "iters_computed", "status"]
    if not out:
        return pd.DataFrame(columns=cols)
    return pd.concat(out)[cols].reset_index(drop=True)


def write_summary(table: pd.DataFrame, path) -> Path:
    """summary.csv: the decision table (one row per budget, without its sweep column), floats in
    full round-trip precision so they equal final.json's numbers."""
    table = table.drop(columns=["sweep"], errors="ignore")
    missing = [c for c in SUMMARY_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"decision table lacks {missing}")
    buf = io.StringIO()
    table.to_csv(buf, index=False, float_format=None, lineterminator="\n")
    atomic_write_text(path, buf.getvalue())
    return Path(path)


def _fmt_tokens(n) -> str:
    if pd.isna(n):
        return "–"
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{int(n)}"


def _fmt(v, spec: str) -> str:
    return "–" if v is None or pd.isna(v) else format(v, spec)


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The decision table as strings for reading (the CSV keeps the raw numbers)."""
    show = pd.DataFrame({
        "run": list(table["run"]),
        "budget (iters)": [_fmt(v, ",") for v in table["max_iters"]],
        "tokens": [_fmt_tokens(v) for v in table["tokens"]],
        "epochs": [_fmt(v, ".3g") for v in table["epochs"]],
        "val loss ± stderr": [f"{_fmt(l, '.4f')} ± {_fmt(s, '.4f')}" for l, s in
                              zip(table["final_val_loss"], table["val_loss_stderr"])],
        "gain vs smaller": [_fmt(g, "+.4f") if pd.isna(s) else f"{g:+.4f} ± {s:.4f}"
                            for g, s in zip(table["gain"], table["gain_stderr"])],
        "hours (alone)": [_fmt(v, ".3g") for v in table["hours"]],
        "gain / extra hour": [_fmt(v, ".3g") for v in table["gain_per_hour"]],
        "iters computed": [_fmt(v, ",") for v in table["iters_computed"]],
        "own wall hours": [_fmt(v / 3600 if not pd.isna(v) else v, ".3g") for v in table["wall_s"]],
        "status": list(table["status"]),
    })
    if table["sweep"].nunique() > 1:
        show.insert(0, "sweep", list(table["sweep"]))
    return show


def style_table(table: pd.DataFrame):
    """The decision table styled for the notebook/HTML report (pandas Styler, index hidden)."""
    return display_table(table).style.hide(axis="index").set_table_styles(
        [{"selector": "td, th", "props": "text-align: right; padding: 2px 10px;"}])


def hellaswag_table(runs: pd.DataFrame) -> pd.DataFrame:
    """HellaSwag per run (RUN/eval_hellaswag.json); empty when no run has one."""
    h = runs[runs["hellaswag_acc_norm"].notna() | runs["hellaswag_acc"].notna()]
    return h[["run", "max_iters", "final_val_loss", "hellaswag_acc", "hellaswag_acc_norm",
              "hellaswag_n"]].reset_index(drop=True)


def describe(lab: Lab) -> str:
    """A markdown paragraph per sweep: what was trained and what it cost in total."""
    lines = []
    for _, s in lab.sweeps.iterrows():
        r = lab.runs[lab.runs["sweep"] == s["sweep"]]
        compute_h = r["wall_s"].sum() / 3600
        ipt = s["tokens_per_iter"] if pd.notna(s["tokens_per_iter"]) else r["tokens_per_iter"].max()
        tpe = r["tokens_per_epoch"].median()
        lines.append(
            f"**{s['path']}** — mode `{s['mode']}`, preset `{s['preset'] or r['preset'].iloc[0]}`, "
            f"budgets {', '.join(f'{int(b):,}' for b in s['budgets'])} iterations, "
            f"{_fmt(ipt, ',')} tokens/iteration, {_fmt_tokens(tpe)} training tokens per epoch; "
            f"{len(r)} runs, {_fmt(s['total_iters_computed'], ',')} iterations computed in "
            f"{compute_h:.3g} measured hours.")
        bad = r[~r["status"].isin(["completed", "early_stopped"])]
        for _, b in bad.iterrows():
            why = f": {b['error']}" if b["error"] else ""
            lines.append(f"- run `{b['run']}` is **{b['status']}**{why}")
    loose = lab.runs[lab.runs["sweep"] == ""]
    if len(loose):
        lines.append(f"{len(loose)} run directories: " + ", ".join(f"`{p}`" for p in loose["path"]))
    return "\n\n".join(lines)


# --- figures ---------------------------------------------------------------------------------------
def _colors(n: int):
    from matplotlib import colormaps
    cmap = colormaps["viridis"]
    return [cmap(0.1 + 0.75 * i / max(1, n - 1)) for i in range(n)]


def plot_curves(lab: Lab, log_x: bool = True, train: bool = True, xs=("tokens", "hours"),
                budgets_only: bool = False):
    """Validation loss (and smoothed train loss, lighter) of every run on one axes per x quantity:
    tokens (epoch boundaries as dotted lines) and wall-clock hours (as if each budget ran alone).
    WSD branches are drawn from their branch point (a hollow marker on the trunk's curve); before it
    their curve is the trunk's. Returns a matplotlib Figure (no pyplot: safe on any backend)."""
    from matplotlib.figure import Figure

    runs = lab.runs[lab.runs["is_budget"]] if budgets_only else lab.runs
    runs = runs.sort_values(["sweep", "max_iters", "name"], kind="stable")
    fig = Figure(figsize=(6.5 * len(xs), 4.8), layout="constrained")
    axes = fig.subplots(1, len(xs), squeeze=False)[0]
    colors = dict(zip(runs["run"], _colors(len(runs))))
    multi = runs["sweep"].nunique() > 1
    for ax, x in zip(axes, xs):
        y_tail, x_max = [], 0.0
        for _, r in runs.iterrows():
            c = colors[r["run"]]
            trunk_like = not r["is_budget"]
            k = r["branch_iter"] if r["parent_run"] is not None else None
            branched = k is not None and not pd.isna(k)
            ev = lab.evals[lab.evals["run"] == r["run"]]
            bp = None  # (x, loss) on the trunk's curve at the branch iteration
            if branched:
                pev = lab.evals[lab.evals["run"] == r["parent_run"]]
                ev = ev[ev["iter"] > k]
                if len(pev):
                    bp = (float(np.interp(k, pev["iter"], pev[x])),
                          float(np.interp(k, pev["iter"], pev["val_loss"])))
            ev = ev[ev[x] > 0] if log_x else ev
            xv, yv = list(ev[x]), list(ev["val_loss"])
            if bp is not None:  # the branch's line starts where it left the trunk
                xv, yv = [bp[0]] + xv, [bp[1]] + yv
            label = f"{r['sweep']}/{r['name']}" if multi else r["name"]
            label += f" ({r['max_iters']:,} it)" if not pd.isna(r["max_iters"]) else ""
            ax.plot(xv, yv, color=c, lw=1.8, ls="--" if trunk_like else "-", marker="o", ms=2.5,
                    markevery=list(range(1 if bp is not None else 0, len(xv))),
                    label=label + (" trunk" if trunk_like else ""))
            if len(ev):
                x_max = max(x_max, float(ev[x].max()))
                y_tail.append(ev[[x, "val_loss"]])
            if train:
                tr = lab.train[lab.train["run"] == r["run"]].sort_values("iter")
                smooth = tr["train_loss"].ewm(span=max(2, len(tr) // 25)).mean()
                keep = pd.Series(True, index=tr.index)
                if branched:
                    keep &= tr["iter"] >= k
                if log_x:
                    keep &= tr[x] > 0
                ax.plot(tr[x][keep], smooth[keep], color=c, lw=0.8, alpha=0.35)
            if bp is not None:
                ax.plot(*bp, marker="o", ms=8, mfc="none", mec="black", mew=1.2, ls="none")
        if x == "tokens":
            tpe = runs["tokens_per_epoch"].dropna().unique()
            xmax = lab.evals["tokens"].max() if len(lab.evals) else 0
            for t in sorted({round(v) for v in tpe if v > 0}):
                for e in range(1, int(xmax // t) + 1):
                    ax.axvline(e * t, color="gray", ls=":", lw=0.9)
                    ax.text(e * t, 0.99, f"epoch {e} ", transform=ax.get_xaxis_transform(),
                            fontsize=7, color="gray", va="top", ha="right", rotation=90)
        if runs["parent_run"].notna().any():
            ax.plot([], [], marker="o", ms=8, mfc="none", mec="black", ls="none", label="branch point")
        # Show the last 99% (log-x) or 90% of the x range: the first evals (~ln 50304 = 10.8)
        # would flatten the differences between budgets, which are what the plot is for.
        x_lo = (0.01 if log_x else 0.1) * x_max
        tail = pd.concat(y_tail) if y_tail else pd.DataFrame(columns=[x, "val_loss"])
        tail = tail[tail[x] >= x_lo]["val_loss"].dropna()
        if len(tail):
            lo, hi = float(tail.min()), float(tail.max())
            pad = 0.08 * (hi - lo or 1.0)
            ax.set_ylim(lo - pad, hi + pad)
            if log_x:  # from the first evaluation shown (train points before it are off-scale)
                first = pd.concat(y_tail)[x]
                ax.set_xlim(left=0.8 * max(x_lo, float(first[first > 0].min())))
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel({"tokens": "training tokens", "hours": "wall-clock hours (budget alone)"}
                      .get(x, x))
        ax.set_ylabel("validation loss (train: light, smoothed)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    return fig


def save_figure(fig, path, dpi: int = 120) -> bytes:
    """Save a Figure as PNG atomically; returns the PNG bytes (for IPython.display.Image)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return data


# --- claims ----------------------------------------------------------------------------------------
def claims_verdicts(claims, sweep_dir, lab: Lab | None = None):
    """The claims file's verdicts against this sweep (fwlab.claims.check_claims: one row per claim)
    as a DataFrame, or a message (str) saying why there are none. `lab`: the sweep, loaded."""
    if claims is None:
        return "No claims file given (`fwlab report SWEEP --claims FILE.yaml`)."
    from fwlab.claims import check_claims
    return check_claims(str(claims), str(sweep_dir), lab=lab)


# --- forecast backtest -----------------------------------------------------------------------------
def backtest_summary(sweep_dir, frac: float = 0.3, lab: Lab | None = None):
    """fwlab.forecast.backtest as a one-row table: the longest budget's final val loss forecast
    from the first `frac` of its compute, against the value it reached; or a message (str) saying
    why the sweep cannot be backtested (e.g. no completed run). `lab`: the sweep, loaded."""
    from fwlab.forecast import TARGET_ABS_ERROR, backtest
    try:
        r = backtest(sweep_dir, frac=frac, lab=lab)
    except FwlabError as e:
        return f"No backtest: {e}"
    row = {"run": r["run"], "epochs": round(r["epochs"], 2),
           "known at iter": f"{r['cutoff_iter']} ({100 * r['compute_frac']:.0f}% of its compute)",
           "forecast [interval]": f"{r['forecast']:.4f} [{r['low']:.4f}, {r['high']:.4f}]",
           "actual": f"{r['actual']:.4f}", "error (nats)": f"{r['error']:+.4f}",
           "inside interval": r["inside"],
           f"|error| <= {TARGET_ABS_ERROR} and inside": r["passed"], "method": r["method"]}
    return pd.DataFrame([row])


def display_claims(verdicts: pd.DataFrame):
    """Claim verdicts for reading: claimed range, fwlab's value [interval], basis, verdict, note."""
    def rng(lo, hi):
        return "–" if lo is None or pd.isna(lo) else (f"{lo:.3g}" if lo == hi else
                                                      f"{lo:.3g}–{hi:.3g}")
    show = pd.DataFrame({
        "claim": list(verdicts["claim"]),
        "verdict": list(verdicts["verdict"]),
        "fwlab": ["–" if v is None or pd.isna(v) else f"{v:.3g} [{rng(lo, hi)}]" for v, lo, hi in
                  zip(verdicts["value"], verdicts["low"], verdicts["high"])],
        "basis": list(verdicts["basis"]),
        "note": list(verdicts["note"]),
    })
    st = verdicts.attrs.get("setting") or {}
    caption = verdicts.attrs.get("claims", "")
    if st:
        caption += (f" (preset {st.get('preset')}, {int(st.get('tokens_per_iter') or 0):,} "
                    f"tokens/iteration, {_fmt_tokens(st.get('data_tokens'))} unique tokens)")
    return show.style.hide(axis="index").set_caption(caption).set_table_styles(
        [{"selector": "td, th", "props": "text-align: left; padding: 2px 10px;"}])


# --- the report ------------------------------------------------------------------------------------
def resolve_path(path) -> Path:
    """An absolute path; a relative one that is not found from here is tried from the repository
    root (the notebook's default `results/...` when JupyterLab runs it from notebooks/)."""
    p = Path(path)
    if not p.is_absolute() and not p.exists() and (NOTEBOOK.parents[1] / p).exists():
        p = NOTEBOOK.parents[1] / p
    return p.resolve()


def _check_sweep(sweep_dir: Path) -> None:
    """A sweep directory, not a run directory (load_runs takes both, and lists the runs)."""
    if not sweep_dir.is_dir():
        raise FwlabError(f"{sweep_dir}: no such directory; pass a sweep directory made by "
                         f"`fwlab sweep`")
    if not (sweep_dir / "sweep.json").is_file():
        raise FwlabError(f"{sweep_dir}: no sweep.json here; pass a sweep directory made by "
                         f"`fwlab sweep`")


def make_report(sweep, claims=None, log_x: bool = True) -> Path:
    """Execute notebooks/03_analysis.ipynb for a sweep (papermill) into SWEEP/report/: analysis.ipynb,
    report.html (no code cells), curves.png and summary.csv (those two written by the notebook).
    Returns the report directory."""
    import nbformat
    import papermill as pm
    from nbconvert import HTMLExporter

    sweep_dir = Path(sweep).resolve()
    _check_sweep(sweep_dir)
    load_runs(sweep_dir)  # no runs or bad files fail here, with their name, before a kernel starts
    if claims is not None:
        claims = Path(claims).resolve()
        if not claims.is_file():
            raise FwlabError(f"{claims}: claims file not found")
        from fwlab.claims import load_claims
        load_claims(claims)  # a malformed claims file is the user's to fix: say so now
    if not NOTEBOOK.is_file():
        raise FwlabError(f"{NOTEBOOK}: the analysis notebook is missing from this checkout")
    out = sweep_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".analysis.{os.getpid()}.tmp.ipynb"
    try:
        try:
            nb = pm.execute_notebook(
                str(NOTEBOOK), str(tmp), kernel_name="python3", cwd=str(sweep_dir),
                parameters=dict(sweep_dir=str(sweep_dir), claims=None if claims is None else
                                str(claims), log_x=bool(log_x)),
                progress_bar=True, start_timeout=180,  # a kernel starts slowly on a busy CPU
                config=kernel_config())
        except pm.PapermillExecutionError as e:
            failed = out / "analysis.failed.ipynb"
            os.replace(tmp, failed)  # papermill saved it before raising: keep it to read
            why = strip_ansi(f"{e.ename}: {e.evalue}")
            raise FwlabError(f"{sweep_dir}: the analysis notebook failed ({why}); see the executed "
                             f"notebook {failed}") from None
        html, _ = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                               exclude_output_prompt=True).from_notebook_node(
            nbformat.from_dict(nb), resources={"metadata": {"name": f"fwlab report: {sweep_dir}"}})
        atomic_write_text(out / "report.html", html)
        os.replace(tmp, out / "analysis.ipynb")
        (out / "analysis.failed.ipynb").unlink(missing_ok=True)
    finally:
        tmp.unlink(missing_ok=True)
    return out
