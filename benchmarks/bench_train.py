"""Tokens/s of fwlab's training step (with its CPU defaults) against the reference step.

Both run in this one process on the same model shape, the same initial weights (fwlab's are copied
into the reference model), the same real FineWeb-Edu batches and the same learning-rate schedule;
their steps alternate, so a busy machine slows both alike. Prints per shape: tokens/s of each,
the ratio (target >= 1.5x), the first-step time (compilation), and how far fwlab's loss curve is
from the fp32 reference's (it should be within bf16 noise, ~1e-2).

    python benchmarks/bench_train.py                       # tiny, mini, 40m
    python benchmarks/bench_train.py --shapes tiny --steps 30 --all   # + fp32-eager / bf16-eager fwlab
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(SHARED / "reference"))
if (SHARED / "tiktoken_cache").is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken_cache"))

import torch  # noqa: E402

from fwlab import hardware  # noqa: E402
from fwlab.config import PRESETS, TrainConfig  # noqa: E402
from fwlab.model import GPT, GPTConfig  # noqa: E402
from fwlab.schedule import lr_at  # noqa: E402
from fwlab.train import train_step  # noqa: E402

SHAPES = {"tiny": 8, "mini": 4, "40m": 1}  # sequences per step (x block_size tokens)


def reference():
    from gpt_reference import RefConfig, RefGPT, reference_lr, reference_optimizer, reference_train_step
    return RefConfig, RefGPT, reference_lr, reference_optimizer, reference_train_step


def copy_into_reference(src: GPT, ref) -> None:
    """fwlab's GPT-2 names -> the reference's names, so both start from identical weights."""
    sd = src.state_dict()
    out = {"wte.weight": sd["transformer.wte.weight"], "wpe.weight": sd["transformer.wpe.weight"],
           "ln_f.weight": sd["transformer.ln_f.weight"], "ln_f.bias": sd["transformer.ln_f.bias"],
           "lm_head.weight": sd["lm_head.weight"]}
    names = {"ln_1": "ln1", "ln_2": "ln2", "attn.c_attn": "attn.qkv", "attn.c_proj": "attn.proj",
             "mlp.c_fc": "fc", "mlp.c_proj": "out"}
    for i in range(src.config.n_layer):
        for a, b in names.items():
            for p in ("weight", "bias"):
                out[f"blocks.{i}.{b}.{p}"] = sd[f"transformer.h.{i}.{a}.{p}"]
    ref.load_state_dict(out)


class Batches:
    """A loader over a fixed list of batches (the train_step interface: next_batch(n))."""

    def __init__(self, batches):
        self.batches, self.i = batches, 0

    def next_batch(self, n):
        x, y = self.batches[self.i % len(self.batches)]
        self.i += 1
        return x, y


def real_batches(block: int, batch: int, steps: int, data_dir: str):
    from fwlab.data import TrainLoader
    loader = TrainLoader(data_dir, block, seed=1337)
    return [loader.next_batch(batch) for _ in range(steps)]


def bench_shape(preset: str, steps: int, data_dir: str, extra_variants: bool) -> dict:
    RefConfig, RefGPT, reference_lr, reference_optimizer, reference_train_step = reference()
    p, B = PRESETS[preset], SHAPES[preset]
    T = p["block_size"]
    cpu = torch.device("cpu")
    batches = real_batches(T, B, steps, data_dir)
    cfg = TrainConfig(preset=preset, max_iters=steps, lr=6e-4, warmup_iters=None)  # cosine

    # fwlab's CPU defaults, as `fwlab train` resolves them for a run long enough to compile
    dtype = hardware.resolve_dtype("auto", cpu)
    compiled = hardware.resolve_compile(None, cpu, 10**9)
    variants = {"fwlab": (dtype, compiled)}
    if extra_variants:
        variants |= {"fwlab fp32 eager": ("float32", False), "fwlab bf16 eager": ("bfloat16", False)}

    torch.manual_seed(0)
    base = GPT(GPTConfig(**p))
    ref = RefGPT(RefConfig(n_layer=p["n_layer"], n_head=p["n_head"], n_embd=p["n_embd"], block_size=T))
    copy_into_reference(base, ref)
    ref_opt = reference_optimizer(ref, lr=6e-4)
    runs = {}
    for name, (dt, comp) in variants.items():
        m = GPT(GPTConfig(**p))
        m.load_state_dict(base.state_dict())
        opt = m.configure_optimizer(6e-4, 0.1, (0.9, 0.95), "cpu")
        runs[name] = dict(raw=m, model=torch.compile(m) if comp else m, opt=opt,
                          ctx=hardware.autocast(cpu, dt), loader=Batches(batches), times=[],
                          losses=[], desc=f"{dt}{' + compile' if comp else ' eager'}")
    ref_times, ref_losses = [], []
    for i in range(steps):
        x, y = batches[i]
        lr = reference_lr(i, steps, 6e-4)
        t = time.perf_counter()
        ref_losses.append(reference_train_step(ref, ref_opt, x, y, lr=lr))
        ref_times.append(time.perf_counter() - t)
        for r in runs.values():
            for g in r["opt"].param_groups:
                g["lr"] = lr_at(i, cfg)
            t = time.perf_counter()
            loss, _ = train_step(r["model"], r["opt"], r["loader"], B, 1, cpu, r["ctx"], 1.0)
            r["times"].append(time.perf_counter() - t)
            r["losses"].append(loss)
        print(f"  {preset} step {i + 1}/{steps}: ref {ref_losses[-1]:.4f} "
              + " ".join(f"{k} {r['losses'][-1]:.4f}" for k, r in runs.items()), flush=True)

    def tps(times):  # median of the steps after the first 3 (compilation, allocator warm-up)
        t = sorted(times[3:] or times)
        return B * T / t[len(t) // 2]

    out = {"preset": preset, "params": base.num_params(), "tokens_per_step": B * T,
           "ref_tok_s": tps(ref_times), "ref_first_s": ref_times[0], "variants": {}}
    for name, r in runs.items():
        d = [abs(a - b) for a, b in zip(r["losses"], ref_losses)]
        out["variants"][name] = dict(desc=r["desc"], tok_s=tps(r["times"]), first_s=r["times"][0],
                                     ratio=tps(r["times"]) / out["ref_tok_s"], max_dloss=max(d),
                                     mean_dloss=sum(d) / len(d), last_loss=r["losses"][-1])
    out["ref_last_loss"] = ref_losses[-1]
    out["ref_first_loss"] = ref_losses[0]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="tiny,mini,40m")
    ap.add_argument("--steps", type=int, default=20, help="steps per shape (40m: at most 8)")
    ap.add_argument("--all", action="store_true", help="also fwlab fp32-eager and bf16-eager")
    a = ap.parse_args()
    from fwlab.prepare import prepare
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU bf16: "
          f"{hardware.cpu_has_bf16()}, fwlab CPU defaults: dtype {hardware.resolve_dtype('auto', torch.device('cpu'))}, "
          f"compile for runs >= {hardware.CPU_COMPILE_MIN_TOKENS:,} tokens", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "edu")
        prepare(str(SHARED / "data" / "fineweb-edu-sample" / "fineweb_edu.jsonl.gz"), data,
                val_tokens=10_000, shard_tokens=1_000_000, progress=False)
        for preset in a.shapes.split(","):
            steps = min(a.steps, 8) if preset in ("40m", "124m") else a.steps
            results.append(bench_shape(preset, steps, data, a.all))
    print("\nshape  params   tokens/step  reference tok/s  variant                       tok/s   ratio  "
          "first step  max|dloss|  mean|dloss|")
    for r in results:
        for name, v in r["variants"].items():
            print(f"{r['preset']:5s} {r['params'] / 1e6:6.2f}M  {r['tokens_per_step']:10d}  {r['ref_tok_s']:15,.0f}  "
                  f"{name + ' (' + v['desc'] + ')':28s} {v['tok_s']:7,.0f}  {v['ratio']:5.2f}x "
                  f"{v['first_s']:9.1f}s  {v['max_dloss']:10.4f}  {v['mean_dloss']:10.4f}")
        print(f"      loss: reference {r['ref_first_loss']:.4f} -> {r['ref_last_loss']:.4f}")


if __name__ == "__main__":
    main()
