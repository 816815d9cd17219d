"""fp32 eager against fp32 torch.compile for one training step on CPU (what a CPU without native
bf16 trains in), the two models' steps interleaved so that a busy machine slows both alike.

    python benchmarks/bench_compile.py                 # tiny, 4 x 128 (fwlab demo's step), 30 steps
    python benchmarks/bench_compile.py --preset mini --batch 4 --steps 20

Prints the first compiled step (the compile time), tokens/s of each and the ratio; fwlab.hardware's
CPU_COMPILE_MIN_TOKENS_FP32 rests on it.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from fwlab.config import TrainConfig  # noqa: E402
from fwlab.model import GPT  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch", type=int, default=4, help="sequences per step (default 4)")
    ap.add_argument("--steps", type=int, default=30)
    a = ap.parse_args(argv)
    mc = TrainConfig(preset=a.preset).model_config()

    def make():
        torch.manual_seed(0)
        m = GPT(mc)
        return m, m.configure_optimizer(3e-3, 0.1, (0.9, 0.95), "cpu")

    def step(m, opt):
        x = torch.randint(0, mc.vocab_size, (a.batch, mc.block_size))
        y = torch.randint(0, mc.vocab_size, (a.batch, mc.block_size))
        _, loss = m(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    eager, eager_opt = make()
    raw, comp_opt = make()
    compiled = torch.compile(raw)
    t = time.perf_counter()
    step(compiled, comp_opt)
    print(f"{a.preset} {a.batch}x{mc.block_size} fp32: first compiled step {time.perf_counter() - t:.1f} s")
    for _ in range(2):
        step(compiled, comp_opt)
        step(eager, eager_opt)
    te, tc = [], []
    for _ in range(a.steps):
        t = time.perf_counter()
        step(eager, eager_opt)
        te.append(time.perf_counter() - t)
        t = time.perf_counter()
        step(compiled, comp_opt)
        tc.append(time.perf_counter() - t)
    e, c = statistics.median(te), statistics.median(tc)
    tok = a.batch * mc.block_size
    print(f"eager {tok / e:,.0f} tok/s, compiled {tok / c:,.0f} tok/s, compiled/eager {e / c:.2f}x "
          f"(median of {a.steps} interleaved steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
