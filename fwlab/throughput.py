"""Throughput: tokens/s of the trainer's own step on this machine (`fwlab plan` measures it).

A short timed run of fwlab.train.train_step (forward/backward over micro-batches, clip, AdamW) at
the micro-batch, device, autocast dtype and torch.compile decision the trainer would pick for the
same run (fwlab.hardware.resolve_run), on random tokens or a prepared data directory, after untimed
warm-up steps (which absorb compilation). Whole iterations are timed when they are short; when one
iteration is long (524,288 tokens of the 40m preset take ~15 minutes on a 2-core CPU) a shortened
one of `iters` micro-steps is timed and scaled, the optimizer step timed on its own:
seconds/iteration = accum · t_micro + t_opt, exact in expectation. MFU is reported against the
device's dense bf16 peak (fwlab.hardware) where that is known.
"""
from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from fwlab import hardware
from fwlab.config import TrainConfig
from fwlab.data import TrainLoader
from fwlab.errors import FwlabError
from fwlab.model import GPT
from fwlab.train import train_step


class _RandomTokens:
    """A loader of uniformly random GPT-2 token windows (speed does not depend on the tokens)."""

    def __init__(self, block_size: int, seed: int = 0):
        self.block_size, self.gen = block_size, torch.Generator().manual_seed(seed)

    def next_batch(self, n: int):
        w = torch.randint(0, 50257, (n, self.block_size + 1), generator=self.gen)
        return w[:, :-1].contiguous(), w[:, 1:].contiguous()


def measure_throughput(preset: str, tokens_per_iter: int, device: str = "auto",
                       dtype: str = "auto", compile: bool | None = None, iters: int = 10,
                       micro_batch: int = 0, data: str | None = None, warmup: int = 2,
                       tokens_to_train: int | None = None, progress: bool = True) -> dict:
    """Tokens/s of the trainer's own step (fwlab.train.train_step) on this machine, with the
    device, autocast dtype, torch.compile decision and micro-batch the trainer would resolve
    (fwlab.hardware.resolve_run).

    One iteration is `accum` micro-steps then one optimizer step. `iters` micro-steps are timed, as
    whole iterations when they fit (accum <= iters), else as shortened ones of `iters` micro-steps,
    after `warmup` untimed steps (compilation happens there); the optimizer step (clip + AdamW) is
    timed on its own, so seconds/iteration = accum · t_micro + t_opt. `tokens_to_train` feeds the
    trainer's auto-compile rule (default: 10,000 iterations). Returns dict(tok_per_s, s_per_iter,
    micro_batch, accum, device, device_name, dtype, compile, flops_per_token, peak_flops, mfu,
    n_params, timed_micro_steps, method)."""
    if iters < 1:
        raise FwlabError(f"--measure-iters {iters}: must be at least 1")
    cfg = TrainConfig(preset=preset, tokens_per_iter=int(tokens_per_iter), micro_batch=micro_batch,
                      device=device, dtype=dtype, compile=compile)
    mc = cfg.model_config()
    if cfg.tokens_per_iter % mc.block_size:
        raise FwlabError(f"tokens_per_iter={tokens_per_iter}: must be a multiple of the {preset} "
                         f"preset's block_size={mc.block_size}")
    dev = hardware.resolve_device(device)
    hardware.setup_device(dev)
    torch.manual_seed(0)
    raw = GPT(mc).to(dev)
    n_params = raw.num_params()
    run = hardware.resolve_run(cfg, dev, n_params, world_size=1,
                               tokens_to_train=tokens_to_train or 10_000 * cfg.tokens_per_iter)
    dt, comp = run["dtype"], run["compile"]
    micro, accum = run["micro_batch"], run["grad_accum_steps"]
    opt = raw.configure_optimizer(cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), dev.type)
    model = torch.compile(raw) if comp else raw
    ctx = hardware.autocast(dev, dt)
    loader = TrainLoader(data, mc.block_size) if data else _RandomTokens(mc.block_size)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def step(k):
        train_step(model, opt, loader, micro, k, dev, ctx, cfg.grad_clip)

    a = min(accum, iters)           # micro-steps per timed call
    reps = max(1, iters // a)
    n_opt = 3
    bar = tqdm(total=warmup + reps + n_opt, desc=f"measuring {preset} on {dev.type}",
               disable=not progress, leave=False)
    for _ in range(warmup):
        step(1)
        bar.update()
    t_opt = 0.0
    for _ in range(n_opt):  # the optimizer step alone: gradients are there from the last step
        for p in raw.parameters():
            p.grad = torch.zeros_like(p)
        sync()
        t0 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        t_opt += (time.perf_counter() - t0) / n_opt
        bar.update()
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        step(a)
        bar.update()
    sync()
    per_call = (time.perf_counter() - t0) / reps
    bar.close()
    t_micro = max(per_call - t_opt, 1e-9) / a
    s_per_iter = per_call if a == accum else accum * t_micro + t_opt
    tok_per_s = cfg.tokens_per_iter / s_per_iter
    fpt = raw.flops_per_token()
    how = (f"{reps} whole iteration(s) of {accum} micro-step(s)" if a == accum else
           f"{reps} x {a} timed micro-steps scaled to {accum} per iteration")
    return dict(tok_per_s=tok_per_s, s_per_iter=s_per_iter, micro_batch=micro, accum=accum,
                device=dev.type, device_name=hardware.device_name(dev), dtype=dt, compile=comp,
                flops_per_token=fpt, peak_flops=hardware.peak_flops(dev),
                mfu=hardware.mfu(tok_per_s, fpt, dev), n_params=n_params,
                timed_micro_steps=reps * a,
                method=f"fwlab.train.train_step: {how} of {micro}x{mc.block_size} tokens, after "
                       f"{warmup} warm-up step(s); {dt}, compile {'on' if comp else 'off'}, "
                       f"{'data ' + str(data) if data else 'random tokens'}")
