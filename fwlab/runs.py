"""Runs: the one reader of run and sweep directories. Everything after training (forecast, plan,
claims, the report) takes the `Lab` that `load_runs` returns; nothing else opens these files.

Files read (each once per load, CONTRACTS.md): SWEEP/sweep.json, and per run RUN/config.json,
RUN/metrics.jsonl, RUN/final.json and RUN/eval_*.json (eval_hellaswag.json: `fwlab eval`).

A `Lab` carries everything those files say:
  runs     one row per run: what was asked (max_iters, schedule, parent, branch_iter), what came out
           (final.json: final_val_loss, val_loss_stderr, tokens, epochs, wall_s, status), what it
           cost (iters_computed, hours), and HellaSwag when RUN/eval_hellaswag.json exists.
  evals    one row per validation point (metrics.jsonl lines with "val_loss").
  train    one row per training point (metrics.jsonl lines with "train_loss").
  sweeps   one row per sweep.
  configs, finals, benchmarks  per run key: config.json, final.json and {name: eval_NAME.json} as
           written, whole; sweep_files: per sweep name, sweep.json as written.

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

The sweep itself (fwlab/sweep.py) follows its runs through `read_final`, `last_iter` and
`MetricsTail`, and reads its own sweep.json back through `read_sweep`.
"""
from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fwlab.errors import FwlabError
from fwlab.utils import iter_jsonl, read_json, resolve_path

FINISHED = ("completed", "early_stopped")   # a run that reached its result
ENDED = FINISHED + ("diverged",)            # ... or stopped for good (running it again changes nothing)

_EVAL_COLS = ["run", "iter", "tokens", "epoch", "elapsed_s", "val_loss", "val_loss_stderr", "own"]
_TRAIN_COLS = ["run", "iter", "tokens", "epoch", "lr", "train_loss", "tok_per_s", "elapsed_s", "own"]
_INT_COLS = ("max_iters", "branch_iter", "iters", "tokens", "iters_computed", "tokens_per_iter",
             "n_params", "hellaswag_n")


@dataclass
class Lab:
    """What `load_runs` returns (see the module docstring)."""
    runs: pd.DataFrame
    evals: pd.DataFrame
    train: pd.DataFrame
    sweeps: pd.DataFrame
    configs: dict = field(default_factory=dict)      # run key -> config.json
    finals: dict = field(default_factory=dict)       # run key -> final.json ({} if none)
    benchmarks: dict = field(default_factory=dict)   # run key -> {name: eval_NAME.json}
    sweep_files: dict = field(default_factory=dict)  # sweep name -> sweep.json
    sources: list = field(default_factory=list)      # the directories loaded, absolute

    def config(self, run: str) -> dict:
        return self.configs.get(run) or {}

    def final(self, run: str) -> dict:
        return self.finals.get(run) or {}

    def describe_sources(self) -> str:
        return ", ".join(map(str, self.sources))


# --- single files (also what the sweep follows its runs by) -------------------------------------
def read_sweep(path) -> dict:
    """SWEEP/sweep.json, checked to be the shape fwlab/sweep.py writes where it matters to a reader:
    a JSON object whose `runs` is a list of objects with a `name`, and `budgets` a list."""
    path = Path(path)
    doc = read_json(path)
    if not isinstance(doc, dict):
        raise FwlabError(f"{path}: expected a JSON object (a sweep made by `fwlab sweep`), got "
                         f"{type(doc).__name__}")
    runs = doc.get("runs")
    if runs is not None and not isinstance(runs, list):
        raise FwlabError(f"{path}: key 'runs' must be a list of run records, got {runs!r:.60}")
    for i, e in enumerate(runs or []):
        if not isinstance(e, dict) or not isinstance(e.get("name"), str) or not e["name"]:
            raise FwlabError(f"{path}: runs[{i}] must be an object with a 'name', got {e!r:.60}")
        if e["name"] in (".", "..") or "/" in e["name"] or "\\" in e["name"]:
            # SWEEP/runs/NAME is where the run is read from: a name must not lead out of the sweep
            raise FwlabError(f"{path}: runs[{i}] name {e['name']!r} is not a folder name under "
                             f"{path.parent / 'runs'}; a sweep's runs lie inside it")
    budgets = doc.get("budgets")
    if budgets is not None and not (isinstance(budgets, list) and all(
            isinstance(b, int) and not isinstance(b, bool) for b in budgets)):
        raise FwlabError(f"{path}: key 'budgets' must be a list of iteration counts, got "
                         f"{budgets!r:.60}")
    return doc


def read_config(run_dir) -> dict | None:
    """RUN/config.json (a JSON object), or None when there is none."""
    return _maybe_json(Path(run_dir) / "config.json")


def read_final(run_dir) -> dict | None:
    """RUN/final.json, or None when the run has not finished (or the file cannot be read yet)."""
    p = Path(run_dir) / "final.json"
    if not p.is_file():
        return None
    try:
        return read_json(p)
    except FwlabError:
        return None


def last_iter(run_dir) -> int | None:
    """Highest iteration in the run's metrics.jsonl (None before the first line)."""
    p = Path(run_dir) / "metrics.jsonl"
    if not p.is_file():
        return None
    its = [r["iter"] for r in iter_jsonl(p) if isinstance(r.get("iter"), (int, float))]
    return int(max(its)) if its else None


class MetricsTail:
    """Follows a growing RUN/metrics.jsonl: only new complete lines are parsed on each poll.
    `top` is the highest iteration logged; `loss` and `val_loss` the train and validation loss
    of the latest iteration that logged one (None before any)."""

    _ITER = re.compile(rb'"iter":\s*(\d+)')
    _LOSS = re.compile(rb'"(train_loss|val_loss)":\s*(-?[0-9][0-9.eE+-]*)')

    def __init__(self, path: Path):
        self.path, self.pos, self.top = Path(path), 0, None
        self.loss: float | None = None
        self.val_loss: float | None = None
        self._at = {"train_loss": -1, "val_loss": -1}  # the iteration of each loss shown

    def poll(self) -> int | None:
        try:
            with open(self.path, "rb") as f:
                if os.fstat(f.fileno()).st_size < self.pos:  # rewritten by a restarted run
                    self.pos, self.loss, self.val_loss = 0, None, None
                    self._at = {"train_loss": -1, "val_loss": -1}
                f.seek(self.pos)
                chunk = f.read()
        except FileNotFoundError:
            return self.top
        end = chunk.rfind(b"\n")
        if end < 0:
            return self.top
        self.pos += end + 1
        for line in chunk[:end].splitlines():
            m = self._ITER.search(line)
            if m:
                it = int(m.group(1))
                self.top = it if self.top is None else max(self.top, it)
                for key, value in self._LOSS.findall(line):
                    key = key.decode()
                    if it >= self._at[key]:
                        self._at[key] = it
                        setattr(self, "loss" if key == "train_loss" else key, float(value))
        return self.top


# --- loading ---------------------------------------------------------------------------------------
def _maybe_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise FwlabError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _points(lines: list, key: str, cols: list[str], path: Path | None = None) -> pd.DataFrame:
    """The metrics.jsonl lines that have `key`, one row per iteration (a resume re-logs some
    iterations: the later line wins, it is what the finished run went through)."""
    rows = [{c: obj.get(c) for c in cols if c not in ("run", "own")} for obj in lines
            if isinstance(obj, dict) and key in obj and obj.get("iter") is not None]
    df = pd.DataFrame(rows, columns=[c for c in cols if c not in ("run", "own")])
    try:
        df = df.astype(float)  # None -> NaN (e.g. an mfu or lr that was null)
    except (TypeError, ValueError):  # a hand-edited line: name it rather than pandas' traceback
        for i, row in enumerate(rows):
            bad = [c for c, v in row.items() if v is not None and not _is_number(v)]
            if bad:
                raise FwlabError(f"{path}: the line of iteration {row.get('iter')!r} has "
                                 f"{bad[0]}={row[bad[0]]!r}, not a number") from None
        raise
    df = df.drop_duplicates("iter", keep="last").sort_values("iter", kind="stable")
    return df.reset_index(drop=True)


def _read_run(run_dir: Path, entry: dict, sweep: dict | None, sweep_name: str) -> dict:
    """One run's files -> its runs-row, its own (unstitched) eval/train points, and the files."""
    is_dir = run_dir.is_dir()
    cfg = (_maybe_json(run_dir / "config.json") if is_dir else None) or {}
    final = (_maybe_json(run_dir / "final.json") if is_dir else None) or {}
    benchmarks = {p.stem[len("eval_"):]: _maybe_json(p)
                  for p in sorted(run_dir.glob("eval_*.json"))} if is_dir else {}
    metrics = run_dir / "metrics.jsonl"
    has_metrics = is_dir and metrics.is_file()
    if not cfg and not final and not has_metrics and not entry:
        raise FwlabError(f"{run_dir}: not a run directory (no config.json, metrics.jsonl or "
                         f"final.json); pass a run or sweep directory")
    hs = benchmarks.get("hellaswag") or {}
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
        device_name=final.get("device_name") or cfg.get("device_name") or "",
        tok_per_s=final.get("tok_per_s"),
        iters_per_epoch=cfg.get("iters_per_epoch"),
        hellaswag_acc=hs.get("acc"), hellaswag_acc_norm=hs.get("acc_norm"), hellaswag_n=hs.get("n"),
    )
    lines = list(iter_jsonl(metrics)) if has_metrics else []  # the largest file: read once
    _check_numbers(run_dir, entry, cfg, final, hs)
    return dict(row=row, evals=_points(lines, "val_loss", _EVAL_COLS, metrics),
                train=_points(lines, "train_loss", _TRAIN_COLS, metrics), config=cfg, final=final,
                benchmarks=benchmarks)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# the numbers a runs-row takes from each file (whole numbers: counts of iterations and tokens)
_NUMBERS = {"config.json": (("max_iters", "init_iter", "tokens_per_iter", "n_params"),
                             ("iters_per_epoch",)),
            "final.json": (("iters", "tokens", "iters_computed"),
                           ("final_val_loss", "val_loss_stderr", "epochs", "wall_s", "tok_per_s")),
            "eval_hellaswag.json": (("n",), ("acc", "acc_norm")),
            "sweep.json": (("max_iters", "branch_iter", "iters_computed"), ())}


def _check_numbers(run_dir: Path, entry: dict, cfg: dict, final: dict, hs: dict) -> None:
    """A value of the wrong type in a hand-edited file, named with its file and key (not a
    traceback from pandas later, nor 30.7 iterations read as 30)."""
    for name, doc in (("config.json", cfg), ("final.json", final), ("eval_hellaswag.json", hs),
                      ("sweep.json", entry)):
        whole, real = _NUMBERS[name]
        for k in whole + real:
            v = doc.get(k)
            if v is None or (_is_number(v) and (k in real or float(v).is_integer()
                                                or math.isnan(v))):
                continue
            where = run_dir.parent.parent / name if name == "sweep.json" else run_dir / name
            what = "a whole number" if k in whole else "a number"
            run = f" (run {entry.get('name')!r})" if name == "sweep.json" else ""
            raise FwlabError(f"{where}{run}: {k}={v!r} must be {what} or null")


def _sources(path: Path) -> tuple[dict | None, list[tuple[Path, dict]]]:
    """A sweep dir -> (sweep.json, [(run_dir, sweep entry)]); a run dir -> (None, [(it, {})])."""
    if not path.is_dir():
        raise FwlabError(f"{path}: no such directory; pass a sweep (with sweep.json) or run directory")
    if not (path / "sweep.json").is_file():
        return None, [(path, {})]
    sweep = read_sweep(path / "sweep.json")
    listed = sweep.get("runs") or []
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
    """Load sweep directories and/or run directories into a `Lab` (see the module docstring).
    Relative paths follow fwlab's one rule (utils.resolve_path: from the repository root)."""
    if len(paths) == 1 and isinstance(paths[0], (list, tuple)):
        paths = tuple(paths[0])  # a list of directories, as the analysis notebook may give
    if not paths:
        raise FwlabError("load_runs: give at least one sweep or run directory")
    recs, sweeps, sweep_files, sources = [], [], {}, []
    for p in paths:
        p = resolve_path(p).resolve()
        sources.append(p)
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
            sweep_files[sweep_name] = sweep
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
        # a path in config.json: by fwlab's rule, else beside the run or its sweep
        for d in (resolve_path(parent), r["dir"].parent / parent, r["dir"].parent.parent / parent):
            if d.resolve() in by_dir:
                return by_dir[d.resolve()]
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
              "hellaswag_acc_norm", "tok_per_s"):
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
    key = {id(r): r["row"]["run"] for r in recs}
    return Lab(runs=runs, evals=evals, train=train, sweeps=sweeps_df,
               configs={key[id(r)]: r["config"] for r in recs},
               finals={key[id(r)]: r["final"] for r in recs},
               benchmarks={key[id(r)]: r["benchmarks"] for r in recs},
               sweep_files=sweep_files, sources=sources)


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
