"""Hardware: which device, dtype, compile mode and micro-batch a run uses, and MFU against the
device's peak.

`auto` settings are resolved here from measurements, not habit. On CPU (2-core AMD EPYC with
avx512_bf16, torch 2.13, tokens/s of one training step, median of 6 after 2 warm-up steps):

    preset  batch   fp32 eager   bf16 autocast   fp32 compile   bf16 + compile   first call (compile)
    tiny    8x128      2,693         2,972           3,059           6,183          8-20 s
    mini    4x256      1,923         2,431           2,273           4,693         14-17 s

So bf16 autocast alone gives 1.1-1.3x, and only bf16 + torch.compile reaches ~2x (the reference
step is plain fp32 eager). benchmarks/bench_train.py (same weights and batches, steps interleaved,
on a busy machine): tiny 1.90x, mini 2.16x, 40m (1x1024) 2.08x the reference, losses within 5e-4.
Compiling costs 10-20 s per process (~60 s for 40m), which a short run never earns back: compiled
bf16 saves ~1.8e-4 s per token over eager bf16, so the break-even is ~100k tokens.
Without native bf16 the run stays fp32, and there compiling buys little: 1.14x (tiny 8x128) and
1.18x (mini) in the table above, and 0.99x for the tiny model at 4x128 (fwlab demo's step; median of
30 interleaved steps, 2 cores under load, first compiled step 14 s; benchmarks/bench_compile.py).
An AVX2-only 2-core EPYC under load spent 36 s compiling that step.
Hence `auto` on CPU = bf16 autocast where the CPU has native bf16 (else fp32), and compile when this
run will compute at least CPU_COMPILE_MIN_TOKENS tokens in bf16 (2x the break-even), or
CPU_COMPILE_MIN_TOKENS_FP32 in fp32 (10x mini's break-even of ~200k; tiny never breaks even). The
decision depends only on the config, so a resumed run makes the same one.
`benchmarks/bench_train.py` re-measures.
"""
from __future__ import annotations

import contextlib
import platform
import re
import shutil

import torch

from fwlab.errors import FwlabError

CPU_COMPILE_MIN_TOKENS = 200_000
CPU_COMPILE_MIN_TOKENS_FP32 = 2_000_000

# Peak dense bf16 tensor throughput (FLOP/s, no 2:4 sparsity) from the vendors' spec sheets.
# GeForce cards accumulate bf16 in fp32 at half the fp16-accumulate rate: SMs x boost clock x 512.
# Patterns are tried in order, so the specific variants come before the family name.
PEAK_BF16_FLOPS: list[tuple[str, float]] = [
    (r"h100.*(pcie)", 756.5e12),          # H100 PCIe
    (r"h100.*nvl", 835.5e12),             # H100 NVL
    (r"h100|gh200", 989.4e12),            # H100 SXM5 (reports as "H100 80GB HBM3"), GH200
    (r"h200.*nvl", 835.5e12),             # H200 NVL
    (r"h200", 989.4e12),                  # H200 SXM
    (r"a100", 312e12),                    # A100 SXM4 / PCIe, 40 and 80 GB
    (r"\bl40s\b", 362.05e12),             # L40S
    (r"\bl40\b", 181.05e12),              # L40
    (r"\bl4\b", 121e12),                  # L4
    (r"rtx 4090", 165.2e12),
    (r"rtx 4080 super", 104.4e12),
    (r"rtx 4080", 97.5e12),
    (r"rtx 4070 ti super", 88.2e12),
    (r"rtx 4070 ti", 80.2e12),
    (r"rtx 4070 super", 70.9e12),
    (r"rtx 4070", 58.3e12),
    (r"rtx 3090 ti", 80e12),
    (r"rtx 3090", 71e12),
]


# --- device, dtype, compile ----------------------------------------------------------------------
def resolve_device(name: str = "auto") -> torch.device:
    """auto -> cuda > mps > cpu; an explicit device that is not available is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FwlabError(f"device={name!r}: CUDA is not available in this torch build/machine "
                         f"(torch {torch.__version__}); use --device cpu or install a CUDA build")
    if name == "mps" and not (getattr(torch.backends, "mps", None)
                              and torch.backends.mps.is_available()):
        raise FwlabError("device='mps': Apple MPS is not available here; use --device cpu")
    if name not in ("cpu", "mps") and not name.startswith("cuda"):
        raise FwlabError(f"device={name!r}: choose auto, cpu, cuda or mps")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """Native bf16 matmuls on this CPU (avx512_bf16 / AMX); elsewhere bf16 is emulated and slow."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def resolve_dtype(name: str, device: torch.device) -> str:
    """'float32' or 'bfloat16' (the autocast dtype). fp16 is not offered: it needs loss scaling."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device.type == "cpu":
        return "bfloat16" if cpu_has_bf16() else "float32"
    return "float32"  # mps: bf16 autocast support varies with the macOS version


def resolve_compile(flag: bool | None, device: torch.device, tokens_to_train: int,
                    dtype: str | None = None) -> bool:
    """None = auto: on CUDA always; on CPU when the run is long enough to earn the compile time
    back in its dtype (`dtype`: the resolved one; None = what `auto` picks here; see the module
    docstring) and a C++ compiler exists; never on MPS."""
    if flag is not None:
        return bool(flag)
    if device.type == "cuda":
        return True
    if device.type == "cpu":
        has_cxx = any(shutil.which(c) for c in ("c++", "g++", "clang++"))
        bf16 = (dtype or resolve_dtype("auto", device)) == "bfloat16"
        need = CPU_COMPILE_MIN_TOKENS if bf16 else CPU_COMPILE_MIN_TOKENS_FP32
        return has_cxx and tokens_to_train >= need
    return False


def autocast(device: torch.device, dtype: str):
    """The forward-pass context: bf16 autocast, or nothing for fp32."""
    if dtype == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def setup_device(device: torch.device) -> None:
    """Process-wide settings: TF32 matmuls on CUDA (fp32 parts of a bf16 run get tensor cores)."""
    if device.type == "cuda":
        if device.index is not None:  # set_device refuses a bare "cuda"
            torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return platform.processor() or platform.machine() or "cpu"
    return device.type


# --- micro-batch ---------------------------------------------------------------------------------
def micro_batch_cap(model_config, device: torch.device, n_params: int) -> int:
    """Most sequences per forward pass that comfortably fit / run well on this device.

    CUDA: activation memory per token ~ 34·d bytes per layer (bf16, flash attention; Korthikanti et
    al. 2022) plus ~10 bytes per vocabulary entry for the logits (bf16, their fp32 copy, gradient);
    weights + grads + AdamW states take 16 bytes per parameter; use 60% of the card.
    CPU: ~2k tokens per pass; bigger passes are no faster here and the logits grow by 400 MB each
    2k tokens."""
    T = model_config.block_size
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        per_token = 34 * model_config.n_embd * model_config.n_layer + 10 * model_config.vocab_size
        budget = 0.6 * total - 16 * n_params
        return max(1, min(128, int(budget // (per_token * T))))
    if device.type == "mps":
        return max(1, 8192 // T)
    return max(1, 2048 // T)


def pick_micro_batch(tokens_per_iter: int, block_size: int, world_size: int, requested: int,
                     cap: int) -> tuple[int, int]:
    """(micro_batch, grad_accum_steps) so that micro · block · world · accum = tokens_per_iter.

    requested=0 picks the largest divisor of the sequences each rank needs per iteration that is
    at most `cap`; an explicit value must divide it exactly (the maths must not depend on it)."""
    per_rank, rem = divmod(tokens_per_iter, block_size * world_size)
    if rem or per_rank == 0:
        raise FwlabError(f"tokens_per_iter={tokens_per_iter} is not a multiple of block_size × "
                         f"world size = {block_size} × {world_size}; use a multiple of "
                         f"{block_size * world_size}")
    if requested == 0:
        micro = max(d for d in range(1, min(cap, per_rank) + 1) if per_rank % d == 0)
    else:
        micro = requested
        if per_rank % micro:
            ok = [d for d in range(1, per_rank + 1) if per_rank % d == 0]
            raise FwlabError(
                f"micro_batch={micro}: each of the {world_size} rank(s) needs {per_rank} sequences "
                f"of {block_size} tokens per iteration (tokens_per_iter={tokens_per_iter}), which "
                f"is not a multiple of {micro}; choose one of {ok[:12]}{' ...' if len(ok) > 12 else ''}"
                f" or 0 for automatic")
    return micro, per_rank // micro


def resolve_run(cfg, device: torch.device, n_params: int, world_size: int = 1,
                tokens_to_train: int | None = None) -> dict:
    """The one rule for what a run of `cfg` (a TrainConfig) uses on `device`: its autocast dtype,
    torch.compile decision and micro-batch (training and `fwlab plan`'s measurement both ask here).
    `tokens_to_train` (default: what this run computes, from init_iter to max_iters) feeds the
    compile decision. Returns dict(dtype, compile, micro_batch, grad_accum_steps)."""
    mc = cfg.model_config()
    if tokens_to_train is None:
        tokens_to_train = (cfg.max_iters - (cfg.init_iter or 0)) * cfg.tokens_per_iter
    micro, accum = pick_micro_batch(cfg.tokens_per_iter, mc.block_size, world_size,
                                    cfg.micro_batch, micro_batch_cap(mc, device, n_params))
    dtype = resolve_dtype(cfg.dtype, device)
    return dict(dtype=dtype, compile=resolve_compile(cfg.compile, device, tokens_to_train, dtype),
                micro_batch=micro, grad_accum_steps=accum)


# --- peak FLOPs and MFU --------------------------------------------------------------------------
def gpu_entry(name: str | None) -> tuple[str, float] | None:
    """The peak-table entry (pattern, dense bf16 FLOP/s) a GPU name falls under, or None."""
    n = (name or "").lower()
    for pattern, flops in PEAK_BF16_FLOPS:
        if n and re.search(pattern, n):
            return pattern, flops
    return None


def peak_flops_for_name(name: str) -> float | None:
    """Dense bf16 peak of a GPU from its name (torch.cuda.get_device_name), or None if unknown."""
    entry = gpu_entry(name)
    return entry[1] if entry else None


def peak_flops(device) -> float | None:
    """Dense bf16 peak FLOP/s of `device` (torch.device, 'cuda:0', or a GPU name); None for CPUs,
    MPS and GPUs not in the table — never a guess."""
    if isinstance(device, str) and not re.match(r"^(cpu|mps|cuda(:\d+)?|auto)$", device):
        return peak_flops_for_name(device)
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type != "cuda" or not torch.cuda.is_available():
        return None
    return peak_flops_for_name(torch.cuda.get_device_name(dev))


def mfu(tok_per_s: float, flops_per_token: float, device) -> float | None:
    """Model FLOPs utilisation: achieved training FLOP/s over the device's bf16 dense peak (None if
    the peak is unknown). Several GPUs: pass per-GPU tokens/s."""
    return mfu_at_peak(tok_per_s, flops_per_token, peak_flops(device))


def mfu_at_peak(tok_per_s: float, flops_per_token: float, peak: float | None) -> float | None:
    """mfu() against a peak already looked up (peak_flops): the trainer logs MFU every step and
    asks the device for its name once per run."""
    if peak is None or tok_per_s is None:
        return None
    return tok_per_s * flops_per_token / peak
