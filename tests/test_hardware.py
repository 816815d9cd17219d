"""Device resolution, micro-batch choice, and the peak-FLOPs table behind MFU."""
import pytest
import torch

from fwlab import hardware
from fwlab.errors import FwlabError
from fwlab.model import GPTConfig


@pytest.mark.parametrize("name,peak", [
    ("NVIDIA H100 80GB HBM3", 989.4e12), ("NVIDIA H100 PCIe", 756.5e12), ("NVIDIA H100 NVL", 835.5e12),
    ("NVIDIA H200", 989.4e12), ("NVIDIA H200 NVL", 835.5e12), ("NVIDIA A100-SXM4-80GB", 312e12),
    ("NVIDIA A100-PCIE-40GB", 312e12), ("NVIDIA L4", 121e12), ("NVIDIA L40S", 362.05e12),
    ("NVIDIA GeForce RTX 4090", 165.2e12), ("NVIDIA GeForce RTX 4080", 97.5e12),
    ("NVIDIA GeForce RTX 4070", 58.3e12), ("NVIDIA GeForce RTX 4070 Ti", 80.2e12),
    ("NVIDIA GeForce RTX 3090", 71e12),
])
def test_peak_table(name, peak):
    assert hardware.peak_flops(name) == peak


def test_unknown_devices_have_no_peak():
    for dev in ("Tesla T4", "NVIDIA GeForce GTX 1080", "cpu", torch.device("cpu"), "mps"):
        assert hardware.peak_flops(dev) is None
    assert hardware.mfu(1e6, 3e8, "cpu") is None
    assert hardware.mfu(1e6, 3e8, "NVIDIA H100 80GB HBM3") == pytest.approx(1e6 * 3e8 / 989.4e12)
    assert hardware.mfu_at_peak(1e6, 3e8, 989.4e12) == hardware.mfu(1e6, 3e8, "NVIDIA H100 80GB HBM3")
    assert hardware.mfu_at_peak(1e6, 3e8, None) is None and hardware.mfu_at_peak(None, 3e8, 1e12) is None


def test_pick_micro_batch():
    # 16 sequences per rank per iteration, cap 6 -> largest divisor 4, 4 accumulation steps
    assert hardware.pick_micro_batch(16 * 128, 128, 1, 0, 6) == (4, 4)
    assert hardware.pick_micro_batch(16 * 128, 128, 2, 0, 64) == (8, 1)
    assert hardware.pick_micro_batch(16 * 128, 128, 1, 2, 64) == (2, 8)
    with pytest.raises(FwlabError, match="micro_batch=3"):
        hardware.pick_micro_batch(16 * 128, 128, 1, 3, 64)
    with pytest.raises(FwlabError, match="not a multiple"):
        hardware.pick_micro_batch(1000, 128, 1, 0, 64)
    with pytest.raises(FwlabError, match="world size"):
        hardware.pick_micro_batch(3 * 128, 128, 2, 0, 64)


def test_cpu_defaults():
    cpu = torch.device("cpu")
    assert hardware.resolve_device("cpu") == cpu
    assert hardware.resolve_dtype("float32", cpu) == "float32"
    assert hardware.resolve_dtype("auto", cpu) in ("bfloat16", "float32")
    assert hardware.resolve_compile(False, cpu, 10**9) is False
    assert hardware.resolve_compile(None, cpu, 1000) is False  # too short to earn the compile back
    # without native bf16 (fp32) compiling earns little: only very long runs compile
    n = hardware.CPU_COMPILE_MIN_TOKENS
    assert hardware.resolve_compile(None, cpu, n, "float32") is False
    assert hardware.resolve_compile(None, cpu, n, "bfloat16") == hardware.resolve_compile(
        None, cpu, hardware.CPU_COMPILE_MIN_TOKENS_FP32, "float32")
    assert hardware.micro_batch_cap(GPTConfig(block_size=128), cpu, 10**6) == 16
    if not torch.cuda.is_available():
        with pytest.raises(FwlabError, match="CUDA"):
            hardware.resolve_device("cuda")
