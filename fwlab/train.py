"""The training loop: `fwlab train`, notebooks/02_train.ipynb and `torchrun -m fwlab.train`.

One iteration = cfg.tokens_per_iter tokens, reached by gradient accumulation over micro-batches and
over DDP ranks; the loader hands out windows from one global order, so the iteration's windows (and
so the maths) do not depend on the micro-batch size or the number of ranks.

The run directory is the contract everything downstream reads:
  config.json    every setting, resolved (device, dtype, compile, micro_batch, warmup_iters,
                 eval_interval are what the run actually used; `requested` keeps what was asked),
                 the learning-rate schedule as a fwlab.schedule spec (`lr_schedule`), the model
                 config, parameter counts, FLOPs per token, fwlab/torch versions, `parent` when
                 branched, and a summary of the data manifest.
  metrics.jsonl  one JSON object per event, each with "kind":
                   "train": iter, tokens, epoch, lr, train_loss, grad_norm, tok_per_s, elapsed_s, mfu
                   "eval":  iter, tokens, epoch, lr, val_loss, val_loss_stderr, elapsed_s, eval_s
                   "extras": iter, tokens, epoch, + HellaSwag / sample fields (fwlab.evaluate)
                 `iter` counts completed optimizer steps (1..max_iters); an eval line follows the
                 train line of the same iter, and a run that starts at iteration 0 first logs an
                 eval line with iter 0 and tokens 0 (the loss before any step; its lr is the first
                 step's). tok_per_s, elapsed_s, eval_s and mfu are timings (mfu
                 is null on devices without a known peak); every other field is reproducible.
                 elapsed_s is this run directory's own training time (a branch starts at 0).
                 --log-to tensorboard,wandb writes the same lines there too (fwlab.loggers).
  final.json     final_val_loss, val_loss_stderr, iters, tokens, epochs, wall_s, status
                 (completed | early_stopped | diverged), and more (see _finish).
  ckpt/          ckpt_NNNNNNN.pt: every ckpt_interval iterations (the last keep_ckpts kept), at
                 every iteration in ckpt_at (kept), and at the end.

Exit status of `fwlab train` and `python -m fwlab.train` (EXIT_* below): 0 the run completed or
stopped early; 2 a mistake the one-line message names (a bad setting, bad data, a locked run
directory, a full disk...); 3 the run diverged (final.json says so); 130 interrupted; 1 only for
an unexpected error (a traceback).

Lock: RUN/.lock holds the pid of the process training RUN, under an flock, so a second `fwlab
train` on the same RUN refuses at once instead of deleting the first's checkpoint temp files. The
lock dies with its process; a lock file left by a killed run is taken over.

Resume: called on a RUN that has checkpoints, train() continues from the newest; metrics lines past
it are dropped first, so a killed-and-resumed run logs exactly what an uninterrupted one does. A
RUN with final.json is done and returned as is. Branch: init_from/init_iter start from another
run's checkpoint (weights, optimizer, loader position, RNG) and continue under this run's schedule.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from fwlab import __version__, hardware
from fwlab.checkpoint import (ckpt_dir, list_checkpoints, load_checkpoint, resolve_checkpoint,
                              save_checkpoint)
from fwlab.config import TrainConfig, add_train_args, config_from_args
from fwlab.data import TrainLoader, load_manifest, val_batches, verify_data
from fwlab.errors import FwlabError, WriteError, os_problem
from fwlab.model import GPT
from fwlab.records import code_record
from fwlab.loggers import Loggers
from fwlab.schedule import lr_at, spec_from_config, warmup_of
from fwlab.utils import (append_jsonl, atomic_write_json, atomic_write_text, folder_kind,
                         iter_jsonl, jsonl_line, read_json)

# Settings that change the maths of training (or what val_loss measures): a run may only be resumed
# with the same values. Everything else (micro_batch, device, dtype, compile, eval/checkpoint
# cadence, early stopping, progress, paths) may change between sessions.
MATH_FIELDS = ("max_iters", "tokens_per_iter", "lr", "min_lr_frac", "warmup_iters", "schedule",
               "cooldown_frac", "cooldown_shape", "weight_decay", "beta1", "beta2", "grad_clip",
               "seed", "dropout", "eval_tokens", "init_iter", "model", "data_fingerprint")
TIMING_FIELDS = ("tok_per_s", "elapsed_s", "eval_s", "mfu")
LOCK = ".lock"
# exit status of `fwlab train` / `python -m fwlab.train` (see the module docstring)
EXIT_OK, EXIT_ERROR, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 2, 3, 130


def exit_status(final: dict) -> int:
    """EXIT_DIVERGED for a diverged run's final.json, else EXIT_OK."""
    return EXIT_DIVERGED if final.get("status") == "diverged" else EXIT_OK


# --- DDP, RNG and run-directory helpers ----------------------------------------------------------
def _dist_setup(requested_device: str):
    """(rank, world, device, created_group). torchrun sets RANK/WORLD_SIZE/LOCAL_RANK."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = hardware.resolve_device(requested_device)
    if device.type == "cuda" and world > 1:
        device = torch.device(f"cuda:{local}")
    created = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        created = True
    return rank, world, device, created


def _rng_state(device) -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
             "python": {"version": py_state[0], "state": torch.tensor(py_state[1], dtype=torch.int64),
                        "gauss": py_state[2]}}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def _truncate_metrics(path: Path, last_iter: int) -> None:
    """Keep only lines with iter <= last_iter (and drop a torn last line), atomically."""
    if not path.is_file():
        return
    kept = [line for line in iter_jsonl(path) if line.get("iter", 0) <= last_iter]
    atomic_write_text(path, "".join(jsonl_line(o) for o in kept))  # as append_jsonl wrote them


def _data_summary(data_dir, m: dict, loader: TrainLoader) -> tuple[dict, str]:
    """(what config.json tells about the data, a fingerprint of the train and val shards) from
    the data's manifest `m`."""
    shards = [s.get("sha256", "") for split in ("train", "val") for s in m[split]["shards"]]
    summary = {"dir": str(Path(data_dir).resolve()), "source": m.get("source"),
               "train_tokens": int(m["train"]["tokens"]), "val_tokens": int(m["val"]["tokens"]),
               "train_shards": len(m["train"]["shards"]), "train_windows": loader.windows_per_epoch,
               "tokens_per_epoch": loader.tokens_per_epoch}
    return summary, hashlib.sha256(":".join(shards).encode()).hexdigest()[:16]


def _math_diff(old: dict, new: dict, there: str = "in config.json", here: str = "now") -> list[str]:
    out = []
    for k in MATH_FIELDS:
        if old.get(k) != new.get(k):
            out.append(f"{k}: {old.get(k)!r} {there}, {new.get(k)!r} {here}")
    return out


@contextlib.contextmanager
def _run_lock(run: Path):
    """Hold RUN/.lock (flock + pid) while training RUN; FwlabError when another process holds it,
    or when RUN is a file or another kind of fwlab folder. A RUN this call created and left
    empty (the run failed before writing anything) is removed again."""
    if run.exists() and not run.is_dir():
        raise FwlabError(f"--out {run}: exists and is not a directory")
    kind = folder_kind(run)
    if kind not in (None, "a run"):
        raise FwlabError(f"--out {run}: holds {kind}, not a run; nothing was changed, choose "
                         "another --out")
    created = not run.exists()
    try:
        run.mkdir(parents=True, exist_ok=True)
        f = open(run / LOCK, "a+", encoding="utf-8")
    except OSError as e:
        what = "cannot create the run directory" if created else "cannot write in the run directory"
        raise WriteError(f"--out {run}: {what} ({e.filename or run}: {os_problem(e)}); "
                         f"nothing was written{'' if created else ', its files are as they were'}"
                         ) from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        pid = f.read().strip() or "unknown"
        f.close()
        raise FwlabError(f"another fwlab train is running in {run}, pid {pid}; wait for it to "
                         "finish or use another --out") from None
    try:
        f.seek(0)
        stale = f.read().strip()
        if stale and stale != str(os.getpid()):  # its process ended without releasing the file
            tqdm.write(f"fwlab train: {run}: taking over the lock of pid {stale}, which has ended")
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield
    finally:
        if created and os.listdir(run) == [LOCK]:
            (run / LOCK).unlink(missing_ok=True)
            run.rmdir()
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


# --- the step and the evaluation -----------------------------------------------------------------
def train_step(model, optimizer, loader, micro: int, accum: int, device, ctx, grad_clip: float,
               ddp: bool = False) -> tuple[float, float]:
    """One iteration: accum micro-batches of `micro` sequences on this rank, gradients averaged
    over all of them (and over ranks by DDP), clipped, then the optimizer step — skipped when the
    loss or the gradient norm is not finite, so a divergence never reaches the weights.
    Returns (mean loss over the iteration, gradient norm before clipping)."""
    total = torch.zeros((), device=device)
    for k in range(accum):
        x, y = loader.next_batch(micro)
        if device.type == "cuda":
            x, y = x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        else:
            x, y = x.to(device), y.to(device)
        sync = nullcontext() if (not ddp or k == accum - 1) else model.no_sync()
        with sync:
            with ctx:
                _, loss = model(x, y)
            (loss / accum).backward()
        total += loss.detach()
    if ddp:
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        total /= dist.get_world_size()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    loss_v, norm_v = (total / accum).item(), float(norm)
    if math.isfinite(loss_v) and math.isfinite(norm_v):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_v, norm_v


@torch.no_grad()
def evaluate(model, batches, device, ctx, rank: int = 0, world: int = 1) -> tuple[float, float]:
    """(mean, standard error) of the per-window mean loss over the fixed validation windows; under
    DDP each rank takes every world-th batch and the sums are all-reduced."""
    was = model.training
    model.eval()
    dt = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
    acc = torch.zeros(3, dtype=dt, device=device)  # sum, sum of squares, count
    for x, y in batches[rank::world]:
        with ctx:
            _, loss = model(x.to(device), y.to(device), reduction="none")
        w = loss.to(dt).mean(dim=1)
        acc += torch.stack([w.sum(), (w * w).sum(), torch.tensor(float(len(w)), device=device,
                                                                  dtype=dt)])
    if world > 1:
        dist.all_reduce(acc)
    model.train(was)
    s, ss, n = acc.tolist()
    mean = s / n
    var = max(0.0, (ss - n * mean * mean) / (n - 1)) if n > 1 else 0.0
    return mean, math.sqrt(var / n)


# --- train() -------------------------------------------------------------------------------------
def train(cfg: TrainConfig) -> dict:
    """Train (or resume, or branch) the run cfg.out; returns its final.json dict."""
    cfg = dataclasses.replace(cfg).validate()
    rank, world, device, created_group = _dist_setup(cfg.device)
    run = Path(cfg.out)
    try:
        with _run_lock(run) if rank == 0 else nullcontext():
            return _train(cfg, rank, world, device)
    except WriteError as e:
        raise WriteError(f"{e}; re-run the same command once it is fixed to resume", e.problem) from None
    except OSError as e:  # appending to metrics.jsonl: disk full, permissions
        raise WriteError(f"{e.filename or run}: {os_problem(e)}; the run's checkpoints are intact, "
                         "re-run the same command once it is fixed to resume", os_problem(e)) from None
    finally:
        if created_group and dist.is_initialized():
            dist.destroy_process_group()


@dataclasses.dataclass
class _Session:
    """What the steps of one training session share: its settings, the data, the model and
    optimizer, the resolved config.json, and `st`, the trainer state a checkpoint carries."""
    cfg: TrainConfig
    rank: int
    world: int
    device: torch.device
    mc: object                       # fwlab.model.GPTConfig
    manifest: dict
    loader: TrainLoader
    raw: GPT
    optimizer: torch.optim.Optimizer
    conf: dict
    dtype: str
    use_compile: bool
    micro: int
    accum: int
    st: dict = dataclasses.field(default_factory=lambda: {
        "elapsed_s": 0.0, "best": None, "bad": 0, "last_eval": None, "stopped": ""})
    start: int = 0                   # the iteration this session starts after
    origin: str = "starting"
    # set up by _loop for it and _finish: the wrapped model, autocast, validation windows, ...
    model: object = None
    ctx: object = None
    val: list | None = None
    keep_at: set = dataclasses.field(default_factory=set)
    fpt: float = 0.0
    peak: float | None = None
    loggers: Loggers = dataclasses.field(default_factory=lambda: Loggers(""))

    @property
    def run(self) -> Path:
        return Path(self.cfg.out)

    @property
    def master(self) -> bool:
        return self.rank == 0


def _train(cfg: TrainConfig, rank: int, world: int, device) -> dict:
    """The steps of a run: resolve its settings, restore what its directory holds, the loop,
    final.json."""
    s = _resolve(cfg, rank, world, device)
    done = _restore(s)
    if done is not None:  # the run directory holds a finished run
        return done
    it, status, message, speeds = _loop(s)
    return _finish(s, it, status, message, speeds)


def _resolve(cfg: TrainConfig, rank: int, world: int, device) -> _Session:
    """Check the data, build the loader, model and optimizer, and resolve every `auto` setting
    into what config.json records."""
    master = rank == 0
    hardware.setup_device(device)
    mc = cfg.model_config()
    manifest = load_manifest(cfg.data)  # read once: the loader, config.json and the val set use it
    # every shard's sha256 and token ids, once per shard file (cfg.verify: again), before RUN is
    # written to: bad data leaves no config.json behind
    verify_data(cfg.data, manifest, force=cfg.verify, progress=master and cfg.progress)
    n_vocab = manifest.get("n_vocab")
    if isinstance(n_vocab, int) and n_vocab > mc.vocab_size:
        raise FwlabError(f"{cfg.data}: its tokenizer has {n_vocab} ids, more than the model's "
                         f"vocabulary of {mc.vocab_size}")
    loader = TrainLoader(cfg.data, mc.block_size, seed=cfg.seed, rank=rank, world_size=world,
                         manifest=manifest)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    raw = GPT(mc).to(device)
    if rank:
        torch.manual_seed(cfg.seed + rank)  # dropout differs per rank

    # Resolve every `auto` setting; the result is what config.json records.
    res = hardware.resolve_run(cfg, device, raw.num_params(), world)
    dtype, use_compile, micro, accum = (res["dtype"], res["compile"], res["micro_batch"],
                                        res["grad_accum_steps"])
    conf = cfg.to_dict() | dict(
        device=device.type, dtype=dtype, compile=use_compile, micro_batch=micro,
        warmup_iters=warmup_of(cfg), eval_interval=cfg.eval_every(), grad_accum_steps=accum,
        world_size=world, lr_schedule=spec_from_config(cfg),
        requested={k: getattr(cfg, k) for k in ("device", "dtype", "compile", "micro_batch",
                                                "warmup_iters", "eval_interval")},
        device_name=hardware.device_name(device), model=mc.to_dict(),
        n_params=raw.num_params(), n_params_non_embedding=raw.num_params(non_embedding=True),
        flops_per_token=raw.flops_per_token(), fwlab_version=__version__, code=code_record(),
        torch_version=str(torch.__version__),
        parent={"run": str(Path(cfg.init_from).resolve()), "init_iter": cfg.init_iter}
        if cfg.init_from else None,
        iters_per_epoch=loader.tokens_per_epoch / cfg.tokens_per_iter)
    conf["data_manifest"], conf["data_fingerprint"] = _data_summary(cfg.data, manifest, loader)
    optimizer = raw.configure_optimizer(cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), device.type)
    # --log-to's packages are imported now: a missing one stops the run before RUN is written to
    loggers = Loggers(cfg.log_to if master else "").check()
    return _Session(cfg=cfg, rank=rank, world=world, device=device, mc=mc, manifest=manifest,
                    loader=loader, raw=raw, optimizer=optimizer, conf=conf, dtype=dtype,
                    use_compile=use_compile, micro=micro, accum=accum, loggers=loggers)


def _restore(s: _Session) -> dict | None:
    """Existing run directory: refuse other maths, return a finished run's final.json, resume
    from the newest checkpoint (or branch from init_from's); then write config.json and drop the
    metrics lines past the starting iteration. None when there is training to do."""
    cfg, run, mc, rank = s.cfg, s.run, s.mc, s.rank
    ckpts = list_checkpoints(run)
    if (run / "config.json").is_file() and (ckpts or (run / "final.json").is_file()):
        diff = _math_diff(read_json(run / "config.json"), s.conf)
        if diff:
            raise FwlabError(f"{run} holds a run with other settings that change the maths ("
                             + "; ".join(diff) + "); resume it with its own settings or use "
                             "another --out")
    if (run / "final.json").is_file():
        return read_json(run / "final.json")
    if ckpts:
        path = resolve_checkpoint(run)
        ck = load_checkpoint(path, map_location=s.device)
        # the checkpoint must be this run's: the same maths as config.json, field by field
        made = ck.get("config") if isinstance(ck.get("config"), dict) else {}
        diff = _math_diff(made, s.conf, "in the checkpoint", "in this run") if made else (
            [] if ck.get("model_config") == mc.to_dict() else
            [f"model: {ck.get('model_config')!r} in the checkpoint, {mc.to_dict()!r} in this run"])
        if diff:
            raise FwlabError(f"{path}: made by another run (" + "; ".join(diff) + f"); remove it "
                             f"from {run / 'ckpt'} or resume with the settings that made it")
        origin = f"resuming from {run / 'ckpt'} iteration {ck['iter']}"
        s.st.update(ck.get("trainer", {}))
    elif cfg.init_from:
        ck = load_checkpoint(resolve_checkpoint(cfg.init_from, cfg.init_iter), map_location=s.device)
        if ck["model_config"] != mc.to_dict():
            raise FwlabError(f"--init-from {cfg.init_from}: its model {ck['model_config']} differs "
                             f"from this run's {mc.to_dict()}")
        if ck["config"].get("tokens_per_iter") != cfg.tokens_per_iter:
            raise FwlabError(f"--init-from {cfg.init_from}: it used tokens_per_iter="
                             f"{ck['config'].get('tokens_per_iter')}, this run {cfg.tokens_per_iter}")
        origin = f"branching from {cfg.init_from} iteration {cfg.init_iter}"
    else:
        ck, origin = None, "starting"
    s.start, s.origin = (ck["iter"] if ck else 0), origin
    if ck:
        try:
            s.raw.load_state_dict(ck["model"])
            s.optimizer.load_state_dict(ck["optimizer"])
            s.loader.load_state_dict(ck["loader"])
            rngs = ck["rng"]
            _set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0], s.device)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise FwlabError(f"{origin}: the checkpoint does not fit this run ({first_line[:200]})") from None
        del ck
    if s.world > 1:
        dist.barrier()  # every rank has read the directory before rank 0 changes it
    if s.master:
        run.mkdir(parents=True, exist_ok=True)
        for tmp in ckpt_dir(run).glob(".*.tmp"):  # a save cut off by a kill
            tmp.unlink()
        atomic_write_json(run / "config.json", s.conf)
        # from iteration 0, even its evaluation is done again
        _truncate_metrics(run / "metrics.jsonl", s.start if s.start else -1)
    return None


def _save(s: _Session, it: int) -> None:
    """Checkpoint iteration `it` (every rank's RNG state, gathered), then drop old regular ones."""
    rngs = [None] * s.world
    if s.world > 1:
        dist.all_gather_object(rngs, _rng_state(s.device))
    else:
        rngs[0] = _rng_state(s.device)
    if s.master:
        save_checkpoint(s.run, it, {
            "model": s.raw.state_dict(), "optimizer": s.optimizer.state_dict(),
            "model_config": s.mc.to_dict(), "config": s.conf, "loader": s.loader.state_dict(),
            "rng": rngs, "trainer": dict(s.st), "fwlab_version": __version__})
        saved = list_checkpoints(s.run)
        regular = [i for i in saved if i not in s.keep_at]
        for old in regular[:-s.cfg.keep_ckpts]:
            saved[old].unlink(missing_ok=True)


def _loop(s: _Session) -> tuple[int, str, str, list[float]]:
    """Train from s.start to max_iters (or an early stop, or a divergence), logging, evaluating
    (at iteration 0 too, when the run starts there) and checkpointing on the way. Returns (last
    iteration, status, message, tokens/s per step)."""
    cfg, run, master, world, st = s.cfg, s.run, s.master, s.world, s.st
    raw, optimizer, loader, device, micro, accum = (s.raw, s.optimizer, s.loader, s.device,
                                                    s.micro, s.accum)
    model = torch.compile(raw) if s.use_compile else raw
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    s.model = model
    ctx = s.ctx = hardware.autocast(device, s.dtype)
    val = s.val = val_batches(cfg.data, s.mc.block_size, cfg.eval_tokens, micro, s.manifest)
    s.keep_at, s.fpt = set(cfg.ckpt_at_iters()), raw.flops_per_token()
    s.peak = hardware.peak_flops(device)  # once: MFU is logged on every step
    keep_at, fpt, peak, rank = s.keep_at, s.fpt, s.peak, s.rank
    say = tqdm.write if master else (lambda *a, **k: None)
    conf, every = s.conf, cfg.eval_every()
    say(f"fwlab train: {run}: {s.origin}; {cfg.preset} {conf['n_params'] / 1e6:.2f}M params on "
        f"{conf['device_name']} ({device.type}, {s.dtype}, "
        f"{'compiled' if s.use_compile else 'eager'}); {micro} seq x {accum} accum x {world} "
        f"rank(s) x {s.mc.block_size} = {cfg.tokens_per_iter:,} tokens/iter; {cfg.schedule} lr "
        f"{cfg.lr:g}, warmup {conf['warmup_iters']}; evaluating every {every} iterations")
    _warn_if_val_capped(s, say)
    log = open(run / "metrics.jsonl", "a", encoding="utf-8") if master else None
    if master:
        s.loggers.open(run, conf, s.start)

    def emit(record: dict) -> None:  # one metrics.jsonl line, and the same to --log-to's loggers
        if master:
            append_jsonl(log, record)
            s.loggers.log(record)

    # nanoGPT's line every log_interval iterations where no progress bar is on a terminal to show
    # the loss (papermill, sweeps, logs of torchrun and batch jobs)
    headless = master and cfg.log_interval > 0 and not (cfg.progress and sys.stderr.isatty())
    bar = tqdm(total=cfg.max_iters, initial=s.start, unit="it", dynamic_ncols=True,
               disable=not (master and cfg.progress), desc=run.name)

    it, status, message, speeds, step_s = s.start, "completed", st["stopped"], [], []
    if message:  # resumed after an early stop whose final.json was not written yet
        status = "early_stopped"
    t0, elapsed0 = time.perf_counter(), st["elapsed_s"]

    def evaluate_now(where: dict, loss=None, tps=None) -> float:
        """Evaluate after iteration where['iter'], log it; the val loss (non-finite: not logged)."""
        te = time.perf_counter()
        v, se = evaluate(raw, val, device, ctx, rank, world)
        if math.isfinite(v):
            st["elapsed_s"] = elapsed0 + time.perf_counter() - t0
            st["last_eval"] = {"iter": where["iter"], "val_loss": v, "val_loss_stderr": se}
            emit(dict(where, kind="eval", val_loss=v, val_loss_stderr=se,
                      elapsed_s=st["elapsed_s"], eval_s=time.perf_counter() - te))
            say(f"iter {where['iter']}/{cfg.max_iters} | val loss {v:.4f} ± {se:.4f} | "
                + (f"train loss {loss:.4f} | " if loss is not None else "")
                + f"epoch {where['epoch']:.3f} | " + (f"{tps:,.0f} tok/s | " if tps else "")
                + f"{st['elapsed_s'] / 60:.1f} min")
        return v

    try:
        model.train()
        if it == 0 and status == "completed":
            # the loss before any step (~ln vocab): the start of every curve; not counted by
            # early stopping, which compares the evaluations of training
            v = evaluate_now(dict(iter=0, tokens=0, epoch=loader.epoch, lr=lr_at(0, cfg)))
            if not math.isfinite(v):
                status, message = "diverged", (f"diverged: non-finite validation loss ({v}) "
                                               "before any step: the model's initial weights")
        while status == "completed" and it < cfg.max_iters:
            lr = lr_at(it, cfg)
            for g in optimizer.param_groups:
                g["lr"] = lr
            ts = time.perf_counter()
            loss, norm = train_step(model, optimizer, loader, micro, accum, device, ctx,
                                    cfg.grad_clip, ddp=world > 1)
            if not (math.isfinite(loss) and math.isfinite(norm)):
                good = max(list_checkpoints(run), default=None)
                status = "diverged"
                message = (f"diverged: non-finite {'loss' if not math.isfinite(loss) else 'gradient norm'}"
                           f" ({loss if not math.isfinite(loss) else norm}) at iteration {it + 1}; "
                           f"weights not updated, nothing saved after it (newest checkpoint: "
                           f"{'iteration ' + str(good) if good is not None else 'none'}). Lower --lr "
                           f"or raise --warmup-iters")
                break
            it += 1
            dt = time.perf_counter() - ts
            tps = cfg.tokens_per_iter / dt
            speeds.append(tps)
            step_s.append(dt)
            st["elapsed_s"] = elapsed0 + time.perf_counter() - t0
            where = dict(iter=it, tokens=it * cfg.tokens_per_iter, epoch=loader.epoch, lr=lr)
            emit(dict(where, kind="train", train_loss=loss, grad_norm=norm, tok_per_s=tps,
                      elapsed_s=st["elapsed_s"], mfu=hardware.mfu_at_peak(tps / world, fpt, peak)))
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tps:,.0f}", refresh=False)
            bar.update(1)
            if headless and (it % cfg.log_interval == 0 or it == cfg.max_iters):
                say(_log_line(cfg, it, loss, lr, step_s, world, fpt, peak))
                step_s = []

            stop = False
            if it % every == 0 or it == cfg.max_iters:
                v = evaluate_now(where, loss, tps)
                if not math.isfinite(v):  # the last step broke the weights: do not checkpoint them
                    status, message = "diverged", (f"diverged: non-finite validation loss ({v}) after "
                                                   f"iteration {it}; nothing saved after it (newest "
                                                   f"checkpoint: {max(list_checkpoints(run), default='none')})")
                    break
                improved = st["best"] is None or v < st["best"] - cfg.early_stop_delta
                st["best"], st["bad"] = (v, 0) if improved else (st["best"], st["bad"] + 1)
                stop = cfg.early_stop_patience > 0 and st["bad"] >= cfg.early_stop_patience
                if stop:
                    status = "early_stopped"
                    message = (f"early stop at iteration {it}: val loss did not improve by "
                               f"{cfg.early_stop_delta} for {cfg.early_stop_patience} evaluations "
                               f"(best {st['best']:.4f})")
                    st["stopped"] = message
            if master and (cfg.hellaswag_every or cfg.sample_every):
                from fwlab import evaluate as fw_eval
                extras = fw_eval.periodic_extras(raw, cfg, it, str(device))
                if extras:
                    emit(dict(where, kind="extras", **extras))
            if it % cfg.ckpt_interval == 0 or it in keep_at or it == cfg.max_iters or stop:
                _save(s, it)
            if stop:
                break
    finally:
        bar.close()
        if log:
            log.close()
        s.loggers.close()
    return it, status, message, speeds


def _log_line(cfg: TrainConfig, it: int, loss: float, lr: float, step_s: list[float], world: int,
              fpt: float, peak: float | None) -> str:
    """nanoGPT's progress line: the iteration's loss, and the mean step time since the last line
    (evaluations and checkpoints left out) as ms/iter, tokens/s and MFU."""
    dt = sum(step_s) / len(step_s)
    tps = cfg.tokens_per_iter / dt
    mfu = hardware.mfu_at_peak(tps / world, fpt, peak)
    return (f"iter {it}/{cfg.max_iters}: loss {loss:.4f}, lr {lr:.3e}, {dt * 1000:.1f} ms/iter, "
            f"{tps:,.0f} tok/s, MFU {'n/a' if mfu is None else f'{100 * mfu:.1f}%'}")


def _warn_if_val_capped(s: _Session, say) -> None:
    """Say once, on stderr, when the validation split holds fewer windows than eval_tokens asks."""
    cfg, block = s.cfg, s.mc.block_size
    asked, got = cfg.eval_tokens // block, sum(len(x) for x, _ in s.val)
    if got < asked:
        say(f"fwlab train: warning: eval_tokens={cfg.eval_tokens:,} asks for {asked:,} validation "
            f"windows of {block} tokens, but the val split of {cfg.data} holds {got:,} "
            f"({got * block:,} tokens): every evaluation uses those. Prepare the data with a "
            f"larger --val-tokens for a surer val loss, or set --eval-tokens {got * block}",
            file=sys.stderr)


def _finish(s: _Session, it: int, status: str, message: str, speeds: list[float]) -> dict:
    """Write final.json (rank 0) after the loop ended at iteration `it` with `status`."""
    cfg, run, st, world = s.cfg, s.run, s.st, s.world
    if status != "diverged" and (st["last_eval"] is None or st["last_eval"]["iter"] != it):
        # only when resuming a run killed between its last checkpoint and final.json
        v, se = evaluate(s.raw, s.val, s.device, s.ctx, s.rank, world)
        st["last_eval"] = {"iter": it, "val_loss": v, "val_loss_stderr": se}
        _save(s, it)

    last = st["last_eval"] or {}
    ok = status != "diverged"
    speeds = sorted(speeds[2:] or speeds)  # the first steps include compilation
    tps = speeds[len(speeds) // 2] if speeds else None
    final = {
        "status": status, "message": message,
        "final_val_loss": last.get("val_loss") if ok else None,
        "val_loss_stderr": last.get("val_loss_stderr") if ok else None,
        "last_val_loss": last.get("val_loss"), "last_eval_iter": last.get("iter"),
        "best_val_loss": st["best"], "iters": it, "max_iters": cfg.max_iters,
        "tokens": it * cfg.tokens_per_iter, "wall_s": st["elapsed_s"],
        # = loader.epoch after iteration `it` (a diverged step has already drawn its batches)
        "epochs": (it * cfg.tokens_per_iter // s.mc.block_size) / s.loader.windows_per_epoch,
        "iters_computed": it - (cfg.init_iter or 0), "init_from": cfg.init_from or None,
        "init_iter": cfg.init_iter,
        "tok_per_s": tps, "mfu": hardware.mfu_at_peak(tps / world, s.fpt, s.peak) if tps else None,
        "n_params": s.conf["n_params"], "device_name": s.conf["device_name"],
        "checkpoint": str(resolve_checkpoint(run)) if list_checkpoints(run) else None,
        "fwlab_version": __version__,
    }
    if s.master:
        atomic_write_json(run / "final.json", final)
        if message:
            print(f"fwlab train: {run}: {message}", file=sys.stderr if not ok else sys.stdout)
    if world > 1:
        dist.barrier()
    return final


def main(argv=None) -> int:
    """`python -m fwlab.train` / `torchrun --nproc_per_node=N -m fwlab.train`: the same flags as
    `fwlab train`."""
    p = argparse.ArgumentParser(prog="python -m fwlab.train",
                                description="train one run (resumes a run directory with checkpoints)")
    add_train_args(p, required=("data", "out"))
    args = p.parse_args(argv)
    try:
        final = train(config_from_args(args))
    except FwlabError as e:
        print(f"fwlab train: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("fwlab train: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if int(os.environ.get("RANK", "0")) == 0:
        v = final.get("final_val_loss")
        print(f"{final['status']}: final val loss {'n/a' if v is None else f'{v:.4f}'}")
    return exit_status(final)


if __name__ == "__main__":
    sys.exit(main())
