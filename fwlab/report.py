"""The report: tables and figures on a `Lab` (fwlab/runs.py), and the analysis notebook that shows
them (`fwlab report SWEEP`, `fwlab report RUN RUN ... --out DIR`).

decision_table  one row per budget: what it cost and what it bought (summary.csv)
plot_curves     every run's loss against tokens and against hours, on one figure
plot_run        one run's train/val loss and learning rate (the training notebook's figure)
make_report     executes notebooks/03_analysis.ipynb into REPORT_DIR: analysis.ipynb, report.html,
                curves.png, summary.csv. The sweep's files are read once, by the notebook's kernel
                (runs.load_runs); make_report itself only looks at which of them exist.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import papermill as pm
from matplotlib import colormaps
from matplotlib.figure import Figure
from nbconvert import HTMLExporter

from fwlab import forecast as fc
from fwlab.claims import check_claims, load_claims
from fwlab.errors import FwlabError, WriteError, os_problem
from fwlab.plan import step_gains
from fwlab.runs import FINISHED, Lab
from fwlab.utils import (asset, atomic_write_bytes, atomic_write_text, fmt_tokens, kernel_config,
                         resolve_path, strip_ansi)

REPORT_FILES = ("analysis.ipynb", "report.html", "curves.png", "summary.csv")
# summary.csv: one row per budget; these columns at least (contract), with final.json's numbers
SUMMARY_COLUMNS = ("max_iters", "tokens", "epochs", "final_val_loss", "val_loss_stderr", "wall_s",
                   "iters_computed")
NOTEBOOK = asset("notebooks", "03_analysis.ipynb")


# --- the decision table ------------------------------------------------------------------------
def decision_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per budget, smallest first within each sweep: what it cost and what it bought.

    gain           final val loss of the next-smaller budget minus this one's (positive = better)
    gain_stderr    the standard error of that difference (the two evals' stderrs in quadrature)
    hours          measured hours for this budget trained alone (fwlab/runs.py: WSD branches)
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
        g["gain"], g["extra_hours"], g["gain_per_hour"] = step_gains(g["final_val_loss"], g["hours"])
        g["gain_stderr"] = np.hypot(g["val_loss_stderr"].shift(1), g["val_loss_stderr"])
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


def _fmt(v, spec: str) -> str:
    return "–" if v is None or pd.isna(v) else format(v, spec)


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The decision table as strings for reading (the CSV keeps the raw numbers)."""
    show = pd.DataFrame({
        "run": list(table["run"]),
        "budget (iters)": [_fmt(v, ",") for v in table["max_iters"]],
        "tokens": [fmt_tokens(v) for v in table["tokens"]],
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
            f"{_fmt(ipt, ',')} tokens/iteration, {fmt_tokens(tpe)} training tokens per epoch; "
            f"{len(r)} runs, {_fmt(s['total_iters_computed'], ',')} iterations computed in "
            f"{compute_h:.3g} measured hours.")
        bad = r[~r["status"].isin(FINISHED)]
        for _, b in bad.iterrows():
            why = f": {b['error']}" if b["error"] else ""
            lines.append(f"- run `{b['run']}` is **{b['status']}**{why}")
    loose = lab.runs[lab.runs["sweep"] == ""]
    if len(loose):
        lines.append(f"{len(loose)} run directories: " + ", ".join(f"`{p}`" for p in loose["path"]))
    return "\n\n".join(lines)


# --- figures ---------------------------------------------------------------------------------------
def _colors(n: int):
    cmap = colormaps["viridis"]
    return [cmap(0.1 + 0.75 * i / max(1, n - 1)) for i in range(n)]


def plot_curves(lab: Lab, log_x: bool = True, train: bool = True, xs=("tokens", "hours"),
                budgets_only: bool = False):
    """Validation loss (and smoothed train loss, lighter) of every run on one axes per x quantity:
    tokens (epoch boundaries as dotted lines) and wall-clock hours (as if each budget ran alone).
    WSD branches are drawn from their branch point (a hollow marker on the trunk's curve); before it
    their curve is the trunk's. Returns a matplotlib Figure (no pyplot: safe on any backend)."""
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
            # log x: no point at 0 tokens (the evaluation before any step), on any axis
            ev = ev[(ev[x] > 0) & (ev["tokens"] > 0)] if log_x else ev
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


def plot_run(lab: Lab, run: str | None = None):
    """One run's train loss (light) and val loss ± stderr against tokens, and its learning rate
    against iterations: the training notebook's figure. `run`: its key in `lab` (default: the only
    or first run). Returns a matplotlib Figure."""
    if not len(lab.runs):
        raise FwlabError(f"{lab.describe_sources()}: no runs to plot")
    r = lab.runs.set_index("run").loc[run if run is not None else lab.runs["run"].iloc[0]]
    key = r.name
    tr = lab.train[(lab.train["run"] == key) & lab.train["own"]]
    ev = lab.evals[(lab.evals["run"] == key) & lab.evals["own"]]
    fig = Figure(figsize=(12, 4), layout="constrained")
    ax, ax_lr = fig.subplots(1, 2)
    ax.plot(tr["tokens"], tr["train_loss"], lw=0.8, alpha=0.6, label="train loss")
    if len(ev):
        ax.errorbar(ev["tokens"], ev["val_loss"], yerr=ev["val_loss_stderr"], marker="o", ms=3,
                    label="val loss ± s.e.")
    ax_lr.plot(tr["iter"], tr["lr"])
    v = r["final_val_loss"]
    ax.set(xlabel="tokens", ylabel="loss", title=f"{r['name']}: {r['status']}, final val loss "
           f"{'n/a' if pd.isna(v) else f'{v:.4f}'}")
    ax.legend()
    ax_lr.set(xlabel="iteration", ylabel="learning rate")
    return fig


# --- claims and the backtest, for the notebook ---------------------------------------------------
def claims_verdicts(claims, lab: Lab):
    """The claims file's verdicts against the runs of `lab` (fwlab.claims.check_claims: one row per
    claim) as a DataFrame, or a message (str) saying why there are none."""
    if claims is None:
        return "No claims file given (`fwlab report SWEEP --claims FILE.yaml`)."
    return check_claims(str(resolve_path(claims)), lab=lab)


def backtest_summary(lab: Lab, frac: float = 0.3):
    """fwlab.forecast.backtest as a one-row table: the longest budget's final val loss forecast
    from the first `frac` of its compute, against the value it reached; or a message (str) saying
    why the runs cannot be backtested (e.g. no completed run)."""
    try:
        r = fc.backtest(lab=lab, frac=frac)
    except FwlabError as e:
        return f"No backtest: {e}"
    row = {"run": r["run"], "epochs": round(r["epochs"], 2),
           "known at iter": f"{r['cutoff_iter']} ({100 * r['compute_frac']:.0f}% of its compute)",
           "forecast [interval]": f"{r['forecast']:.4f} [{r['low']:.4f}, {r['high']:.4f}]",
           "actual": f"{r['actual']:.4f}", "error (nats)": f"{r['error']:+.4f}",
           "inside interval": r["inside"],
           f"|error| <= {fc.TARGET_ABS_ERROR} and inside": r["passed"], "method": r["method"]}
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
                    f"tokens/iteration, {fmt_tokens(st.get('data_tokens'))} unique tokens)")
    return show.style.hide(axis="index").set_caption(caption).set_table_styles(
        [{"selector": "td, th", "props": "text-align: left; padding: 2px 10px;"}])


# --- the report ------------------------------------------------------------------------------------
def _check_source(d: Path) -> bool:
    """Whether `d` is a sweep (True) or a run directory (False), from which files exist: the files
    themselves are read once, by the notebook (a bad one fails there, naming itself)."""
    if not d.is_dir():
        raise FwlabError(f"{d}: no such directory; pass a sweep directory made by `fwlab sweep`, "
                         f"or run directories")
    if (d / "sweep.json").is_file():
        runs = d / "runs"
        if not (runs.is_dir() and any(p.is_dir() for p in runs.iterdir())):
            raise FwlabError(f"{d}: sweep has no runs (no run directory under {runs}); run "
                             f"`fwlab sweep` first")
        return True
    if not any((d / f).is_file() for f in ("config.json", "metrics.jsonl", "final.json")):
        raise FwlabError(f"{d}: neither a sweep (no sweep.json here) nor a run directory (no "
                         f"config.json, metrics.jsonl or final.json); pass a sweep directory made "
                         f"by `fwlab sweep`, or run directories")
    return False


def report_dir_for(sources, out=None) -> Path:
    """Where a report goes: `out`, else SWEEP/report for a single sweep."""
    if out is not None:
        return resolve_path(out)
    if len(sources) == 1 and (sources[0] / "sweep.json").is_file():
        return sources[0] / "report"
    raise FwlabError(f"a report of {', '.join(map(str, sources))} needs an output directory: give "
                     f"--out DIR (only a single sweep has a default, SWEEP/report)")


def make_report(sources, claims=None, log_x: bool = True, out=None) -> Path:
    """Execute notebooks/03_analysis.ipynb (papermill) for a sweep, several, or run directories
    trained separately, into `out` (default SWEEP/report/ for one sweep): analysis.ipynb,
    report.html (no code cells), curves.png and summary.csv (those two written by the notebook).
    Returns the report directory."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    sources = [resolve_path(s).resolve() for s in sources]
    if not sources:
        raise FwlabError("give a sweep directory or run directories to report on")
    for d in sources:
        _check_source(d)
    out = report_dir_for(sources, out)
    if claims is not None:
        claims = resolve_path(claims)
        load_claims(claims)  # a malformed claims file is the user's to fix: say so now
    if not NOTEBOOK.is_file():
        raise FwlabError(f"{NOTEBOOK}: the analysis notebook is missing from this installation")
    tmp = out / f".analysis.{os.getpid()}.tmp.ipynb"
    given = str(sources[0]) if len(sources) == 1 else [str(s) for s in sources]
    try:
        out.mkdir(parents=True, exist_ok=True)
        _execute_report(out, tmp, sources, given, claims, log_x)
    except OSError as e:  # read-only, no permission, a full disk: name the folder, keep the rest
        raise WriteError(f"report folder {out}: cannot write the report ({e.filename or out}: "
                         f"{os_problem(e)}); the runs it reads are untouched, and an earlier "
                         f"report.html and analysis.ipynb there are as they were",
                         os_problem(e)) from None
    finally:
        if tmp.parent.is_dir():
            tmp.unlink(missing_ok=True)
    return out


def _execute_report(out: Path, tmp: Path, sources: list, given, claims, log_x: bool) -> None:
    """The notebook into `tmp`, then report.html and analysis.ipynb (each replaced whole)."""
    try:
        nb = pm.execute_notebook(
            str(NOTEBOOK), str(tmp), kernel_name="python3", cwd=str(out),
            parameters=dict(sweep_dir=given, claims=None if claims is None else str(claims),
                            log_x=bool(log_x), report_dir=str(out)),
            progress_bar=True, start_timeout=180,  # a kernel starts slowly on a busy CPU
            config=kernel_config())
    except pm.PapermillExecutionError as e:
        failed = out / "analysis.failed.ipynb"
        os.replace(tmp, failed)  # papermill saved it before raising: keep it to read
        if e.ename == "FwlabError":  # a bad file or value: its own one-line message
            raise FwlabError(f"{strip_ansi(str(e.evalue))} (the executed notebook: "
                             f"{failed})") from None
        why = strip_ansi(f"{e.ename}: {e.evalue}")
        raise FwlabError(f"{', '.join(map(str, sources))}: the analysis notebook failed "
                         f"({why}); see the executed notebook {failed}") from None
    title = ", ".join(map(str, sources))
    html, _ = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                           exclude_output_prompt=True).from_notebook_node(
        nbformat.from_dict(nb), resources={"metadata": {"name": f"fwlab report: {title}"}})
    atomic_write_text(out / "report.html", html)
    os.replace(tmp, out / "analysis.ipynb")
    (out / "analysis.failed.ipynb").unlink(missing_ok=True)
