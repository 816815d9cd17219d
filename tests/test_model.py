"""The GPT: preset sizes (against known GPT-2 figures) and that it can learn (overfit one batch)."""
import pytest
import torch

from fwlab.config import PRESETS, TrainConfig
from fwlab.model import GPT, GPTConfig

# total parameters with tied embeddings; 124m is GPT-2 small's 124,439,808 + the 50,257 -> 50,304
# vocabulary padding (47 x 768 = 36,096)
KNOWN_TOTAL = {"tiny": 3_327_744, "mini": 7_265_024, "40m": 41_004_288, "124m": 124_475_904}


def non_embedding(n_layer, n_embd, **_):
    # per block: LayerNorms 4d, attention 4d^2 + 4d, MLP 8d^2 + 5d; plus the final LayerNorm 2d
    return n_layer * (12 * n_embd**2 + 13 * n_embd) + 2 * n_embd


@pytest.mark.parametrize("preset", list(KNOWN_TOTAL))
def test_preset_parameter_counts(preset):
    with torch.device("meta"):  # no memory, no init cost, same shapes
        model = GPT(TrainConfig(preset=preset).model_config())
    p = PRESETS[preset]
    assert model.num_params() == KNOWN_TOTAL[preset]
    assert model.num_params(non_embedding=True) == non_embedding(**p)
    assert model.num_params() == non_embedding(**p) + 50304 * p["n_embd"] + p["block_size"] * p["n_embd"]
    assert model.lm_head.weight is model.transformer.wte.weight  # tied


def test_overrides_change_the_model():
    c = TrainConfig(preset="tiny", n_layer=3, block_size=64).model_config()
    assert (c.n_layer, c.n_head, c.n_embd, c.block_size) == (3, 2, 64, 64)


def test_tiny_overfits_a_fixed_batch():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**PRESETS["tiny"]))
    opt = model.configure_optimizer(lr=1e-2, weight_decay=0.0)
    x = torch.randint(0, 50257, (1, 32))
    y = torch.roll(x, -1, dims=1)
    losses = []
    for _ in range(25):
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 10.0           # ~ln(50304) at init
    assert losses[-1] < 1.0, losses[-5:]  # memorised: from ~10.8 to < 1 nat


def test_loss_reduction_none_matches_mean():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**PRESETS["tiny"])).eval()
    x, y = torch.randint(0, 50257, (3, 16)), torch.randint(0, 50257, (3, 16))
    _, mean = model(x, y)
    _, per_token = model(x, y, reduction="none")
    assert per_token.shape == (3, 16)
    assert per_token.mean().item() == pytest.approx(mean.item(), rel=1e-6)
