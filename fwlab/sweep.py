"""Budget sweeps: many training runs, each one an execution of notebooks/02_train.ipynb by papermill.

Two modes answer "how many iterations should I train?":
- `independent`: one full run per budget B, each with its own schedule (cosine by default).
- `wsd`: one trunk at constant learning rate after warmup, and for each budget B a cooldown branch
  that starts from the trunk's checkpoint at K = B - round(cooldown_frac * B) and decays to B.
  The trunk is itself the largest budget's run (a WSD run whose cooldown is that budget's branch), and
  checkpoints exactly at every other branch point. Reference budgets 6k/10k/15k/20k with
  cooldown_frac 0.2 cost 20,000 + 1,200 + 2,000 + 3,000 = 26,200 iterations instead of 51,000.
  Every run of a wsd sweep gets the same explicit warmup_iters (the default warmup depends on
  max_iters, which differs per budget, and branches must share the trunk's warmup).

Layout (each run directory is a plain run directory, see fwlab/train.py):
    SWEEP/sweep.json          the plan and every run's state, rewritten atomically on each change
    SWEEP/runs/NAME/          config.json, metrics.jsonl, final.json, ckpt/, train.ipynb
                              (NAME = "b" + the budget in iterations, e.g. b6000)
    SWEEP/configs/NAME.json   the run's whole TrainConfig as the sweep resolved it (validated once,
                              when the sweep is planned); the training notebook's `config_file`

sweep.json:
    mode, budgets (sorted), epochs (the --epochs targets or null), data, train_tokens (with
    --epochs), preset, tokens_per_iter, cooldown_frac (wsd), warmup_iters (the one shared by a wsd
    sweep's runs), status (running | completed | failed | interrupted), planned_iters,
    total_iters_computed (the sum of the runs' iters_computed), created, updated, fwlab_version,
    code (fwlab/records.py: version, git commit, dirty flag and diff hash of the code that ran),
    config (every run's shared TrainConfig fields, as last invoked), plan (what identifies the
    sweep: the budgets, the runs and the settings that change the maths; re-running with another
    plan is refused, while e.g. --micro-batch or --device may change), and
    runs: [{name, budget, role (run | trunk | branch), max_iters, parent (a run name or null),
            branch_iter (the parent's iteration it starts from, or null), planned_iters,
            status (pending | running | completed | early_stopped | diverged | failed | skipped |
            interrupted), iters_computed (iterations this run itself computed), final_val_loss,
            wall_s, error + error_detail (failed/diverged), reason (skipped)}]

Running the same sweep again skips finished runs and lets interrupted ones resume from their
checkpoints (the trainer resumes a run directory by itself). A failing run is recorded with its
error and its executed notebook and the others go on; branches of a failed trunk are skipped.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import os
import sys
import threading
import time
import traceback
from pathlib import Path

import papermill as pm
from papermill.exceptions import PapermillExecutionError
from tqdm.auto import tqdm

from fwlab import __version__
from fwlab import schedule as sched
from fwlab.config import TrainConfig, overrides_from_args, parse_int_list
from fwlab.data import train_tokens as data_train_tokens
from fwlab.errors import FwlabError, WriteError, os_problem
from fwlab.records import code_record
from fwlab.runs import ENDED, FINISHED, MetricsTail, last_iter, load_runs, read_final, read_sweep
from fwlab.utils import asset, atomic_write_json, kernel_config, resolve_path, strip_ansi

NOTEBOOK = asset("notebooks", "02_train.ipynb")
MODES = ("independent", "wsd")
OK = FINISHED                               # run statuses that count as done
# Settings the plan decides per run; the user cannot give them to a sweep.
PER_RUN = ("out", "max_iters", "init_from", "init_iter")


# --- the plan ------------------------------------------------------------------------------------
def check_budgets(budgets, hint: str = "") -> list[int]:
    budgets = [int(b) for b in budgets]
    if not budgets:
        raise FwlabError("no budgets given: pass --budgets 6000,10000,... or --epochs 0.85,1.42,...")
    for b in budgets:
        if b < 1:
            raise FwlabError(f"budget {b} iterations: every budget must be at least 1 iteration")
    dup = sorted({b for b in budgets if budgets.count(b) > 1})
    if dup:
        raise FwlabError(f"duplicate budget(s) {', '.join(map(str, dup))} iterations; give distinct "
                         f"budgets{hint}")
    return sorted(budgets)


def epochs_to_budgets(epochs, train_tokens: int, tokens_per_iter: int) -> list[int]:
    """Epoch targets of a training set of `train_tokens` -> iteration budgets (rounded)."""
    out = []
    for e in epochs:
        e = float(e)
        if not (math.isfinite(e) and e > 0):  # inf: an OverflowError in round() below
            raise FwlabError(f"--epochs: {e} is not a finite, positive number of epochs")
        b = int(round(e * train_tokens / tokens_per_iter))
        if b < 1:
            raise FwlabError(f"--epochs {e}: {e} x {train_tokens:,} train tokens is less than one "
                             f"iteration of {tokens_per_iter:,} tokens; lower --tokens-per-iter "
                             f"or give more epochs")
        out.append(b)
    return check_budgets(out, hint=f" (epoch targets {', '.join(map(str, epochs))} round to "
                                   f"{', '.join(map(str, out))} iterations of this data)")


def run_name(budget: int) -> str:
    return f"b{budget}"


def plan_sweep(mode: str, budgets, cooldown_frac: float = 0.2, warmup_iters: int | None = None,
               schedule: str | None = None) -> list[dict]:
    """The runs of a sweep, in execution order (a trunk before its branches).

    Each spec: name, budget, role (run | trunk | branch), max_iters, parent, branch_iter, planned_iters
    (iterations this run itself computes) and settings (TrainConfig fields the plan fixes for it)."""
    if mode not in MODES:
        raise FwlabError(f"--mode {mode!r}: choose one of {', '.join(MODES)}")
    budgets = check_budgets(budgets)
    if mode == "independent":
        settings = {"schedule": schedule or "cosine"}
        if warmup_iters is not None:
            settings["warmup_iters"] = int(warmup_iters)
        return [dict(name=run_name(b), budget=b, role="run", max_iters=b, parent=None,
                     branch_iter=None, planned_iters=b, settings=dict(settings)) for b in budgets]

    if schedule not in (None, "wsd"):
        raise FwlabError(f"--schedule {schedule}: a wsd sweep's runs all use the wsd schedule; "
                         f"use --mode independent for {schedule} runs")
    if not 0 < cooldown_frac < 1:
        raise FwlabError(f"--cooldown-frac {cooldown_frac}: a wsd sweep needs it in (0, 1)")
    # Every budget needs an iteration at constant LR and one of cooldown, said in the terms the
    # user gave (a budget of 1 would otherwise fail on the warmup_iters the plan derived).
    for bud in budgets:
        cool = int(round(cooldown_frac * bud))
        if not 1 <= cool < bud:
            least = next(n for n in range(2, 10**7) if 1 <= int(round(cooldown_frac * n)) < n)
            raise FwlabError(f"budget {bud}: too small for a wsd sweep: its cooldown "
                             f"(--cooldown-frac {cooldown_frac:g} of {bud} iterations) rounds to "
                             f"{cool} iterations, and a budget needs at least one before its "
                             f"cooldown and one in it; give budgets of at least {least}")
    # One warmup for every run: the smallest budget's default, so its branch point lies after it.
    w = int(warmup_iters) if warmup_iters is not None else sched.default_warmup(budgets[0])
    w_is = "" if warmup_iters is not None else ", the default: 5% of the smallest budget"
    top = budgets[-1]
    trunk = run_name(top)
    # each branch starts where its budget's cooldown starts, by the schedule's own rule, so its
    # LR equals the trunk's up to that iteration
    points = {b: sched.cooldown_start(b, cooldown_frac) for b in budgets[:-1]}
    for b, k in points.items():
        if k < 1 or k < w:
            raise FwlabError(f"budget {b}: its cooldown would start at iteration {k}, inside the "
                             f"warmup ({w} iterations{w_is}); give --warmup-iters below {k} or larger "
                             f"budgets")
    ckpt_at = ",".join(str(k) for k in sorted(set(points.values())))
    specs = [dict(name=trunk, budget=top, role="trunk", max_iters=top, parent=None,
                  branch_iter=None, planned_iters=top,
                  settings={"schedule": "wsd", "warmup_iters": w, "ckpt_at": ckpt_at})]
    for b, k in points.items():
        specs.append(dict(name=run_name(b), budget=b, role="branch", max_iters=b, parent=trunk,
                          branch_iter=k, planned_iters=b - k,
                          settings={"schedule": "wsd", "warmup_iters": w}))
    return specs


def planned_total(specs) -> int:
    return sum(s["planned_iters"] for s in specs)


# --- the sweep directory -------------------------------------------------------------------------
def _plan_diff(old: dict, new: dict) -> str:
    """What differs between two plans, for the error message: 'budgets: [..] there, [..] now'."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b or k == "runs":  # runs follow from the rest
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{k}.{f}: {a.get(f)!r} there, {b.get(f)!r} now"
                    for f in sorted(set(a) | set(b)) if a.get(f) != b.get(f)]
        else:
            out.append(f"{k}: {a!r} there, {b!r} now")
    return "; ".join(out) or "its runs differ"


class Sweep:
    """SWEEP/sweep.json and the runs under SWEEP/runs/."""

    def __init__(self, out, plan: dict, specs: list[dict], meta: dict):
        self.dir = Path(out)
        plan = json.loads(json.dumps(plan))  # compare like with like: what sweep.json holds
        self.plan, self.specs = plan, specs
        self.path = self.dir / "sweep.json"
        if self.path.is_file():
            old = read_sweep(self.path)
            if old.get("plan") != plan:
                raise FwlabError(f"{self.path}: this directory holds a different sweep ("
                                 f"{_plan_diff(old.get('plan') or {}, plan)}); re-run its own "
                                 f"command to resume it, or choose another --out")
            self.state = old
            self.state.update(meta)
        else:
            if self.dir.exists() and any(self.dir.iterdir()):
                raise FwlabError(f"{self.dir}: exists, is not empty and holds no sweep.json; "
                                 f"choose another --out")
            self.state = dict(meta, plan=plan, created=time.strftime("%Y-%m-%dT%H:%M:%S"),
                              runs=[{k: s[k] for k in ("name", "budget", "role", "max_iters",
                                                       "parent", "branch_iter", "planned_iters")}
                                    | {"status": "pending", "iters_computed": 0}
                                    for s in specs])
        self.runs = {r["name"]: r for r in self.state["runs"]}
        self._lock()
        self.save()

    def _lock(self) -> None:
        # Two processes driving one sweep would train the same runs at once; the lock dies with us.
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock_file = open(self.dir / ".lock", "w")
        except OSError as e:  # read-only, no permission, a parent that is a file
            kept = "; its sweep.json and runs are as they were" if self.path.is_file() else ""
            where = e.filename or self.dir
            raise WriteError(f"--out {self.dir}: cannot write the sweep there ({where}: "
                             f"{os_problem(e)}); nothing was written{kept}", os_problem(e)) from None
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise FwlabError(f"{self.dir}: another fwlab sweep is running in this directory") from None

    def run_dir(self, name: str) -> Path:
        return self.dir / "runs" / name

    def save(self) -> None:
        runs = self.state["runs"]
        self.state["total_iters_computed"] = sum(int(r.get("iters_computed") or 0) for r in runs)
        self.state["planned_iters"] = sum(r["planned_iters"] for r in runs)
        self.state["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        atomic_write_json(self.path, self.state)

    def update(self, name: str, **kv) -> None:
        rec = self.runs[name]
        for k, v in kv.items():
            if v is None:
                rec.pop(k, None)
            else:
                rec[k] = v
        self.save()

    def refresh(self, name: str) -> dict:
        """Bring a run's record in line with its directory (the source of truth)."""
        rec = self.runs[name]
        d = self.run_dir(name)
        start = rec["branch_iter"] or 0
        top = last_iter(d)
        iters = max(0, (top if top is not None else start) - start)
        fin = read_final(d)
        kv = dict(iters_computed=iters)
        if fin is None and rec["status"] in OK:  # its directory was removed: run it again
            kv["status"] = "pending"
        if fin is not None:
            kv.update(final_val_loss=fin.get("final_val_loss"), wall_s=fin.get("wall_s"))
            if fin.get("iters") is not None:
                kv["iters_computed"] = max(0, int(fin["iters"]) - start)
            if fin.get("status") in OK:
                kv.update(status=fin["status"], error=None, error_detail=None, reason=None)
            elif fin.get("status") == "diverged":
                kv.update(status="diverged",
                          error=fin.get("error") or fin.get("message")
                          or f"diverged: non-finite loss by iteration {fin.get('iters')}")
        self.update(name, **kv)
        return rec


# --- executing one run ---------------------------------------------------------------------------
def notebook_parameters(nb: Path) -> set[str]:
    if not nb.is_file():
        raise FwlabError(f"{nb}: the training notebook is missing (a sweep executes it for every "
                         f"run)")
    return set(pm.inspect_notebook(str(nb)))


def config_file(sweep_dir: Path, name: str) -> Path:
    """SWEEP/configs/NAME.json: the run's whole TrainConfig, resolved by the sweep, which the
    training notebook reads as its one parameter `config_file`."""
    return sweep_dir / "configs" / f"{name}.json"


def _short_error(e: BaseException) -> tuple[str, str]:
    """(one line, the last lines of the traceback) of a failed run, without terminal colours."""
    if isinstance(e, PapermillExecutionError):
        first = f"{e.ename}: {strip_ansi(str(e.evalue)).strip()}"
        tb = strip_ansi("\n".join(e.traceback or []))
    else:
        first = f"{type(e).__name__}: {str(e).strip()}"
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    first = first.splitlines()[0] if first.strip() else type(e).__name__
    return first[:500], "\n".join(tb.strip().splitlines()[-20:])


class _Progress:
    """One bar across the sweep in iterations computed, fed by a thread that follows the current
    run's metrics.jsonl while papermill runs it."""

    def __init__(self, total: int, done_iters: int, n_runs: int, enabled: bool):
        self.bar = tqdm(total=total, initial=done_iters, unit="it", desc="sweep",
                        disable=not enabled, dynamic_ncols=True)
        self.n_runs, self.runs_done = n_runs, 0
        self._stop = threading.Event()  # only the polling thread touches the bar while a run runs
        self._thread = None

    def _postfix(self, name, it, max_iters, tail=None):
        losses = "".join(f" | {label} {v:.4f}" for label, v in (
            ("loss", tail.loss if tail else None), ("val", tail.val_loss if tail else None))
            if v is not None)  # the current run's latest train and val loss
        self.bar.set_postfix_str(f"runs {self.runs_done}/{self.n_runs} | {name} iter "
                                 f"{it}/{max_iters}{losses}", refresh=False)

    def _advance(self, tail, start, seen, name, max_iters):
        top = tail.poll()
        if top is not None and top - start > seen[0]:
            self.bar.update(top - start - seen[0])
            seen[0] = top - start
        self._postfix(name, top if top is not None else start, max_iters, tail)
        self.bar.refresh()

    def start_run(self, run_dir: Path, start: int, name: str, max_iters: int):
        tail, seen = MetricsTail(run_dir / "metrics.jsonl"), [0]
        # iterations already in the directory (an interrupted run) were counted when the sweep began
        tail.poll()
        seen[0] = max(0, (tail.top or start) - start)
        self._stop.clear()

        # a terminal or a notebook widget redraws in place; a log file gets a line per redraw
        interactive = sys.stderr.isatty() or "ipykernel" in sys.modules

        def loop():
            while not self._stop.wait(1.0 if interactive else 30.0):
                self._advance(tail, start, seen, name, max_iters)
        self._args = (tail, start, seen, name, max_iters)
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def end_run(self, planned_left: int = 0):
        """Stop following the run; `planned_left` iterations that will never be computed (a failed
        or skipped run) leave the total, so the ETA stays honest."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._advance(*self._args)
            self._thread = None
        self.runs_done += 1
        self.bar.total = max(self.bar.n, self.bar.total - max(0, planned_left))
        self.bar.refresh()

    def write(self, msg: str):
        self.bar.write(msg)

    def close(self):
        self.bar.close()


def _execute(nb: Path, out_nb: Path, params: dict, cwd: str) -> None:
    # The kernel inherits os.environ (HF_*_OFFLINE, TIKTOKEN_CACHE_DIR, ...). Its own log level is
    # raised so its start-up notices do not interleave with the sweep's bar; the run's warnings
    # and errors still land in the executed notebook.
    pm.execute_notebook(str(nb), str(out_nb), parameters=params, kernel_name="python3",
                        cwd=cwd, progress_bar=False, log_output=False, start_timeout=180,
                        extra_arguments=["--IPKernelApp.log_level=CRITICAL"], config=kernel_config())


# --- the sweep -----------------------------------------------------------------------------------
def run_sweep(out, data, mode: str = "independent", budgets=None, epochs=None,
              config: dict | None = None, run_overrides: dict | None = None,
              progress: bool = True, notebook=None) -> dict:
    """Plan and run (or resume) a sweep into `out`; returns the final sweep.json contents.

    config: TrainConfig fields (those the user gave) applied to every run; out/max_iters/init_*
    are decided by the plan. run_overrides: {run name: {field: value}} applied to one run after the
    plan is validated (to study a single run's setting, and how tests inject a failing run); they
    are part of the plan, so resuming needs the same ones."""
    config = dict(config or {})
    out = resolve_path(out)
    given = sorted(k for k in PER_RUN if config.get(k) is not None)
    if given:
        raise FwlabError(f"a sweep sets {', '.join(given)} per run; do not give them")
    data = resolve_path(data)
    if not (data / "manifest.json").is_file():
        raise FwlabError(f"{data}: no manifest.json; prepare the data first (fwlab prepare --out "
                         f"{data})")
    config["data"] = str(data)
    base = TrainConfig.from_dict({k: v for k, v in config.items() if k not in PER_RUN})
    base.progress = False  # the sweep's own bar follows the run; the notebook's would flood it
    if mode == "wsd":
        base.schedule = "wsd"

    train_tokens = None
    if (budgets is None) == (epochs is None):
        raise FwlabError("give exactly one of --budgets and --epochs")
    if epochs is not None:
        train_tokens = int(data_train_tokens(str(data)))
        budgets = epochs_to_budgets(epochs, train_tokens, base.tokens_per_iter)
    specs = plan_sweep(mode, budgets, cooldown_frac=base.cooldown_frac,
                       warmup_iters=config.get("warmup_iters"), schedule=config.get("schedule"))
    for s in specs:
        s["config"] = _run_config(base, s, Path(out))
        TrainConfig.from_dict(s["config"]).validate()
    for name, ov in (run_overrides or {}).items():
        spec = next((s for s in specs if s["name"] == name), None)
        if spec is None:
            raise FwlabError(f"run_overrides: no run named {name!r} in this sweep "
                             f"({', '.join(s['name'] for s in specs)})")
        spec["config"].update(ov)

    # The plan is what a resumed sweep must share: the settings that change the maths (the
    # trainer's own rule). The rest (micro_batch, device, eval cadence, ...) may change between
    # sessions, e.g. a smaller --micro-batch after running out of memory.
    from fwlab.train import MATH_FIELDS  # here: fwlab.train imports torch (~1 s)
    ident = set(MATH_FIELDS) | {"data", "preset", "n_layer", "n_head", "n_embd", "block_size"}
    full = {k: v for k, v in base.to_dict().items() if k not in PER_RUN}
    plan = dict(mode=mode, budgets=sorted(s["budget"] for s in specs),
                epochs=list(epochs) if epochs else None,
                config={k: v for k, v in full.items() if k in ident},
                runs=[{k: v for k, v in s.items() if k != "config"} for s in specs],
                run_overrides=run_overrides or {})
    meta = dict(config=full, mode=mode, budgets=sorted(s["budget"] for s in specs),
                epochs=[float(e) for e in epochs] if epochs else None, data=str(data),
                train_tokens=train_tokens, preset=base.preset, tokens_per_iter=base.tokens_per_iter,
                cooldown_frac=base.cooldown_frac if mode == "wsd" else None,
                warmup_iters=specs[0]["settings"].get("warmup_iters"), fwlab_version=__version__,
                code=code_record())
    sw = Sweep(out, plan, specs, meta)
    return _execute_all(sw, specs, resolve_path(notebook) if notebook else NOTEBOOK, progress)


def _run_config(base: TrainConfig, spec: dict, out: Path) -> dict:
    settings = dict(spec["settings"])
    if "ckpt_at" in settings and base.ckpt_at:  # the user's --ckpt-at and the branch points
        keep = set(base.ckpt_at_iters()) | set(parse_int_list(settings["ckpt_at"]))
        settings["ckpt_at"] = ",".join(map(str, sorted(keep)))
    cfg = dataclasses.replace(base, **settings)
    cfg.max_iters = spec["max_iters"]
    cfg.out = str((out / "runs" / spec["name"]).resolve())
    if spec["parent"]:
        cfg.init_from = str((out / "runs" / spec["parent"]).resolve())
        cfg.init_iter = spec["branch_iter"]
    return cfg.to_dict()


def _execute_all(sw: Sweep, specs: list[dict], nb: Path, progress: bool) -> dict:
    if "config_file" not in notebook_parameters(nb):
        raise FwlabError(f"{nb}: its parameters cell has no `config_file`, through which a sweep "
                         f"hands each run its config")
    for s in specs:  # what the directories already hold (a resumed sweep)
        sw.refresh(s["name"])
    sw.state["status"] = "running"
    sw.save()
    done_iters = sum(sw.runs[s["name"]]["iters_computed"] for s in specs)
    bar = _Progress(planned_total(specs), done_iters, len(specs), progress)
    cwd = os.getcwd()
    try:
        for s in specs:
            name, rec = s["name"], sw.runs[s["name"]]
            left = lambda: max(0, s["planned_iters"] - rec["iters_computed"])  # noqa: E731
            if rec["status"] in OK:
                bar.end_run()
                continue
            if s["parent"] and sw.runs[s["parent"]]["status"] not in OK:
                sw.update(name, status="skipped", reason=f"trunk {s['parent']} did not finish "
                          f"({sw.runs[s['parent']]['status']})")
                bar.end_run(left())
                continue
            if rec["status"] == "diverged":  # a finished run: running it again diverges again
                bar.end_run(left())
                continue
            rd = sw.run_dir(name)
            partial = sw.dir / ".partial" / f"{name}.ipynb"
            partial.parent.mkdir(parents=True, exist_ok=True)
            sw.update(name, status="running", reason=None, started=time.strftime("%Y-%m-%dT%H:%M:%S"))
            bar.start_run(rd, s["branch_iter"] or 0, name, s["max_iters"])
            err = None
            try:
                conf = config_file(sw.dir, name)
                atomic_write_json(conf, s["config"])
                _execute(nb, partial, {"config_file": str(conf)}, cwd)
            except KeyboardInterrupt:
                bar.end_run()
                _keep_notebook(partial, rd)
                sw.refresh(name)
                if rec["status"] not in OK:
                    sw.update(name, status="interrupted")
                raise
            except Exception as e:  # a failing run is recorded; the other runs go on
                err = _short_error(e)
            _keep_notebook(partial, rd)
            sw.refresh(name)
            if err is not None and rec["status"] != "diverged":
                sw.update(name, status="failed", error=err[0], error_detail=err[1])
            elif err is None and rec["status"] not in ENDED:
                sw.update(name, status="failed",
                          error=f"the notebook finished but {rd / 'final.json'} is missing")
            bar.end_run(0 if rec["status"] in OK else left())
            if rec["status"] not in OK:
                bar.write(f"sweep: run {name} {rec['status']}: {rec.get('error', '')}")
    except KeyboardInterrupt:
        sw.state["status"] = "interrupted"
        sw.save()
        raise
    finally:
        bar.close()
    sw.state["status"] = "completed" if all(r["status"] in OK for r in sw.state["runs"]) else "failed"
    sw.save()
    try:
        (sw.dir / ".partial").rmdir()  # only when empty
    except OSError:
        pass
    return sw.state


def _keep_notebook(partial: Path, run_dir: Path) -> None:
    if partial.is_file():
        run_dir.mkdir(parents=True, exist_ok=True)
        os.replace(partial, run_dir / "train.ipynb")


# --- command-line entry points -------------------------------------------------------------------
def summary_lines(state: dict) -> list[str]:
    """The sweep's runs as a small text table (smallest budget first)."""
    def num(v, fmt):
        return "-" if v is None else format(v, fmt)
    rows = [f"{'run':<10} {'role':<7} {'max_iters':>9} {'computed':>9} {'status':<13} "
            f"{'val_loss':>8} {'wall_s':>8}"]
    for r in sorted(state["runs"], key=lambda r: r["max_iters"]):
        rows.append(f"{r['name']:<10} {r['role']:<7} {r['max_iters']:>9,} "
                    f"{num(r.get('iters_computed'), ','):>9} {r['status']:<13} "
                    f"{num(r.get('final_val_loss'), '.4f'):>8} {num(r.get('wall_s'), '.0f'):>8}")
        if r.get("error") or r.get("reason"):
            rows.append(f"{'':<10} -> {r.get('error') or r.get('reason')}")
    rows.append(f"iterations computed: {state['total_iters_computed']:,} "
                f"(planned {state['planned_iters']:,})")
    return rows


def main_from_args(args) -> int:
    """`fwlab sweep`: 0 when every run finished, 1 when any failed or was skipped."""
    config = overrides_from_args(args)
    out = config.pop("out")
    data = config.pop("data")
    progress = config.pop("progress", True)  # --no-progress: no sweep bar (runs never draw theirs)
    budgets = parse_int_list(args.budgets, "--budgets") if args.budgets else None
    epochs = None
    if args.epochs:
        try:
            epochs = [float(x) for x in args.epochs.split(",") if x.strip()]
        except ValueError:
            raise FwlabError(f"--epochs {args.epochs!r}: give comma-separated numbers, "
                             f"e.g. 0.85,1.42,2.13,2.85") from None
    state = run_sweep(out, data, mode=args.mode, budgets=budgets, epochs=epochs, config=config,
                      progress=progress)
    print("\n".join(summary_lines(state)))
    print(f"sweep: {Path(out) / 'sweep.json'} ({state['status']})")
    return 0 if state["status"] == "completed" else 1
