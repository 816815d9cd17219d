"""Other trainers' runs and published curves -> ordinary fwlab run and sweep directories.

`fwlab import FORMAT SRC --out RUN` reads one training log (a path or an http(s) URL) and writes
RUN/config.json, RUN/metrics.jsonl and RUN/final.json as `fwlab train` would (fwlab/train.py), so
`fwlab report`, `fwlab plan --from`, `fwlab check-claims --from` and the forecast read it like a run
fwlab trained. Formats (lines of other kinds are skipped; a line of the format that does not parse
is an error naming its file and line):

  llmc            llm.c main.log: `s:N tel:X` (val loss after N updates), `s:N trl:X lr:Y norm:Z`
                  (loss of the batch of update N, and its learning rate), `s:N eval:X` (HellaSwag)
  modded-nanogpt  `step:N/T val_loss:X train_time:Tms ...`, `step:N/T train_loss:X ...` (the loss of
                  the N-th update: modded-nanogpt prints step+1 after the update)
  build-nanogpt   log.txt: `N val X`, `N train X`, `N hella X`; also the nano-gpt variant
                  `val: step: N | loss: X`, `train: step: N | loss: X | ... | lr: Y`
  nanogpt         nanoGPT's stdout: `step N: train loss X, val loss Y`, `iter N: loss X, time ...`
  csv             a header with step and val_loss (or train_loss), optional tokens, lr, train_loss
  reference       a published curve's folder: curve.csv + run.json (../shared/data/reference-curves)

Conventions (those of fwlab/train.py): a metrics line with "iter" k comes after k updates; an eval
line's val_loss was measured there; a train line's train_loss is the loss of the batch of update k
(the k-th, 1-based) and its lr that update's rate, lr_array(spec)[k - 1] (fwlab/schedule.py). In csv
and reference curves the train_loss of a row goes on the line of the row's step, as the source
printed it with that step number. Every loss is the logged number itself (float of its text).

What the log does not state is recorded as null, never guessed: tokens per iteration
(--tokens-per-iter), model size (--params), dataset (--dataset), unique training tokens
(--train-tokens, which gives epochs). The learning-rate schedule (config.json `lr_schedule`, a
fwlab.schedule spec) comes from, in order: --lr-schedule (a spec as JSON), the schedule flags of
`fwlab train` (--schedule, --lr, --warmup-iters, --max-iters, --min-lr-frac, --cooldown-frac,
--cooldown-shape), or the logged learning rates: the parametric form they follow (verified against
every logged value at its printed precision), else an explicit per-step list. Flags that contradict
a logged lr are refused, naming the first line they contradict. config.json's `imported_from`
records format, source and the sha256 of the source's bytes.

`fwlab import reference ROOT --group GROUP --out SWEEP` assembles a group of published runs (a
constant-LR trunk, cooldown branches, other runs) into SWEEP/sweep.json + SWEEP/runs/NAME/ in
fwlab/sweep.py's wsd layout. Branches keep only their own points (from branch_step on); sweep.json's
parent/branch_iter give the rest, as for a sweep fwlab trained. The budget runs are, per horizon,
the WSD branch whose cooldown is closest to --cooldown-frac (default 0.2, fwlab's own) of
--cooldown-shape (default linear); every other run of the group is kept with budget null (drawn,
not in the decision table).

Everything is written into a temporary directory beside --out and renamed when complete.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fwlab import schedule as S
from fwlab.errors import FwlabError, WriteError, os_problem, os_where
from fwlab.runs import read_config, read_sweep
from fwlab.utils import atomic_write_json, folder_kind, jsonl_line

FORMATS = ("llmc", "modded-nanogpt", "build-nanogpt", "nanogpt", "csv", "reference")
# TrainConfig fields that `fwlab import` takes as flags (the schedule, the batch, the horizon)
SCHEDULE_FLAGS = ("schedule", "lr", "min_lr_frac", "warmup_iters", "max_iters", "cooldown_frac",
                  "cooldown_shape")
IMPORT_FLAGS = SCHEDULE_FLAGS + ("tokens_per_iter",)
REPO = Path(__file__).resolve().parents[1]
# the short default selection of published curves to overlay (llm.c on FineWeb, and FineWeb-Edu)
DEFAULT_REFERENCES = ("llmc_124M_adamw_cosine_19560",
                      "nanogpt_edu_124M_adamw_cosine10_19073_allenporter")
URL_TIMEOUT_S = 30


# --- reading a source --------------------------------------------------------------------------
def is_url(src) -> bool:
    return str(src).startswith(("http://", "https://"))


def fetch(url: str) -> bytes:
    """The bytes at an http(s) URL; FwlabError naming it when it cannot be read."""
    try:
        with urllib.request.urlopen(url, timeout=URL_TIMEOUT_S) as r:
            data = r.read()
            ctype = r.headers.get("Content-Type", "") or ""
    except urllib.error.HTTPError as e:
        raise FwlabError(f"{url}: HTTP {e.code} {e.reason}; check the address") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        why = getattr(e, "reason", None) or e
        raise FwlabError(f"{url}: cannot download ({why}); check the address and the network, "
                         f"or download the file and pass its path") from None
    if "text/html" in ctype.lower():
        _refuse_html(url, data, forced=True)
    return data


def read_bytes(src) -> bytes:
    if is_url(src):
        return fetch(str(src))
    p = Path(src)
    if p.is_dir():
        raise FwlabError(f"{p}: is a directory; pass the log file (or use the reference format for "
                         f"a curve.csv + run.json folder)")
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise FwlabError(f"{p}: file not found") from None
    except OSError as e:
        raise FwlabError(f"{p}: cannot read ({e.strerror})") from None


def _refuse_html(name: str, data: bytes, forced: bool = False) -> None:
    head = data[:2048].lstrip().lower()
    if forced or head.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")):
        first = data.lstrip().split(b"\n", 1)[0][:60].decode("utf-8", "replace")
        raise FwlabError(f"{name}:1: an HTML page, not a log ({first!r}); link the raw file "
                         f"(e.g. raw.githubusercontent.com/..., not github.com/.../blob/...)")


def _lines(name: str, data: bytes) -> list[str]:
    _refuse_html(name, data)
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark (spreadsheet CSVs) is not text
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise FwlabError(f"{name}:{line}: not UTF-8 text (byte {data[e.start]:#x}); is this a "
                         f"training log?") from None
    return text.splitlines()


def _short(line: str) -> str:
    return line if len(line) <= 100 else line[:97] + "..."


def _number(text: str, name: str, lineno: int, line: str, what: str = "number") -> float:
    try:
        v = float(text)
    except ValueError:
        raise FwlabError(f"{name}:{lineno}: {text!r} is not a {what}: {_short(line)!r}") from None
    if not math.isfinite(v):
        raise FwlabError(f"{name}:{lineno}: {text!r} is not a finite {what}: {_short(line)!r}")
    return v


def _int(text: str, name: str, lineno: int, line: str) -> int:
    if not re.fullmatch(r"\d+", text.strip()):
        raise FwlabError(f"{name}:{lineno}: {text!r} is not a step number: {_short(line)!r}")
    return int(text)


def _half_unit(text: str) -> float:
    """Half a unit in the last printed digit of a number's text (its printing precision)."""
    t = text.strip().lower()
    mant, _, exp = t.partition("e")
    dec = len(mant.split(".")[1]) if "." in mant else 0
    return 0.5 * 10.0 ** (-dec + (int(exp) if exp else 0))


# --- a parsed log --------------------------------------------------------------------------------
@dataclass
class Log:
    """What a source says: points keyed by fwlab iteration, logged learning rates, and facts."""
    name: str
    evals: dict = field(default_factory=dict)    # iter -> {val_loss, elapsed_s?, ...}
    trains: dict = field(default_factory=dict)   # iter -> {train_loss, elapsed_s?, grad_norm?}
    extras: dict = field(default_factory=dict)   # iter -> {hellaswag_acc_norm, ...}
    lrs: list = field(default_factory=list)      # (update index s, value, half unit, lineno, line)
    total_steps: int | None = None
    tokens_per_iter: int | None = None
    facts: dict = field(default_factory=dict)    # model/data facts a source states
    _last: dict = field(default_factory=dict)

    def add(self, table: str, it: int, lineno: int, line: str, step: int | None = None,
            **values) -> None:
        """Record a point at fwlab iteration `it`; `step` is the number the log printed (when the
        two differ), which errors quote."""
        step = it if step is None else step
        prev = self._last.get(table)
        if prev is not None and it <= prev[0]:
            word = "repeats" if it == prev[0] else f"comes after step {prev[1]}"
            raise FwlabError(f"{self.name}:{lineno}: step {step} {word} (steps must increase; a "
                             f"log of several runs? split it): {_short(line)!r}")
        self._last[table] = (it, step)
        getattr(self, table)[it] = values

    def lr(self, s: int, text: str, lineno: int, line: str) -> None:
        self.lrs.append((s, _number(text, self.name, lineno, line, "learning rate"),
                         _half_unit(text), lineno, line))

    def check_nonempty(self, what: str) -> None:
        if not self.evals and not self.trains:
            raise FwlabError(f"{self.name}: no line of the {what} format (expected e.g. "
                             f"{EXAMPLES[what]!r}); is this the right FORMAT?")


EXAMPLES = {"llmc": "s:250 tel:4.8123", "modded-nanogpt": "step:125/5100 val_loss:4.6291 ...",
            "build-nanogpt": "250 val 4.8123", "nanogpt": "step 250: train loss 4.81, val loss 4.85",
            "csv": "step,tokens,val_loss", "reference": "curve.csv + run.json"}


def _kv(rest: str, name: str, lineno: int, line: str) -> dict:
    out = {}
    for part in rest.split():
        k, sep, v = part.partition(":")
        if not sep or not k:
            raise FwlabError(f"{name}:{lineno}: {part!r} is not key:value: {_short(line)!r}")
        out[k] = v
    return out


def parse_llmc(name: str, lines: list[str]) -> Log:
    log = Log(name)
    for i, line in enumerate(lines, 1):
        if not line.startswith("s:"):
            continue
        m = re.match(r"s:(\S+)\s+(.*)$", line.strip())
        if not m:
            raise FwlabError(f"{name}:{i}: not an llm.c line (s:N key:value ...): {_short(line)!r}")
        step = _int(m.group(1), name, i, line)
        kv = _kv(m.group(2), name, i, line)
        if not {"tel", "trl", "eval"} & set(kv):
            raise FwlabError(f"{name}:{i}: no tel:, trl: or eval: value: {_short(line)!r}")
        if "tel" in kv:
            log.add("evals", step, i, line, val_loss=_number(kv["tel"], name, i, line))
        if "trl" in kv:
            v = dict(train_loss=_number(kv["trl"], name, i, line))
            if "norm" in kv:
                v["grad_norm"] = _number(kv["norm"], name, i, line)
            log.add("trains", step + 1, i, line, step=step, **v)  # the batch of update step+1 (1-based)
            if "lr" in kv:
                log.lr(step, kv["lr"], i, line)
        if "eval" in kv:
            log.add("extras", step, i, line, hellaswag_acc_norm=_number(kv["eval"], name, i, line))
    log.check_nonempty("llmc")
    return log


def _seconds(text: str, name: str, i: int, line: str) -> float | None:
    m = re.fullmatch(r"([0-9.eE+-]+)(ms|s)", text)
    if not m:
        return None
    v = _number(m.group(1), name, i, line)
    return v / 1000 if m.group(2) == "ms" else v


def parse_modded_nanogpt(name: str, lines: list[str]) -> Log:
    log = Log(name)
    for i, line in enumerate(lines, 1):
        if not line.startswith("step:"):
            continue
        m = re.match(r"step:(\S+?)/(\S+)\s*(.*)$", line.strip())
        if not m:
            raise FwlabError(f"{name}:{i}: not a modded-nanogpt line (step:N/T key:value ...): "
                             f"{_short(line)!r}")
        step, total = _int(m.group(1), name, i, line), _int(m.group(2), name, i, line)
        if log.total_steps is not None and total != log.total_steps:
            raise FwlabError(f"{name}:{i}: total steps {total} differs from {log.total_steps} "
                             f"earlier (a log of several runs? split it): {_short(line)!r}")
        log.total_steps = total
        kv = _kv(m.group(3), name, i, line)
        t = _seconds(kv["train_time"], name, i, line) if "train_time" in kv else None
        if "val_loss" in kv:
            log.add("evals", step, i, line, val_loss=_number(kv["val_loss"], name, i, line),
                    elapsed_s=t)
        if "train_loss" in kv:
            log.add("trains", step, i, line, train_loss=_number(kv["train_loss"], name, i, line),
                    elapsed_s=t)
    log.check_nonempty("modded-nanogpt")
    return log


def parse_build_nanogpt(name: str, lines: list[str]) -> Log:
    log = Log(name)
    for i, line in enumerate(lines, 1):
        s = line.strip()
        if re.match(r"\d", s):  # build-nanogpt log/log.txt
            m = re.fullmatch(r"(\d+) (val|train|hella) (\S+)", s)
            if not m:
                raise FwlabError(f"{name}:{i}: not a build-nanogpt line (N val|train|hella X): "
                                 f"{_short(line)!r}")
            step, kind, v = int(m.group(1)), m.group(2), _number(m.group(3), name, i, line)
            if kind == "val":
                log.add("evals", step, i, line, val_loss=v)
            elif kind == "train":
                log.add("trains", step + 1, i, line, step=step, train_loss=v)
            else:
                log.add("extras", step, i, line, hellaswag_acc_norm=v)
        elif s.startswith(("val:", "train:")):  # the nano-gpt variant of its stdout
            kind, _, rest = s.partition(":")
            kv = {}
            for part in rest.split("|"):
                k, sep, v = part.partition(":")
                if not sep:
                    raise FwlabError(f"{name}:{i}: {part.strip()!r} is not 'key: value': "
                                     f"{_short(line)!r}")
                kv[k.strip()] = v.strip()
            if "step" not in kv or "loss" not in kv:
                raise FwlabError(f"{name}:{i}: no 'step:' or 'loss:' field: {_short(line)!r}")
            step, v = _int(kv["step"], name, i, line), _number(kv["loss"], name, i, line)
            if kind == "val":
                log.add("evals", step, i, line, val_loss=v)
            else:
                extra = {"grad_norm": _number(kv["norm"], name, i, line)} if "norm" in kv else {}
                log.add("trains", step + 1, i, line, step=step, train_loss=v, **extra)
                if "lr" in kv:
                    log.lr(step, kv["lr"], i, line)
    log.check_nonempty("build-nanogpt")
    return log


def parse_nanogpt(name: str, lines: list[str]) -> Log:
    log = Log(name)
    for i, line in enumerate(lines, 1):
        s = line.strip()
        if re.match(r"step \d", s):
            m = re.fullmatch(r"step (\d+): train loss (\S+), val loss (\S+)", s)
            if not m:
                raise FwlabError(f"{name}:{i}: not a nanoGPT eval line (step N: train loss X, val "
                                 f"loss Y): {_short(line)!r}")
            log.add("evals", int(m.group(1)), i, line,
                    val_loss=_number(m.group(3), name, i, line),
                    train_split_loss=_number(m.group(2).rstrip(","), name, i, line))
        elif re.match(r"iter \d", s):
            m = re.match(r"iter (\d+): loss ([^,\s]+)", s)
            if not m:
                raise FwlabError(f"{name}:{i}: not a nanoGPT iter line (iter N: loss X, time ...): "
                                 f"{_short(line)!r}")
            log.add("trains", int(m.group(1)) + 1, i, line, step=int(m.group(1)),
                    train_loss=_number(m.group(2), name, i, line))
    log.check_nonempty("nanogpt")
    return log


def parse_csv(name: str, lines: list[str]) -> Log:
    log = Log(name)
    rows = csv.reader(lines)
    header = next(rows, None)
    cols = [c.strip() for c in header] if header else []
    if "step" not in cols or not ({"val_loss", "train_loss"} & set(cols)):
        raise FwlabError(f"{name}:1: no line of the csv format: the header needs step and val_loss "
                         f"(or train_loss) columns, e.g. step,tokens,val_loss,lr,train_loss; got "
                         f"{_short(','.join(cols))!r}")
    tpi = None
    for i, row in enumerate(rows, 2):
        if not any(c.strip() for c in row):
            continue
        line = ",".join(row)
        if len(row) != len(cols):
            raise FwlabError(f"{name}:{i}: {len(row)} fields, the header has {len(cols)}: "
                             f"{_short(line)!r}")
        r = {c: v.strip() for c, v in zip(cols, row)}
        step = _int(r["step"], name, i, line)
        if r.get("tokens"):
            tok = _int(r["tokens"], name, i, line)
            if step and tok % step:
                raise FwlabError(f"{name}:{i}: tokens {tok} is not a whole multiple of step {step}")
            if step:
                if tpi is not None and tok != tpi * step:
                    raise FwlabError(f"{name}:{i}: tokens {tok} is not step x {tpi} tokens per "
                                     f"step as on the rows before: {_short(line)!r}")
                tpi = tok // step
        if r.get("val_loss"):
            log.add("evals", step, i, line, val_loss=_number(r["val_loss"], name, i, line))
        if r.get("train_loss"):
            log.add("trains", step, i, line, train_loss=_number(r["train_loss"], name, i, line))
        if r.get("lr"):
            log.lr(step, r["lr"], i, line)
    log.tokens_per_iter = tpi
    log.check_nonempty("csv")
    return log


PARSERS = {"llmc": parse_llmc, "modded-nanogpt": parse_modded_nanogpt,
           "build-nanogpt": parse_build_nanogpt, "nanogpt": parse_nanogpt, "csv": parse_csv}


# --- the learning-rate schedule ------------------------------------------------------------------
FLOAT32_REL = 1e-6   # a logged lr within this share of the peak of the spec's is the same lr


def _lr_mismatch(spec: dict, log: Log) -> tuple | None:
    """The first logged lr the spec does not reproduce at its printed precision, else None."""
    if not log.lrs:
        return None
    steps = np.array([p[0] for p in log.lrs])
    got = S.lr_array(spec, int(steps.max()) + 1)[steps]
    want = np.array([p[1] for p in log.lrs])
    # float32 arithmetic (llm.c computes its lr so, and logs it with 10 digits) differs from the
    # spec's float64 by a few ulps of the peak (6e-8 of it; near a cosine's end the cancellation
    # in 1 + cos makes that the error); a wrong flag differs by far more
    tol = np.array([p[2] for p in log.lrs]) * (1 + 1e-9) + FLOAT32_REL * np.abs(want).max()
    bad = np.flatnonzero(np.abs(got - want) > tol)
    return (log.lrs[bad[0]], float(got[bad[0]])) if len(bad) else None


def _simple(x: float, zero: bool = True) -> list[float]:
    """x and its roundings to 1..6 significant digits, simplest first (0 first when near)."""
    out = [0.0] if zero and abs(x) < 0.02 else []
    for d in range(1, 7):
        out.append(float(f"{x:.{d}g}"))
    out.append(x)
    return list(dict.fromkeys(out))


def _shape_d(shape: str, x: np.ndarray) -> np.ndarray:
    return {"linear": x, "1-sqrt": np.sqrt(x), "cosine": 0.5 * (1 - np.cos(np.pi * x))}[shape]


def recognise_schedule(log: Log, total_steps: int | None = None, float32: bool = False) -> dict | None:
    """The parametric spec (warmup (s+1)/W from 0; then constant, cosine from the warmup's end, or
    a stable phase and a linear / 1-sqrt / cosine decay, to a floor) that reproduces every logged lr
    at its printed precision, the simplest when several do; None when none does."""
    pts = sorted(log.lrs)
    s = np.array([p[0] for p in pts], dtype=float)
    v = np.array([p[1] for p in pts])
    tol = np.array([p[2] for p in pts]) * 1.001
    if len(s) < 2 or v.max() <= 0:
        return None
    n = int(s.max()) + 1
    at_peak = np.flatnonzero(v >= v.max() - tol)
    first_peak, last_peak = int(s[at_peak[0]]), int(s[at_peak[-1]])
    for peak in _simple(float(v.max()), zero=False)[:3]:
        ramp = (s < first_peak) & (v > 0)
        if first_peak == s[0]:
            warmups = [0]
        else:
            sel = ramp & (v > 0.2 * peak) & (v < 0.9 * peak)
            sel = sel if sel.any() else ramp
            w_est = float(np.median(peak * (s[sel] + 1) / v[sel])) if sel.any() else first_peak
            warmups = sorted({max(1, int(round(w_est)) + k) for k in range(-5, 6)},
                             key=lambda w: abs(w - w_est))
        for W in warmups:
            warm = s < W
            if np.any(np.abs(peak * (s[warm] + 1) / W - v[warm]) > tol[warm]):
                continue  # the warmup alone already misses a logged value
            base = dict(peak_lr=peak, warmup_steps=W, warmup_convention="(s+1)/W")
            post = ~warm
            if np.all(np.abs(v[post] - peak) <= tol[post]):
                T = total_steps or n
                spec = dict(base, kind="constant", total_steps=T, decay_start=T, decay_shape="step",
                            min_lr_frac=1.0)
                if _verified(spec, log):
                    return S.validate_spec(spec)
                continue
            for kind, shape in (("cosine", "cosine"), ("wsd", "linear"), ("wsd", "1-sqrt"),
                                ("wsd", "cosine")):
                starts = [W] if kind == "cosine" else sorted(
                    {max(W, last_peak + k) for k in range(-1, 3)})
                for D in starts:
                    found = _fit_decay(base, kind, shape, D, s[post], v[post], tol[post], n,
                                       total_steps, float32 and kind == "cosine", log)
                    if found:
                        return S.validate_spec(found)
    return None


def _verified(spec: dict, log: Log) -> bool:
    try:
        return _lr_mismatch(spec, log) is None
    except FwlabError:  # not a valid spec (e.g. a decay of no length): not this one
        return False


def _fit_decay(base, kind, shape, D, s, v, tol, n, total_steps, float32, log):
    """Decay end E and floor fraction f of one shape from decay start D: a least-squares E with f
    free, then for each simple f near it the ends E that reproduce every value after the warmup
    (a fast float64 check), the first that lr_array reproduces exactly at printed precision."""
    peak = base["peak_lr"]
    flat = s <= D  # before the decay: the peak itself
    if np.any(np.abs(v[flat] - peak) > tol[flat]):
        return None
    m = ~flat
    if m.sum() < 2:
        return None
    sd, vd, td = s[m], v[m], tol[m]

    def pred(E, f):
        x = np.minimum(1.0, (sd - D) / (E - D))
        return peak - peak * (1 - f) * _shape_d(shape, x)

    def free_fit(E):
        d = _shape_d(shape, np.minimum(1.0, (sd - D) / (E - D)))
        denom = float((d * d).sum())
        g = float(((peak - vd) * d).sum()) / (peak * denom) if denom > 0 else 0.0
        g = min(1.0, max(0.0, g))
        return float(np.max(np.abs(peak - peak * g * d - vd) / td)), 1 - g

    if total_steps:
        e_best = total_steps
    else:
        grid = np.unique(np.round(np.geomspace(D + 2, max(D + 3, 8 * n), 300)).astype(int))
        e_best = int(grid[int(np.argmin([free_fit(E)[0] for E in grid]))])
        fine = np.unique(np.round(np.linspace(max(D + 1, e_best // 2), e_best * 2, 300)).astype(int))
        e_best = int(fine[int(np.argmin([free_fit(E)[0] for E in fine]))])
    err, f_est = free_fit(e_best)
    if err > 50:
        return None
    for f in _simple(min(1.0, max(0.0, f_est)))[:5]:
        ends = [total_steps] if total_steps else range(max(D + 1, e_best - 300), e_best + 301)
        ok = [(E != n, abs(E - e_best), E) for E in ends
              if np.all(np.abs(pred(E, f) - vd) <= td * 1.05)]
        for _, _, E in sorted(ok)[:3]:
            T = total_steps or E
            spec = dict(base, kind=kind, total_steps=T, decay_start=D, decay_steps=E - D,
                        decay_shape=shape, min_lr_frac=f, float32=float32)
            if kind == "wsd":
                spec["cooldown_frac"] = (E - D) / T
            if _verified(spec, log):
                return spec
    return None


def spec_from_flags(flags: dict, total: int | None, where: str) -> dict:
    """The spec of `fwlab train`'s schedule flags (TrainConfig fields; defaults for the rest)."""
    from fwlab.config import TrainConfig
    given = {k: v for k, v in flags.items() if k in SCHEDULE_FLAGS and v is not None}
    if "max_iters" not in given:
        if not total:
            raise FwlabError(f"{where}: the log does not state the planned number of steps; give "
                             f"--max-iters with the schedule flags")
        given["max_iters"] = total
    return S.spec_from_config(TrainConfig(**given))


def resolve_schedule(log: Log, flags: dict, spec: dict | None, fmt: str) -> tuple[dict | None, str]:
    """(the run's lr spec or None, how it was found); FwlabError when flags or --lr-schedule
    contradict a logged lr."""
    how = ""
    if spec is not None:
        spec, how = S.validate_spec(spec), "given (--lr-schedule)"
    elif any(flags.get(k) is not None for k in SCHEDULE_FLAGS if k != "max_iters"):
        spec, how = spec_from_flags(flags, log.total_steps, log.name), "given (schedule flags)"
    if spec is not None:
        bad = _lr_mismatch(spec, log)
        if bad:
            (s, val, _, lineno, line), got = bad
            raise FwlabError(f"{log.name}:{lineno}: the log's lr {val:.10g} at step {s} contradicts "
                             f"the given schedule ({got:.10g}); drop the schedule flags to take it "
                             f"from the log: {_short(line)!r}")
        return spec, how + (", agrees with every logged lr" if log.lrs else "")
    if not log.lrs:
        return None, "unknown (the log has no learning rates; give the schedule flags)"
    total = flags.get("max_iters") or log.total_steps
    found = recognise_schedule(log, total, float32=fmt == "llmc")
    if found is not None:
        return found, f"recognised from {len(log.lrs)} logged learning rates (every one reproduced)"
    steps = [p[0] for p in sorted(log.lrs)]
    n = steps[-1] + 1
    vals = np.full(n, np.nan)
    for p in log.lrs:
        vals[p[0]] = p[1]
    held = int(np.isnan(vals).sum())
    for i in range(n):  # a step the log skipped keeps the rate logged before it
        if np.isnan(vals[i]):
            vals[i] = vals[i - 1] if i else log.lrs[0][1]
    note = f"explicit list of the {len(log.lrs)} logged learning rates"
    if held:
        note += f" ({held} steps without one hold the previous value)"
    return S.validate_spec({"kind": "explicit", "lrs": vals.tolist(), "total_steps": total or n}), note


# --- writing a run directory ---------------------------------------------------------------------
def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fwlab_fields(spec: dict | None) -> dict:
    """config.json's TrainConfig schedule fields. Exact fwlab schedules keep fwlab's names (lr_at
    gives the same rates); other specs name their family and leave cooldown_shape null, so readers
    that know only lr_at fall back to the spec or the logged lr."""
    if spec is None:
        return dict(schedule=None, lr=None, min_lr_frac=None, warmup_iters=None,
                    cooldown_frac=None, cooldown_shape=None)
    if spec["kind"] == "explicit":
        return dict(schedule="explicit", lr=max(spec["lrs"]), min_lr_frac=min(spec["lrs"]) / max(
            max(spec["lrs"]), 1e-300), warmup_iters=None, cooldown_frac=None, cooldown_shape=None)
    out = dict(schedule=spec["kind"], lr=spec["peak_lr"], min_lr_frac=spec["min_lr_frac"],
               warmup_iters=spec["warmup_steps"], cooldown_frac=spec.get("cooldown_frac"),
               cooldown_shape=None)
    if spec["kind"] in ("cosine", "wsd", "constant"):
        shape = spec["decay_shape"] if spec["kind"] == "wsd" else "linear"
        cand = dict(out, max_iters=spec["total_steps"], cooldown_shape=shape,
                    cooldown_frac=out["cooldown_frac"] if out["cooldown_frac"] is not None else 0.2)
        try:
            if S.spec_from_config(cand) == spec:
                cand.pop("max_iters")
                return cand
        except (FwlabError, TypeError, ValueError):
            pass
    return out


def run_files(log: Log, spec: dict | None, meta: dict) -> tuple[dict, list[str], dict]:
    """(config.json, metrics.jsonl lines, final.json) of an imported run. meta: format, source,
    sha256, tokens_per_iter, n_params, dataset, val_set, train_tokens, schedule_how, status_hint,
    reference (provenance) and extra config keys."""
    tpi = meta.get("tokens_per_iter")
    train_tokens = meta.get("train_tokens")
    its = sorted(set(log.evals) | set(log.trains) | set(log.extras))
    last = its[-1] if its else 0
    total = meta.get("max_iters") or log.total_steps  # the planned steps, when something states them
    n_lr = max(last, total or 0) + 1
    lrs = S.lr_array(spec, n_lr) if spec is not None else None

    def where(it):
        return dict(iter=it, tokens=it * tpi if tpi else None,
                    epoch=(it * tpi / train_tokens) if tpi and train_tokens else None,
                    lr=float(lrs[it - 1]) if lrs is not None and it >= 1 else None)

    lines = []
    for it in its:  # fwlab's order within one iteration: train, eval, extras
        if it in log.trains:
            t = log.trains[it]
            lines.append(jsonl_line(dict(where(it), kind="train", train_loss=t["train_loss"],
                                         grad_norm=t.get("grad_norm"), tok_per_s=None,
                                         elapsed_s=t.get("elapsed_s"), mfu=None)))
        if it in log.evals:
            e = log.evals[it]
            lines.append(jsonl_line(dict(where(it), kind="eval", val_loss_stderr=None,
                                         eval_s=None, **{"elapsed_s": None, **e})))
        if it in log.extras:
            lines.append(jsonl_line(dict(where(it), kind="extras", **log.extras[it])))
    evals = [log.evals[i] | {"iter": i} for i in sorted(log.evals)]
    last_eval = evals[-1] if evals else None
    times = [d.get("elapsed_s") for d in (*log.trains.values(), *log.evals.values())
             if d.get("elapsed_s") is not None]
    iters = max(last, total) if meta.get("completed") and total else last
    completed = bool(total) and last >= total or bool(meta.get("completed"))
    start = meta.get("branch_iter") or 0
    status = "completed" if completed else "incomplete"
    message = "" if completed else (
        f"the log ends at step {last} of {total}" if total else
        f"the log ends at step {last}; its planned length is unknown (give --max-iters)")
    sched = _fwlab_fields(spec)
    config = dict(
        sched, max_iters=total, tokens_per_iter=tpi, preset=None, n_params=meta.get("n_params"),
        model=meta.get("model"), dataset=meta.get("dataset"), val_set=meta.get("val_set"),
        train_tokens=train_tokens,
        iters_per_epoch=train_tokens / tpi if tpi and train_tokens else None,
        lr_schedule=spec, lr_schedule_from=meta.get("schedule_how", ""),
        loss=meta.get("loss", "val_loss" if evals else "train_loss"),
        imported_from=dict(format=meta["format"], source=meta["source"], sha256=meta["sha256"]),
        init_from=meta.get("init_from", ""), init_iter=meta.get("branch_iter"),
        parent=meta.get("parent"), device="", device_name=None,
        fwlab_version=_version())
    config.update(meta.get("extra_config") or {})
    final = dict(
        status=status, message=message,
        final_val_loss=last_eval["val_loss"] if last_eval else None, val_loss_stderr=None,
        last_val_loss=last_eval["val_loss"] if last_eval else None,
        last_eval_iter=last_eval["iter"] if last_eval else None,
        best_val_loss=min(e["val_loss"] for e in evals) if evals else None,
        iters=iters, max_iters=total, tokens=iters * tpi if tpi else None,
        wall_s=(max(times) if times else None),
        epochs=(iters * tpi / train_tokens) if tpi and train_tokens else None,
        iters_computed=iters - start, init_from=meta.get("init_from") or None,
        init_iter=meta.get("branch_iter"), tok_per_s=None, mfu=None,
        n_params=meta.get("n_params"), device_name=None, checkpoint=None,
        imported=True, fwlab_version=_version())
    final.update(meta.get("extra_final") or {})
    return config, lines, final


def _version() -> str:
    from fwlab import __version__
    return __version__


def _tmp_dir_for(out: Path) -> Path:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:  # read-only, no permission, a parent that is a file
        raise WriteError(f"--out {out}: cannot write there ({os_where(e, out)}: "
                         f"{os_problem(e)}); nothing was written", os_problem(e)) from None


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FwlabError(f"{out}: exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FwlabError(f"{out}: exists and is not empty; choose another --out (or "
                             f"--overwrite to replace an earlier import)")
        _check_replaceable(out)


# the files an imported run directory holds; an imported sweep: sweep.json + runs/NAME/ of these
RUN_FILES = frozenset({"config.json", "metrics.jsonl", "final.json"})


def _check_replaceable(out: Path) -> None:
    """--overwrite replaces an earlier import and nothing else: never a run fwlab trained (its
    checkpoints), a sweep, a data folder, an export, a folder holding any of them, or a file
    import did not write there."""
    keep = "; nothing was changed, choose another --out"
    kind = folder_kind(out)
    if kind == "a sweep":
        imported = read_sweep(out / "sweep.json").get("imported_from")
    elif kind == "a run":
        imported = (read_config(out) or {}).get("imported_from")
    else:
        what = f"holds {kind}" if kind else "is not an earlier import (no config.json or sweep.json)"
        raise FwlabError(f"--out {out}: {what}; --overwrite only replaces what fwlab import "
                         f"wrote{keep}")
    if not imported:
        raise FwlabError(f"--out {out}: holds {kind} that fwlab import did not write (its "
                         f"config has no imported_from); --overwrite never deletes it{keep}")
    foreign = []
    for p in sorted(out.rglob("*")):  # does not descend into symlinked folders
        rel = p.relative_to(out).parts
        plain_dir, plain_file = p.is_dir() and not p.is_symlink(), p.is_file() and not p.is_symlink()
        if kind == "a sweep":
            ok = (rel == ("sweep.json",) and plain_file) or (rel[0] == "runs" and (
                (len(rel) <= 2 and plain_dir) or (len(rel) == 3 and rel[2] in RUN_FILES
                                                  and plain_file)))
        else:
            ok = len(rel) == 1 and rel[0] in RUN_FILES and plain_file
        if not ok:
            foreign.append("/".join(rel) + ("/" if p.is_dir() else ""))
            if len(foreign) > 5:
                break
    if foreign:
        raise FwlabError(f"--out {out}: holds files fwlab import does not write "
                         f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); "
                         f"--overwrite never deletes them{keep}")


def _commit(tmp: Path, out: Path) -> None:
    """Rename the finished temporary directory to `out` (replacing an old one last)."""
    os.chmod(tmp, 0o777 & ~_umask())
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old.{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    from fwlab.utils import UMASK
    return UMASK


def write_run(run_dir: Path, config: dict, lines: list[str], final: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", config)
    with open(run_dir / "metrics.jsonl", "w", encoding="utf-8") as f:
        f.write("".join(lines))
    atomic_write_json(run_dir / "final.json", final)


def import_log(fmt: str, src, out, flags: dict | None = None, lr_schedule: dict | None = None,
               params: int | None = None, dataset: str | None = None, val_set: str | None = None,
               train_tokens: int | None = None, overwrite: bool = False) -> dict:
    """Import one log of `fmt` (PARSERS) from a path or URL into run directory `out`; returns its
    final.json."""
    if fmt not in PARSERS:
        raise FwlabError(f"format {fmt!r}: choose one of {', '.join(FORMATS)}")
    flags = dict(flags or {})
    out = Path(out)
    _check_out(out, overwrite)
    data = read_bytes(src)
    name = str(src)
    log = PARSERS[fmt](name, _lines(name, data))
    tpi = flags.get("tokens_per_iter")
    if tpi is not None and log.tokens_per_iter is not None and tpi != log.tokens_per_iter:
        raise FwlabError(f"--tokens-per-iter {tpi}: {name} has {log.tokens_per_iter} tokens per step")
    spec, how = resolve_schedule(log, flags, lr_schedule, fmt)
    # the planned steps: given, printed by the log, or the horizon of a recognised parametric
    # schedule (an explicit list of logged rates says nothing about where the run would end)
    total = flags.get("max_iters") or log.total_steps or (
        spec["total_steps"] if spec is not None and spec["kind"] != "explicit" else None)
    if spec is not None and flags.get("max_iters") and spec.get("total_steps") != flags["max_iters"] \
            and spec["kind"] != "explicit":
        spec = S.with_total_steps(spec, flags["max_iters"])
    meta = dict(format=fmt, source=_source_text(src), sha256=_sha256(data),
                tokens_per_iter=tpi or log.tokens_per_iter, n_params=params, dataset=dataset,
                val_set=val_set, train_tokens=train_tokens, schedule_how=how, max_iters=total)
    config, lines, final = run_files(log, spec, meta)
    tmp = _tmp_dir_for(out)
    try:
        write_run(tmp, config, lines, final)
        _commit(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _source_text(src) -> str:
    return str(src) if is_url(src) else str(Path(src).resolve())


# --- published curves (the reference layout) ----------------------------------------------------
def default_reference_dir(path=None) -> Path | None:
    """The folder of published curves: `path` when given (FwlabError when it is not one), else
    ../shared/data/reference-curves beside the checkout when it exists, else None."""
    if path is not None:
        p = Path(path).expanduser().resolve()
        if not (p / "runs").is_dir():
            raise FwlabError(f"{p}: not a reference-curves folder (no runs/ inside); pass the folder "
                             f"that holds README.md, index.csv and runs/")
        return p
    p = (REPO.parent / "shared" / "data" / "reference-curves").resolve()
    return p if (p / "runs").is_dir() else None


def _read_reference(src) -> tuple[dict, list[dict], bytes, str]:
    """(run.json, curve.csv rows with line numbers, bytes hashed, where) of a curve folder/URL."""
    base = str(src).rstrip("/")
    if is_url(base):
        rj_bytes, cv_bytes = fetch(base + "/run.json"), fetch(base + "/curve.csv")
        rj_name, cv_name = base + "/run.json", base + "/curve.csv"
    else:
        d = Path(base)
        if not d.is_dir():
            raise FwlabError(f"{d}: no such directory; pass a published curve's folder "
                             f"(curve.csv + run.json), e.g. .../reference-curves/runs/NAME")
        rj_name, cv_name = str(d / "run.json"), str(d / "curve.csv")
        rj_bytes, cv_bytes = read_bytes(rj_name), read_bytes(cv_name)
    _refuse_html(rj_name, rj_bytes)
    try:
        run = json.loads(rj_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        line = getattr(e, "lineno", 1)
        raise FwlabError(f"{rj_name}:{line}: not valid JSON ({e})") from None
    lines = _lines(cv_name, cv_bytes)
    rows = list(csv.reader(lines))
    if not rows or "step" not in rows[0]:
        raise FwlabError(f"{cv_name}:1: no curve.csv header (step,tokens,val_loss,lr,...)")
    cols = rows[0]
    out = []
    for i, r in enumerate(rows[1:], 2):
        if not r:
            continue
        if len(r) != len(cols):
            raise FwlabError(f"{cv_name}:{i}: {len(r)} fields, the header has {len(cols)}")
        out.append(dict(zip(cols, r), _line=i))
    return run, out, rj_bytes + cv_bytes, cv_name


def _reference_log(run: dict, rows: list[dict], where: str) -> tuple[Log, dict]:
    log = Log(where)
    tps = run.get("tokens_per_step")
    for r in rows:
        i, line = r["_line"], ",".join(str(v) for k, v in r.items() if k != "_line")
        step = _int(r["step"], where, i, line)
        if r.get("tokens") and tps and int(r["tokens"]) != step * tps:
            raise FwlabError(f"{where}:{i}: tokens {r['tokens']} is not step x tokens_per_step "
                             f"{tps}: {line!r}")
        if r.get("val_loss"):
            log.add("evals", step, i, line, val_loss=_number(r["val_loss"], where, i, line))
        if r.get("train_loss"):
            log.add("trains", step, i, line, train_loss=_number(r["train_loss"], where, i, line))
        if r.get("lr"):
            log.lr(step, r["lr"], i, line)
    log.check_nonempty("reference")
    log.total_steps = run.get("total_steps")
    log.tokens_per_iter = tps
    return log, run


def _reference_spec(run: dict, log: Log) -> dict:
    spec = S.spec_from_reference(run["schedule"])
    steps = np.array([p[0] for p in log.lrs], dtype=int)
    if len(steps):  # the lr column was written from the same schedule: check, relative 1e-6
        got = S.lr_array(spec, int(steps.max()) + 1)[steps]
        want = np.array([p[1] for p in log.lrs])
        rel = np.abs(got - want) / np.where(want == 0, 1.0, np.abs(want))
        if rel.max() > 1e-6:
            s, val, _, lineno, line = log.lrs[int(rel.argmax())]
            raise FwlabError(f"{log.name}:{lineno}: lr {val:g} differs from run.json's schedule "
                             f"({got[int(rel.argmax())]:.6g}): {line!r}")
    return spec


def _reference_meta(run: dict, src, data: bytes, spec: dict) -> dict:
    model, d = run.get("model") or {}, run.get("data") or {}
    loss = (run.get("curve") or {}).get("loss_column")
    prov = {k: run.get(k) for k in ("name", "group", "role", "branch_of", "branch_step",
                                    "total_steps", "optimizer", "lr_verified", "notes")}
    prov["source"] = run.get("source")
    extra_final = {}
    if run.get("final_full_val"):
        ffv = run["final_full_val"]
        extra_final = dict(final_full_val_loss=float(ffv["val_loss"]), final_full_val_iter=ffv.get(
            "step"), final_full_val_note="end-of-run loss on the full validation split; not "
                                         "comparable with the periodic val_loss points")
    return dict(format="reference", source=_source_text(src), sha256=_sha256(data),
                tokens_per_iter=run.get("tokens_per_step"), n_params=model.get("params"),
                model=model or None, dataset=d.get("dataset"), val_set=d.get("val_set"),
                train_tokens=None, schedule_how="run.json schedule (spec_from_reference), "
                "reproduces the lr column", loss=loss, completed=True,
                max_iters=run.get("total_steps"),
                extra_config=dict(reference=prov), extra_final=extra_final)


def import_reference_run(src, out, overwrite: bool = False, with_trunk: bool = True,
                         parent: str | None = None, train_tokens: int | None = None) -> dict:
    """One published curve (curve.csv + run.json, a folder or URL) -> run directory `out`. A
    branch found beside its trunk gets the trunk's points before its branch_step (with_trunk), so
    the run directory holds the whole curve."""
    out = Path(out)
    _check_out(out, overwrite)
    run, rows, data, where = _read_reference(src)
    log, _ = _reference_log(run, rows, where)
    spec = _reference_spec(run, log)
    meta = _reference_meta(run, src, data, spec)
    meta["train_tokens"] = train_tokens  # the published runs do not state their unique tokens
    if parent:  # a branch of a sweep: sweep.py's parent run name and the iteration it starts at
        meta.update(init_from=parent, branch_iter=int(run.get("branch_step") or 0))
    trunk_dir = None if is_url(src) or not run.get("branch_of") else \
        Path(src).resolve().parent / run["branch_of"]
    if with_trunk and trunk_dir is not None and trunk_dir.is_dir():
        trun, trows, _, twhere = _read_reference(trunk_dir)
        tlog, _ = _reference_log(trun, trows, twhere)
        k = int(run.get("branch_step") or 0)
        for table in ("evals", "trains"):
            own = getattr(log, table)
            pre = {i: v for i, v in getattr(tlog, table).items() if i < k}
            setattr(log, table, dict(sorted((pre | own).items())))
        meta["extra_config"]["reference"]["points_before_branch_step_from"] = str(trunk_dir)
    config, lines, final = run_files(log, spec, meta)
    tmp = _tmp_dir_for(out)
    try:
        write_run(tmp, config, lines, final)
        _commit(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _group_runs(root: Path, group: str) -> list[tuple[Path, dict]]:
    found, groups = [], set()
    for rj in sorted((root / "runs").glob("*/run.json")):
        run = json.loads(rj.read_text())
        groups.add(run.get("group"))
        if run.get("group") == group:
            found.append((rj.parent, run))
    if not found:
        known = ", ".join(sorted(g for g in groups if g))
        raise FwlabError(f"--group {group!r}: no run of {root / 'runs'} belongs to it; groups: {known}")
    return found


def _short_names(names: list[str]) -> dict[str, str]:
    """Run names without their common prefix up to an underscore (the group's own name)."""
    pre = os.path.commonprefix(names)
    pre = pre[:pre.rfind("_") + 1] if "_" in pre else ""
    return {n: n[len(pre):] or n for n in names}


def choose_budget_runs(runs: list[tuple[Path, dict]], cooldown_frac: float = 0.2,
                       cooldown_shape: str = "linear") -> dict[str, int]:
    """{run name: budget}: per horizon (total_steps), the WSD run (branch or run) whose cooldown
    fraction is closest to `cooldown_frac`, of `cooldown_shape` where one is."""
    cands: dict[int, list] = {}
    for _, run in runs:
        if run.get("role") == "trunk":
            continue
        spec = S.spec_from_reference(run["schedule"])
        if spec["kind"] != "wsd" or spec.get("cooldown_frac") is None:
            continue
        if not (run.get("curve") or {}).get("loss_column", "val_loss") == "val_loss":
            continue
        key = (spec["decay_shape"] != cooldown_shape, abs(spec["cooldown_frac"] - cooldown_frac),
               run["name"])
        cands.setdefault(int(run["total_steps"]), []).append((key, run["name"]))
    return {min(c)[1]: b for b, c in sorted(cands.items())}


def import_reference_group(root, group: str, out, cooldown_frac: float = 0.2,
                           cooldown_shape: str = "linear", overwrite: bool = False,
                           progress: bool = True, budgets_only: bool = False,
                           train_tokens: int | None = None) -> dict:
    """A published group (trunk, branches, other runs) -> a sweep directory in fwlab/sweep.py's wsd
    layout; returns its sweep.json. budgets_only: just the trunk and the budget runs."""
    from tqdm.auto import tqdm
    root = default_reference_dir(root) if not is_url(root) else None
    if root is None:
        raise FwlabError("import reference --group needs the reference-curves folder as a local path")
    out = Path(out)
    _check_out(out, overwrite)
    runs = _group_runs(root, group)
    names = _short_names([r["name"] for _, r in runs])
    budgets = choose_budget_runs(runs, cooldown_frac, cooldown_shape)
    if not budgets:
        train_only = all((r.get("curve") or {}).get("loss_column") == "train_loss" for _, r in runs)
        why = ("its curves are training loss only (the source published no validation loss)"
               if train_only else "no WSD run with a validation curve to stand for a budget")
        raise FwlabError(f"--group {group}: {why}; import its runs one by one instead "
                         f"(fwlab import reference {root}/runs/NAME --out RUN)")
    trunks = [r for _, r in runs if r.get("role") == "trunk"]
    if budgets_only:
        runs = [(d, r) for d, r in runs if r.get("role") == "trunk" or r["name"] in budgets]
    tmp = _tmp_dir_for(out)
    entries, tpis = [], set()
    try:
        for d, run in tqdm(runs, desc=f"importing {group}", unit="run", disable=not progress):
            name = names[run["name"]]
            parent = names.get(run.get("branch_of")) if run.get("role") == "branch" else None
            final = import_reference_run(d, tmp / "runs" / name, with_trunk=False, parent=parent,
                                         train_tokens=train_tokens)
            tpis.add(run.get("tokens_per_step"))
            k = int(run.get("branch_step") or 0) if parent else None
            entries.append(dict(
                name=name, budget=budgets.get(run["name"]), role=run.get("role") or "run",
                max_iters=int(run["total_steps"]), parent=parent, branch_iter=k,
                planned_iters=int(run["total_steps"]) - (k or 0), status=final["status"],
                iters_computed=final["iters_computed"], final_val_loss=final["final_val_loss"],
                wall_s=final["wall_s"], reference=run["name"]))
        entries.sort(key=lambda e: (e["role"] != "trunk", e["budget"] is None, e["max_iters"],
                                    e["name"]))
        bud = sorted(budgets.values())
        chosen = [e for e in entries if e["budget"] is not None]
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        tpi = next(iter(tpis)) if len(tpis) == 1 else None
        first = runs[0][1]
        state = dict(
            mode="wsd" if trunks else "independent", budgets=bud, epochs=None,
            data=(first.get("data") or {}).get("dataset"), train_tokens=None, preset=None,
            tokens_per_iter=tpi, cooldown_frac=cooldown_frac,
            warmup_iters=S.spec_from_reference(first["schedule"]).get("warmup_steps"),
            status="completed", planned_iters=sum(e["planned_iters"] for e in entries),
            total_iters_computed=sum(e["iters_computed"] for e in entries), created=now,
            updated=now, fwlab_version=_version(), config={},
            plan=dict(mode="wsd" if trunks else "independent", budgets=bud, imported=True,
                      runs=[{k: e[k] for k in ("name", "budget", "role", "max_iters", "parent",
                                               "branch_iter", "planned_iters")} for e in entries]),
            imported_from=dict(format="reference", source=str(root), group=group,
                               budget_runs={e["name"]: e["budget"] for e in chosen},
                               rule=f"per horizon the WSD run with the cooldown fraction closest to "
                                    f"{cooldown_frac} ({cooldown_shape} preferred); the other runs "
                                    f"have budget null"),
            runs=entries)
        atomic_write_json(tmp / "sweep.json", state)
        _commit(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return state


def import_source(fmt: str, src, out, group: str | None = None, **kw) -> dict:
    """`fwlab import`: dispatch on the format (and --group for the reference layout)."""
    if fmt == "reference":
        if group:
            return import_reference_group(src, group, out, **{k: v for k, v in kw.items() if k in (
                "cooldown_frac", "cooldown_shape", "overwrite", "progress", "budgets_only",
                "train_tokens")})
        return import_reference_run(src, out, overwrite=kw.get("overwrite", False),
                                    train_tokens=kw.get("train_tokens"))
    if group:
        raise FwlabError("--group is for the reference format only")
    return import_log(fmt, src, out, **{k: v for k, v in kw.items() if k in (
        "flags", "lr_schedule", "params", "dataset", "val_set", "train_tokens", "overwrite")})


# --- reference curves to overlay on a report's figure ---------------------------------------------
def _index(root: Path) -> dict[str, dict]:
    p = root / "index.csv"
    if not p.is_file():
        return {}
    with open(p, newline="") as f:
        return {r["name"]: r for r in csv.DictReader(f)}


def _params_text(n) -> str:
    if not n:
        return "? params"
    n = float(n)
    return f"{n / 1e9:.2g}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def _curve_dir(root: Path | None, item) -> Path:
    p = Path(item)
    if (p / "run.json").is_file():
        return p.resolve()
    if root is not None:
        for cand in [root / "runs" / str(item), *sorted(root.glob(f"seeds/*/{item}"))]:
            if (cand / "run.json").is_file():
                return cand
    raise FwlabError(f"reference {item!r}: no published curve of that name"
                     + (f" under {root}" if root else "") + " and no folder with run.json there")


def reference_curves(names_or_dirs=None, root=None) -> list[dict]:
    """Published curves to draw beside a run's: for each name (under ROOT/runs or ROOT/seeds/*) or
    folder (curve.csv + run.json), dict(name, label, tokens (np.ndarray, or None when the source
    does not state tokens per step), steps, loss, kind ('val' | 'train'), val_set, dataset, params,
    schedule, source, comparable_note). A branch's curve includes its trunk's points before its
    branch_step. Default: DEFAULT_REFERENCES (llm.c 124M on FineWeb, the FineWeb-Edu 124M run) in
    default_reference_dir(root)."""
    root = default_reference_dir(root) if root is not None or names_or_dirs is None else (
        default_reference_dir(None))
    if names_or_dirs is None:
        if root is None:
            raise FwlabError("no reference-curves folder found beside the checkout "
                             "(../shared/data/reference-curves); pass its path")
        names_or_dirs = DEFAULT_REFERENCES
    if isinstance(names_or_dirs, (str, os.PathLike)):
        names_or_dirs = [names_or_dirs]
    out = []
    for item in names_or_dirs:
        d = _curve_dir(root, item)
        run, rows, _, where = _read_reference(d)
        log, _ = _reference_log(run, rows, where)
        if run.get("branch_of") and (d.parent / run["branch_of"]).is_dir():
            trun, trows, _, twhere = _read_reference(d.parent / run["branch_of"])
            tlog, _ = _reference_log(trun, trows, twhere)
            k = int(run.get("branch_step") or 0)
            log.evals = {i: v for i, v in tlog.evals.items() if i < k} | log.evals
            log.trains = {i: v for i, v in tlog.trains.items() if i < k} | log.trains
        kind = "val" if log.evals else "train"
        pts = log.evals if kind == "val" else log.trains
        steps = np.array(sorted(pts), dtype=int)
        loss = np.array([pts[i]["val_loss" if kind == "val" else "train_loss"] for i in steps])
        tps = run.get("tokens_per_step")
        idx = _index(d.parent.parent if d.parent.name == "runs" else d.parent.parent.parent).get(
            run["name"], {})
        model, data = run.get("model") or {}, run.get("data") or {}
        params = model.get("params")
        dataset = idx.get("dataset") or data.get("dataset")
        sch = run.get("schedule") or {}
        repo = (run.get("source") or {}).get("repo", "")
        label = (f"{_params_text(params) if params else model.get('params_nominal', '?')} "
                 f"{dataset or 'unknown data'}, {sch.get('kind', '?')} ({repo})")
        if kind == "train":
            label += " [training loss]"
        out.append(dict(name=run["name"], label=label,
                        tokens=steps * tps if tps else None, steps=steps, loss=loss, kind=kind,
                        val_set=data.get("val_set"), dataset=dataset, params=params,
                        schedule=sch.get("kind"), source=repo,
                        comparable_note="training loss" if kind == "train" else
                        f"val set: {data.get('val_set') or 'not stated'}"))
    return out
