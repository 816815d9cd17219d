#!/usr/bin/env bash
# GPU check for a lent H100/H200 (or any CUDA machine), under 5 minutes, no internet needed:
#   1. tokens/s and MFU of fwlab's training step for the 40m and 124m presets (bf16 autocast +
#      torch.compile, automatic micro-batch, 524,288 tokens per iteration), on random tokens;
#   2. 50 real iterations of `python -m fwlab.train` on 40m, on a temporary prepared directory of
#      random tokens written with fwlab's own shard writer; prints the run's numbers.
# Target: >= 50% MFU on an H100 for 40m.   Usage: bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"   # works even where `pip install -e .` cannot
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
section() { printf '\n========== %s ==========\n' "$*"; }
START=$(date +%s)

section "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
$PY - <<'EOF'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available: {torch.cuda.is_available()}")
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print(f"device: {torch.cuda.get_device_name(0)}, bf16: {torch.cuda.is_bf16_supported()}")
EOF

section "fwlab importable"
if ! $PY -c "import fwlab" 2>/dev/null; then
    $PY -m pip install -q --no-deps -e . || echo "pip install -e . failed; using PYTHONPATH=$REPO"
fi
for mod in numpy tqdm; do
    $PY -c "import $mod" 2>/dev/null || $PY -m pip install -q "$mod" \
        || { echo "missing python package $mod and no way to install it"; exit 1; }
done
$PY -c "import fwlab, fwlab.train, fwlab.hardware as h, torch; print('fwlab', fwlab.__version__, '| peak bf16', h.peak_flops('cuda'))"

section "1. step throughput and MFU: 40m and 124m (bf16, compile, 524,288 tokens/iter)"
timeout 150 $PY - <<'EOF' || echo "part 1 failed or timed out (exit $?)"
import time, torch
from fwlab import hardware
from fwlab.config import TrainConfig
from fwlab.model import GPT
from fwlab.train import train_step

class RandomBatches:
    def __init__(self, T, device):
        self.T, self.g = T, torch.Generator().manual_seed(0)
    def next_batch(self, n):
        w = torch.randint(0, 50257, (n, self.T + 1), generator=self.g)
        return w[:, :-1].contiguous(), w[:, 1:].contiguous()

dev = hardware.resolve_device("auto"); hardware.setup_device(dev)
dtype = hardware.resolve_dtype("auto", dev)
for preset, iters in (("40m", 6), ("124m", 4)):
    t0 = time.time()
    mc = TrainConfig(preset=preset).model_config()
    torch.manual_seed(0)
    raw = GPT(mc).to(dev)
    micro, accum = hardware.pick_micro_batch(524288, mc.block_size, 1, 0,
                                             hardware.micro_batch_cap(mc, dev, raw.num_params()))
    opt = raw.configure_optimizer(6e-4, 0.1, (0.9, 0.95), dev.type)
    model = torch.compile(raw)
    ctx = hardware.autocast(dev, dtype)
    data = RandomBatches(mc.block_size, dev)
    torch.cuda.reset_peak_memory_stats()
    loss, _ = train_step(model, opt, data, micro, accum, dev, ctx, 1.0)   # compiles
    train_step(model, opt, data, micro, accum, dev, ctx, 1.0)
    warm = time.time() - t0
    times = []
    for _ in range(iters):
        torch.cuda.synchronize(); t = time.perf_counter()
        loss, _ = train_step(model, opt, data, micro, accum, dev, ctx, 1.0)   # .item() syncs
        times.append(time.perf_counter() - t)
    dt = sorted(times)[len(times) // 2]
    tps = 524288 / dt
    fpt = raw.flops_per_token()
    m = hardware.mfu(tps, fpt, dev)
    print(f"{preset}: {raw.num_params() / 1e6:.1f}M params, micro {micro} x accum {accum}, {dtype}, compiled; "
          f"{dt * 1000:.0f} ms/iter, {tps:,.0f} tok/s, {fpt / 1e6:.0f} MFLOP/token, "
          f"MFU {'unknown' if m is None else f'{100 * m:.1f}%'}, peak mem "
          f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB, warm-up+compile {warm:.0f} s, loss {loss:.3f}",
          flush=True)
    del model, raw, opt
    torch.cuda.empty_cache()
EOF

section "2. 50 real iterations of fwlab train (40m) on random-token shards"
timeout 40 $PY - "$WORK/data" <<'EOF'
import json, sys
from pathlib import Path
import numpy as np
from fwlab.data import write_shard
out = Path(sys.argv[1]); out.mkdir(parents=True)
rng = np.random.default_rng(0)
split = {}
for name, n in (("train", 16_000_000), ("val", 1_100_000)):
    toks = rng.integers(0, 50257, n, dtype=np.uint16)
    sha = write_shard(out / f"{name}_000000.bin", toks)
    split[name] = {"tokens": n, "docs": 0, "shards": [{"file": f"{name}_000000.bin", "tokens": n, "sha256": sha}]}
(out / "manifest.json").write_text(json.dumps({"source": "random tokens (gpu_check)", "tokenizer": "gpt2",
                                               "n_vocab": 50257, "eot": 50256, "dtype": "uint16", **split}))
print(f"{out}: 16M train / 1.1M val random tokens")
EOF
set +e
timeout 130 $PY -m fwlab.train --data "$WORK/data" --out "$WORK/run" --preset 40m --max-iters 50 \
    --eval-interval 25 --eval-tokens 524288 --ckpt-interval 25 --no-progress
rc=$?
set -e
[ $rc -eq 0 ] || echo "fwlab train exited with $rc (124 = timed out)"
$PY - "$WORK/run" <<'EOF' || true
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
conf = json.loads((run / "config.json").read_text())
lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
tr = [o for o in lines if o["kind"] == "train"]
steady = sorted(o["tok_per_s"] for o in tr[5:]) or [0]
mfus = sorted(o["mfu"] for o in tr[5:] if o.get("mfu") is not None)
print(f"config: {conf['device_name']}, {conf['dtype']}, compile {conf['compile']}, micro {conf['micro_batch']} "
      f"x accum {conf['grad_accum_steps']}, warmup {conf['warmup_iters']}")
print(f"iterations logged: {len(tr)}, loss {tr[0]['train_loss']:.3f} -> {tr[-1]['train_loss']:.3f}")
print(f"median tok/s after 5 iters: {steady[len(steady) // 2]:,.0f}; median MFU: "
      f"{'unknown' if not mfus else f'{100 * mfus[len(mfus) // 2]:.1f}%'}")
for o in lines:
    if o["kind"] == "eval":
        print(f"eval @ {o['iter']}: val loss {o['val_loss']:.4f} ± {o['val_loss_stderr']:.4f} ({o['eval_s']:.1f} s)")
fin = run / "final.json"
if fin.is_file():
    f = json.loads(fin.read_text())
    print(f"final.json: status {f['status']}, iters {f['iters']}, wall {f['wall_s']:.0f} s, tok/s {f['tok_per_s']:,.0f}")
EOF

section "done in $(( $(date +%s) - START )) s"
