"""The report: tables and figures on a `Lab` (fwlab/runs.py), and the analysis notebook that shows
them (`fwlab report SWEEP`, `fwlab report RUN RUN ... --out DIR`).

decision_table  one row per budget: what it cost and what it bought (summary.csv), whether the
                gain is significant, and which budget the report recommends (recommend_table)
answer          the report's answer in one sentence per sweep ("train N iterations: ...")
plot_curves     every run's loss against tokens and against hours, on one figure; with published
                curves (`reference`) a third panel shows the runs among them
plot_reference  the runs among published curves alone (the training notebook's second figure)
plot_run        one run's train/val loss and learning rate (the training notebook's figure)
make_report     executes notebooks/03_analysis.ipynb into REPORT_DIR: analysis.ipynb, report.html,
                curves.png, summary.csv. The sweep's files are read once, by the notebook's kernel
                (runs.load_runs); make_report itself only looks at which of them exist.
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import papermill as pm
from matplotlib import colormaps
from matplotlib.figure import Figure
from nbconvert import HTMLExporter

from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from fwlab import forecast as fc
from fwlab import importers
from fwlab.claims import STRONG, check_claims, load_claims, strength_text
from fwlab.data import load_manifest, open_split
from fwlab.errors import FwlabError, WriteError, os_problem
from fwlab.plan import DEFAULT_MIN_GAIN_PER_HOUR, step_gains
from fwlab.runs import FINISHED, Lab
from fwlab.utils import (asset, atomic_write_bytes, atomic_write_text, fmt_tokens, kernel_config,
                         resolve_path, strip_ansi)

REPORT_FILES = ("analysis.ipynb", "report.html", "curves.png", "summary.csv")
# summary.csv: one row per budget; these columns at least (contract), with final.json's numbers
SUMMARY_COLUMNS = ("max_iters", "tokens", "epochs", "final_val_loss", "val_loss_stderr", "wall_s",
                   "iters_computed")
MAX_LABELLED = 12                 # runs beyond this: only the budgets and trunks get colours and labels
UNIGRAM_MAX_TOKENS = 50_000_000   # token counts for the unigram baseline: at most this many per split
NOTEBOOK = asset("notebooks", "03_analysis.ipynb")


# --- the decision table ------------------------------------------------------------------------
def decision_table(runs: pd.DataFrame, min_gain_per_hour: float = DEFAULT_MIN_GAIN_PER_HOUR
                   ) -> pd.DataFrame:
    """One row per budget, smallest first within each sweep: what it cost and what it bought.

    gain           final val loss of the next-smaller budget minus this one's (positive = better)
    gain_stderr    the standard error of that difference (the two evals' stderrs in quadrature)
    significant    whether |gain| exceeds one gain_stderr (None where no stderr was logged)
    hours          measured hours for this budget trained alone (fwlab/runs.py: WSD branches)
    extra_hours    hours minus the next-smaller budget's
    gain_per_hour  gain / extra_hours, in nats per hour
    gain_per_1k_iters  gain per 1,000 extra iterations (what a budget step buys when hours are
                   unknown, e.g. imported runs)
    recommended    the budget recommend_table picks for its sweep
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
        g["significant"] = [None if pd.isna(se) or pd.isna(v) else bool(abs(v) > se)
                            for v, se in zip(g["gain"], g["gain_stderr"])]
        g["gain_per_1k_iters"] = g["gain"] / g["max_iters"].astype(float).diff() * 1000
        rec = recommend_table(g, min_gain_per_hour)
        g["recommended"] = [r == rec["run"] for r in g["run"]]
        out.append(g)
    cols = ["sweep", "run", "max_iters", "tokens", "epochs", "final_val_loss", "val_loss_stderr",
            "gain", "gain_stderr", "significant", "hours", "extra_hours", "gain_per_hour",
            "gain_per_1k_iters", "wall_s", "iters_computed", "status", "recommended"]
    if not out:
        return pd.DataFrame(columns=cols)
    return pd.concat(out)[cols].reset_index(drop=True)


def _finished(v) -> bool:
    return v is not None and not pd.isna(v)


def recommend_table(g: pd.DataFrame, min_gain_per_hour: float = DEFAULT_MIN_GAIN_PER_HOUR) -> dict:
    """The budget a sweep's measured results recommend (rows of one sweep, smallest first, with
    gain, gain_stderr, significant, extra_hours, gain_per_hour): walk up while each step's gain is
    significant (more than one standard error, where one was logged) and buys more than
    `min_gain_per_hour` nats per extra hour (where hours are known; else while it gains at all),
    as `fwlab plan` does with forecasts. dict(run, max_iters, reason, stopped_by)."""
    rows = [r for _, r in g.iterrows() if r["status"] in FINISHED and _finished(r["final_val_loss"])]
    if not rows:
        return dict(run=None, max_iters=None, reason="no budget finished", stopped_by=None)
    pick, reason, stop = rows[0], None, None
    for r in rows[1:]:
        step = f"going {int(pick['max_iters']):,} -> {int(r['max_iters']):,} iterations"
        se = f" ± {r['gain_stderr']:.4f}" if _finished(r["gain_stderr"]) else ""
        if r["significant"] is False:
            reason, stop = (f"{step} buys {r['gain']:+.4f}{se} nats, within one standard "
                            f"error: not shown to pay"), "not significant"
            break
        if _finished(r["gain_per_hour"]):
            if r["gain_per_hour"] <= min_gain_per_hour:
                reason, stop = (f"{step} buys {r['gain']:+.4f}{se} nats in {r['extra_hours']:.3g} "
                                f"more hours ({r['gain_per_hour']:.3g} nats/h), not more than "
                                f"{min_gain_per_hour:g} nats/h"), "threshold"
                break
        elif not (r["gain"] > 0):
            reason, stop = f"{step} buys {r['gain']:+.4f} nats: nothing", "no gain"
            break
        pick = r
    if reason is None:
        last = rows[-1]
        if len(rows) == 1:
            reason = "the only finished budget"
        elif _finished(last["gain_per_hour"]):
            reason = (f"every step up still buys more than {min_gain_per_hour:g} nats per extra "
                      f"hour (the last: {last['gain']:+.4f} nats, {last['gain_per_hour']:.3g} "
                      f"nats/h): the largest budget; a longer one may still pay")
        else:
            unk = "" if _finished(last["gain_stderr"]) else "; no stderr logged, so no test of significance"
            reason = (f"every step up still lowers the loss (the last: {last['gain']:+.4f} nats, "
                      f"{last['gain_per_1k_iters']:.3g} per 1k extra iterations); hours unknown, "
                      f"so no per-hour threshold applies{unk}")
        stop = "largest"
    return dict(run=pick["run"], max_iters=int(pick["max_iters"]), reason=reason, stopped_by=stop,
                final_val_loss=float(pick["final_val_loss"]),
                val_loss_stderr=pick["val_loss_stderr"], hours=pick["hours"],
                sweep=pick.get("sweep"))


def answer(table: pd.DataFrame, min_gain_per_hour: float = DEFAULT_MIN_GAIN_PER_HOUR) -> str:
    """The report's answer, one sentence per sweep: "train N iterations: ..." (markdown)."""
    lines = []
    for sweep, g in table.groupby("sweep", sort=True, dropna=False):
        rec = recommend_table(g, min_gain_per_hour)
        where = f"**{sweep}**: " if table["sweep"].nunique() > 1 else ""
        if rec["run"] is None:
            lines.append(f"{where}no budget finished, so there is no answer yet.")
            continue
        se = (f" ± {rec['val_loss_stderr']:.4f}" if _finished(rec["val_loss_stderr"]) else "")
        h = f" in {rec['hours']:.3g} hours (trained alone)" if _finished(rec["hours"]) else ""
        lines.append(f"{where}**train {rec['max_iters']:,} iterations**: final validation loss "
                     f"{rec['final_val_loss']:.4f}{se}{h}; {rec['reason']}.")
    return "\n\n".join(lines) if lines else "No budget run in these sources."


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
    def gain(g, se, sig):
        if pd.isna(g):
            return "–"
        text = f"{g:+.4f}" if pd.isna(se) else f"{g:+.4f} ± {se:.4f}"
        return text + (" (n.s.)" if sig is False else "")

    show = pd.DataFrame({
        "": ["◀ recommended" if r else "" for r in table["recommended"]],
        "run": list(table["run"]),
        "budget (iters)": [_fmt(v, ",") for v in table["max_iters"]],
        "tokens": [fmt_tokens(v) for v in table["tokens"]],
        "epochs": [_fmt(v, ".3g") for v in table["epochs"]],
        "val loss ± stderr": [f"{_fmt(l, '.4f')} ± {_fmt(s, '.4f')}" for l, s in
                              zip(table["final_val_loss"], table["val_loss_stderr"])],
        "gain vs smaller (nats)": [gain(g, s, sig) for g, s, sig in
                                   zip(table["gain"], table["gain_stderr"], table["significant"])],
        "hours (alone)": [_fmt(v, ".3g") for v in table["hours"]],
        "gain / extra hour (nats/h)": [_fmt(v, ".3g") for v in table["gain_per_hour"]],
        "gain / 1k extra iters (nats)": [_fmt(v, ".3g") for v in table["gain_per_1k_iters"]],
        "iters computed": [_fmt(v, ",") for v in table["iters_computed"]],
        "own wall hours": [_fmt(v / 3600 if not pd.isna(v) else v, ".3g") for v in table["wall_s"]],
        "status": list(table["status"]),
    })
    if table["hours"].notna().any():  # per 1k iterations matters only where hours are unknown
        show = show.drop(columns=["gain / 1k extra iters (nats)"])
    if table["sweep"].nunique() > 1:
        show.insert(1, "sweep", list(table["sweep"]))
    return show


def style_table(table: pd.DataFrame):
    """The decision table styled for the notebook/HTML report (pandas Styler, index hidden, the
    recommended row in bold)."""
    show = display_table(table)
    bold = list(table["recommended"])
    return _plain(show).apply(
        lambda row: ["font-weight: bold" if bold[row.name] else "" for _ in row], axis=1)


def _plain(df: pd.DataFrame, align: str = "right"):
    """A DataFrame as a Styler without its index and without truncated cells."""
    return df.style.hide(axis="index").set_table_styles(
        [{"selector": "td, th", "props": f"text-align: {align}; padding: 2px 10px; "
                                         f"white-space: normal; max-width: 60em;"}])


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
        preset = s["preset"] or (r["preset"].dropna().iloc[0] if r["preset"].notna().any() else None)
        imported = any((lab.config(k).get("imported_from") or {}) for k in r["run"])
        what = (f"preset `{preset}`" if preset else
                "model " + (f"of {fmt_tokens(r['n_params'].max())} parameters"
                            if r["n_params"].notna().any() else "unknown")
                + (" (imported runs)" if imported else ""))
        lines.append(
            f"**{s['path']}** — mode `{s['mode']}`, {what}, "
            f"budgets {', '.join(f'{int(b):,}' for b in s['budgets'])} iterations, "
            f"{_fmt(ipt, ',')} tokens/iteration, "
            + (f"{fmt_tokens(tpe)} training tokens per epoch; " if pd.notna(tpe) else
               "training-set size unknown (no epochs); ")
            + f"{len(r)} runs, {_fmt(s['total_iters_computed'], ',')} iterations computed"
            + (f" in {compute_h:.3g} measured hours." if r["wall_s"].notna().any() else
               ", their hours not recorded."))
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


def _log_axis(axis, fmt) -> None:
    """Labels at 1, 2 and 5 x 10^k (over at most 3 decades; else at powers of 10) in plain
    numbers (fmt), none on the minor ticks: matplotlib's default labels every minor tick of a
    short log axis ("3x10^4 4x10^4"), where they overlap. Call after the limits are set."""
    lo, hi = sorted(axis.get_view_interval())
    decades = math.log10(hi / lo) if lo > 0 and hi > 0 else 99
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 3 else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: fmt(v)))
    axis.set_minor_formatter(NullFormatter())


def _hours_text(v: float) -> str:
    return f"{v:.2g}" if v < 1 else f"{v:,.3g}"


def unigram_loss(lab: Lab, alpha: float = 0.5) -> dict | None:
    """The loss of a model that knows only the training set's token frequencies: cross-entropy
    of the validation tokens under the training tokens' unigram distribution, add-`alpha`
    smoothed (alpha = 0.5: the Krichevsky-Trofimov estimator; on the demo's 235k training tokens it
    gives 7.72 nats where the unsmoothed in-sample entropy is 7.45). From the runs' one prepared
    data directory (config.json "data", fwlab.data), at most UNIGRAM_MAX_TOKENS of each split;
    None when the runs name no such directory, or several."""
    dirs = {str(lab.config(r).get("data") or "") for r in lab.runs["run"]}
    dirs.discard("")
    if len(dirs) != 1:
        return None
    d = Path(next(iter(dirs)))
    if not (d / "manifest.json").is_file():
        return None
    try:
        man = load_manifest(d)
        counts, seen = np.zeros(int(man["n_vocab"]), dtype=np.int64), {}
        for split in ("train", "val"):
            n, parts = 0, []
            for sh in open_split(d, split, man):
                take = np.asarray(sh[: max(0, UNIGRAM_MAX_TOKENS - n)])
                parts.append(take)
                n += len(take)
                if n >= UNIGRAM_MAX_TOKENS:
                    break
            seen[split] = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        counts += np.bincount(seen["train"], minlength=len(counts))[: len(counts)]
    except (FwlabError, OSError, KeyError, ValueError):
        return None  # a baseline is a nicety: a data folder that cannot be read costs it, no more
    if not len(seen["val"]) or not counts.sum():
        return None
    q = (counts + alpha) / (counts.sum() + alpha * len(counts))
    return dict(loss=float(-np.log(q[seen["val"]]).mean()), data=str(d),
                train_tokens=int(counts.sum()), val_tokens=int(len(seen["val"])), alpha=alpha)


def resolve_references(reference="auto") -> tuple[list[dict], str]:
    """Published curves to overlay (fwlab.importers.reference_curves) and a line saying what they
    are. reference: "auto" (the short default selection when ../shared's reference folder is
    found, else none), None/False/[] (none), the reference-curves folder (its default
    selection), or names of published runs / curve folders (a list, or one string)."""
    if reference is None or reference is False or (isinstance(reference, (list, tuple))
                                                   and not reference):
        return [], "no published curves asked for"
    if isinstance(reference, str) and reference == "auto":
        root = importers.default_reference_dir()
        if root is None:
            return [], ("no published curves: no reference-curves folder beside the checkout "
                        "(../shared/data/reference-curves); give --reference DIR")
        return importers.reference_curves(None), f"published curves: the default selection of {root}"
    items = [reference] if isinstance(reference, (str, os.PathLike)) else list(reference)
    roots = [i for i in items if (resolve_path(i) / "runs").is_dir()]
    names = [i for i in items if i not in roots]
    refs = []
    for r in roots:
        refs += importers.reference_curves(None, root=resolve_path(r))
    if names:
        root = resolve_path(roots[0]) if roots else None
        refs += importers.reference_curves(
            [str(resolve_path(n)) if resolve_path(n).is_dir() else n for n in names], root=root)
    return refs, f"published curves: {', '.join(r['name'] for r in refs)}"


def _ref_label(ref: dict) -> str:
    """A published curve's legend text: size, dataset, schedule, source; what its loss is."""
    lab = ref["label"]
    if ref["kind"] == "val" and "[" not in lab:
        lab += f" [val: its own {ref.get('dataset') or 'data'} set]"
    return lab


def _draw_references(ax, refs: list[dict], log_x: bool) -> list:
    """Thin grey lines, one per published curve with tokens (others are listed as skipped);
    returns the (tokens, loss) tails used for the y limits."""
    tails, skipped = [], []
    shades = ["0.35", "0.6", "0.45", "0.7", "0.25"]
    styles = ["-", "--", "-.", ":"]
    for i, ref in enumerate(refs):
        if ref["tokens"] is None:
            skipped.append(ref["name"])
            continue
        x, y = np.asarray(ref["tokens"], dtype=float), np.asarray(ref["loss"], dtype=float)
        keep = (x > 0) if log_x else np.ones(len(x), bool)
        x, y = x[keep], y[keep]
        ax.plot(x, y, color=shades[i % len(shades)], lw=0.9, ls=styles[i % len(styles)],
                label=_ref_label(ref), zorder=1)
        if len(x):
            tails.append((x[x >= 0.1 * x.max()], y[x >= 0.1 * x.max()]))
    if skipped:
        ax.text(0.01, 0.01, "not drawn (no tokens per step stated): " + ", ".join(skipped),
                transform=ax.transAxes, fontsize=6, color="gray", va="bottom")
    return tails


def _draw_runs_plain(ax, lab: Lab, runs: pd.DataFrame, colors: dict, log_x: bool) -> list:
    tails = []
    for _, r in runs.iterrows():
        ev = lab.evals[lab.evals["run"] == r["run"]].sort_values("iter")
        ev = ev[ev["tokens"] > 0] if log_x else ev
        if not len(ev):
            continue
        ax.plot(ev["tokens"], ev["val_loss"], color=colors[r["run"]], lw=1.6, marker="o", ms=2,
                label=f"{r['name']} (yours)", zorder=3)
        x, y = ev["tokens"].to_numpy(float), ev["val_loss"].to_numpy(float)
        tails.append((x[x >= 0.1 * x.max()], y[x >= 0.1 * x.max()]))
    return tails


def _limits_from_tails(ax, tails, log_x: bool, baseline: float | None = None) -> None:
    ys = np.concatenate([t[1] for t in tails if len(t[1])]) if tails else np.zeros(0)
    xs = np.concatenate([t[0] for t in tails if len(t[0])]) if tails else np.zeros(0)
    if not len(ys):
        return
    lo, hi = float(np.nanmin(ys)), float(np.nanmax(ys))
    if baseline is not None and baseline < hi + 0.5 * (hi - lo or 1.0):
        hi = max(hi, baseline)
    pad = 0.06 * (hi - lo or 1.0)
    ax.set_ylim(lo - pad, hi + pad)
    if log_x and len(xs):
        ax.set_xlim(0.7 * float(xs[xs > 0].min()), 1.4 * float(xs.max()))


def plot_reference(lab: Lab, refs: list[dict], ax=None, budgets_only: bool = False, log_x=True):
    """The runs of `lab` (validation loss, colour) among published curves `refs` (thin grey
    lines; resolve_references / fwlab.importers.reference_curves) against training tokens, on
    log-x axes that hold both: where a run sits among real ones. Returns the Figure (a new one
    unless `ax` is given)."""
    fig = None
    if ax is None:
        fig = Figure(figsize=(7.5, 4.8), layout="constrained")
        ax = fig.subplots()
    runs = lab.runs[lab.runs["is_budget"]] if budgets_only else lab.runs
    runs = runs.sort_values(["sweep", "max_iters", "name"], kind="stable")
    colors = dict(zip(runs["run"], _colors(len(runs))))
    tails = _draw_references(ax, refs, log_x) + _draw_runs_plain(ax, lab, runs, colors, log_x)
    _limits_from_tails(ax, tails, log_x)
    if log_x:
        ax.set_xscale("log")
        _log_axis(ax.xaxis, fmt_tokens)
    ax.set_xlabel("training tokens")
    ax.set_ylabel("validation loss")
    ax.set_title("among published curves (grey: other models, data and val sets)", fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=6, loc="upper right")
    return fig if fig is not None else ax.figure


def reference_figure(lab: Lab, reference="auto"):
    """(plot_reference's Figure or None, a line saying what was drawn or why nothing): for the
    training notebook, where a missing or unreadable reference folder must cost the figure only."""
    try:
        refs, what = resolve_references(reference)
    except FwlabError as e:
        return None, f"no published curves: {e}"
    if not refs or not len(lab.runs):
        return None, what
    return plot_reference(lab, refs), what


def plot_curves(lab: Lab, log_x: bool = True, train: bool = True, xs=("tokens", "hours"),
                budgets_only: bool = False, reference=None, baseline="auto", title=None):
    """Validation loss (and smoothed train loss, lighter) of every run on one axes per x quantity:
    tokens and wall-clock hours (as if each budget ran alone), epoch boundaries as dotted lines on
    both. WSD branches are drawn from their branch point (a hollow marker on the trunk's curve);
    before it their curve is the trunk's. Evaluations at tokens 0 (iteration 0) are left off log
    axes. `baseline`: the unigram loss (unigram_loss; "auto" computes it, None leaves it out),
    drawn when it is near the curves. `reference`: published curves (a list from
    resolve_references) drawn in a third panel with the runs among them, so that the first two
    keep the scale the budgets differ on. Returns a matplotlib Figure (no pyplot: safe on any
    backend)."""
    refs = list(reference or [])
    if len(lab.evals) and not lab.evals["hours"].notna().any():  # e.g. imported: no clock
        xs = [x for x in xs if x != "hours"] or ["tokens"]
    runs = lab.runs[lab.runs["is_budget"]] if budgets_only else lab.runs
    runs = runs.sort_values(["sweep", "max_iters", "name"], kind="stable")
    n_ax = len(xs) + (1 if refs else 0)
    fig = Figure(figsize=(6.5 * n_ax, 4.8), layout="constrained")
    axes = fig.subplots(1, n_ax, squeeze=False)[0]
    # many runs (an imported published sweep has ~30): the budgets and their trunks in colour,
    # the others thin and grey under one legend entry
    crowded = len(runs) > MAX_LABELLED
    trunks = set(runs["parent_run"].dropna())
    main = runs[runs["is_budget"] | runs["run"].isin(trunks)] if crowded else runs
    colors = dict(zip(main["run"], _colors(len(main))))
    multi = runs["sweep"].nunique() > 1
    uni = unigram_loss(lab) if baseline == "auto" else baseline
    for ax, x in zip(axes, xs):
        y_tail, x_max = [], 0.0
        others = 0
        for _, r in runs.iterrows():
            minor = r["run"] not in colors
            c = "0.75" if minor else colors[r["run"]]
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
            if log_x:  # iteration 0 (tokens 0) has no place on a log axis
                ev = ev[(ev[x] > 0) & (ev["tokens"] > 0)]
            xv, yv = list(ev[x]), list(ev["val_loss"])
            if bp is not None:  # the branch's line starts where it left the trunk
                xv, yv = [bp[0]] + xv, [bp[1]] + yv
            label = f"{r['sweep']}/{r['name']}" if multi else r["name"]
            label += f" ({r['max_iters']:,} it)" if not pd.isna(r["max_iters"]) else ""
            if minor:
                others += 1
                ax.plot(xv, yv, color=c, lw=0.7, zorder=1,
                        label=f"{(runs['run'].isin(colors) == False).sum()} other runs (not "
                              f"budgets)" if others == 1 else None)
            else:
                ax.plot(xv, yv, color=c, lw=1.8, ls="--" if trunk_like else "-", marker="o",
                        ms=2.5, markevery=list(range(1 if bp is not None else 0, len(xv))),
                        label=label + (" trunk" if trunk_like else ""), zorder=3)
            if len(ev) and not minor:
                x_max = max(x_max, float(ev[x].max()))
                y_tail.append(ev[[x, "val_loss"]].assign(kind="val"))
            if train and not minor:
                tr = lab.train[lab.train["run"] == r["run"]].sort_values("iter")
                smooth = tr["train_loss"].ewm(span=max(2, len(tr) // 25)).mean()
                keep = pd.Series(True, index=tr.index)
                if branched:
                    keep &= tr["iter"] >= k
                if log_x:
                    keep &= (tr[x] > 0) & (tr["tokens"] > 0)
                ax.plot(tr[x][keep], smooth[keep], color=c, lw=0.8, alpha=0.35, clip_on=True)
                if keep.any():
                    y_tail.append(pd.DataFrame({x: tr[x][keep], "val_loss": smooth[keep],
                                                "kind": "train"}))
            if bp is not None:
                ax.plot(*bp, marker="o", ms=8, mfc="none", mec="black", mew=1.2, ls="none")
        _epoch_lines(ax, lab, runs, x)
        if runs["parent_run"].notna().any():
            ax.plot([], [], marker="o", ms=8, mfc="none", mec="black", ls="none", label="branch point")
        # Show the last 99% (log-x) or 90% of the x range: the first evals (~ln 50304 = 10.8)
        # would flatten the differences between budgets, which are what the plot is for. The
        # smoothed training curves count too, so that they stay inside the axes.
        x_lo = (0.01 if log_x else 0.1) * x_max
        tail = pd.concat(y_tail) if y_tail else pd.DataFrame(columns=[x, "val_loss", "kind"])
        tail = tail[tail[x] >= x_lo]
        first = tail[(tail["kind"] == "val") & (tail[x] > 0)][x]
        if log_x and len(first):  # from the first evaluation shown: train points before it
            tail = tail[tail[x] >= float(first.min())]  # would be off-scale
        vals = tail["val_loss"].dropna()
        show_uni = False
        if len(vals):
            lo, hi = float(vals.min()), float(vals.max())
            show_uni = uni is not None and lo - 0.5 * (hi - lo or 1) < uni["loss"] < hi + 0.5 * (
                hi - lo or 1)
            if show_uni:
                lo, hi = min(lo, uni["loss"]), max(hi, uni["loss"])
            pad = 0.08 * (hi - lo or 1.0)
            ax.set_ylim(lo - pad, hi + pad)
            if log_x and len(first):
                ax.set_xlim(0.8 * max(x_lo, float(first.min())), 1.05 * x_max)
        if show_uni:
            ax.axhline(uni["loss"], color="tab:red", ls="-.", lw=0.9,
                       label=f"unigram baseline {uni['loss']:.2f} (token frequencies only)")
        if log_x:
            ax.set_xscale("log")
            _log_axis(ax.xaxis, fmt_tokens if x == "tokens" else _hours_text)
        ax.set_xlabel({"tokens": "training tokens", "hours": "wall-clock hours (budget alone)"}
                      .get(x, x))
        ax.set_ylabel("validation loss (train: light, smoothed)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    if refs:
        plot_reference(lab, refs, ax=axes[-1], budgets_only=True, log_x=True)
    if title is None:
        names = ", ".join(_sweep_name(p) for p in lab.sweeps["path"]) if len(lab.sweeps) else ""
        names = names or f"{len(lab.runs)} runs"
        title = f"Validation loss of every budget: {names}"
    fig.suptitle(title, fontsize=11)
    return fig


def _sweep_name(path) -> str:
    """A sweep's directory name, with its parent's when it is just "sweep" (results/demo/sweep)."""
    p = Path(str(path))
    return f"{p.parent.name}/{p.name}" if p.name == "sweep" and p.parent.name else p.name


def _epoch_lines(ax, lab: Lab, runs: pd.DataFrame, x: str) -> None:
    """Dotted lines at every whole epoch the runs reach: at e x tokens_per_epoch on a tokens axis;
    on an hours axis where the longest run reached those tokens (its clock)."""
    tpe = sorted({round(v) for v in runs["tokens_per_epoch"].dropna().unique() if v > 0})
    if not tpe or not len(lab.evals):
        return
    xmax = lab.evals["tokens"].max()
    if x == "hours":
        longest = runs.loc[runs["tokens"].astype(float).fillna(0).idxmax(), "run"] if len(runs) else None
        pts = pd.concat([lab.train[lab.train["run"] == longest][["tokens", "hours"]],
                         lab.evals[lab.evals["run"] == longest][["tokens", "hours"]]]
                        ).dropna().sort_values("tokens")
        if len(pts) < 2:
            return
    for t in tpe:
        for e in range(1, int(xmax // t) + 1):
            at = e * t if x == "tokens" else float(np.interp(e * t, pts["tokens"], pts["hours"]))
            if x == "hours" and e * t > pts["tokens"].max():
                continue
            ax.axvline(at, color="gray", ls=":", lw=0.9)
            ax.text(at, 0.99, f"epoch {e} ", transform=ax.get_xaxis_transform(),
                    fontsize=7, color="gray", va="top", ha="right", rotation=90)


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


def display_backtest(bt):
    """backtest_summary for reading: a Styler without the index, the method in full (wrapped)."""
    return _plain(bt, "left")


def display_plain(df: pd.DataFrame):
    """Any small table for the report: no index, nothing truncated."""
    return _plain(df, "left")


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
        "strength": [strength_text(r) or "–" for _, r in verdicts.iterrows()],
        "note": list(verdicts["note"]),
    })
    show["verdict"] = [v.upper() if k in STRONG and v != "consistent" else v
                       for v, k in zip(verdicts["verdict"], verdicts["basis_kind"])]
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


def make_report(sources, claims=None, log_x: bool = True, out=None, reference="auto") -> Path:
    """Execute notebooks/03_analysis.ipynb (papermill) for a sweep, several, or run directories
    trained separately, into `out` (default SWEEP/report/ for one sweep): analysis.ipynb,
    report.html (no code cells), curves.png and summary.csv (those two written by the notebook).
    `reference`: published curves to overlay (resolve_references: "auto", None, the
    reference-curves folder, or names/curve folders). Returns the report directory."""
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
    if reference not in (None, "auto"):  # a wrong name or folder: say so before any kernel starts
        items = [reference] if isinstance(reference, (str, os.PathLike)) else list(reference)
        reference = [str(resolve_path(i)) if resolve_path(i).exists() else str(i) for i in items]
        resolve_references(reference)
    if not NOTEBOOK.is_file():
        raise FwlabError(f"{NOTEBOOK}: the analysis notebook is missing from this installation")
    tmp = out / f".analysis.{os.getpid()}.tmp.ipynb"
    given = str(sources[0]) if len(sources) == 1 else [str(s) for s in sources]
    try:
        out.mkdir(parents=True, exist_ok=True)
        _execute_report(out, tmp, sources, given, claims, log_x, reference)
    except OSError as e:  # read-only, no permission, a full disk: name the folder, keep the rest
        raise WriteError(f"report folder {out}: cannot write the report ({e.filename or out}: "
                         f"{os_problem(e)}); the runs it reads are untouched, and an earlier "
                         f"report.html and analysis.ipynb there are as they were",
                         os_problem(e)) from None
    finally:
        if tmp.parent.is_dir():
            tmp.unlink(missing_ok=True)
    return out


def _execute_report(out: Path, tmp: Path, sources: list, given, claims, log_x: bool,
                    reference) -> None:
    """The notebook into `tmp`, then report.html and analysis.ipynb (each replaced whole)."""
    try:
        nb = pm.execute_notebook(
            str(NOTEBOOK), str(tmp), kernel_name="python3", cwd=str(out),
            parameters=dict(sweep_dir=given, claims=None if claims is None else str(claims),
                            log_x=bool(log_x), report_dir=str(out), reference=reference),
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
