"""Learning-rate schedules: warmup, cosine floor, WSD plateau and cooldown ends, trunk/branch LR."""
import math
import sys

import pytest

from fwlab.config import TrainConfig
from fwlab.schedule import cooldown_start, default_warmup, lr_at, warmup_of


def cfg(**kw):
    base = dict(lr=1e-3, min_lr_frac=0.1, max_iters=1000, warmup_iters=50, schedule="cosine",
                cooldown_frac=0.2, cooldown_shape="linear")
    return TrainConfig(**(base | kw))


@pytest.mark.parametrize("schedule", ["cosine", "wsd", "constant"])
def test_linear_warmup(schedule):
    c = cfg(schedule=schedule)
    lrs = [lr_at(i, c) for i in range(50)]
    assert lrs[0] == pytest.approx(1e-3 / 50)
    assert lrs[49] == pytest.approx(1e-3)
    assert all(b - a == pytest.approx(1e-3 / 50) for a, b in zip(lrs, lrs[1:]))


def test_default_warmup():
    assert default_warmup(20) == 1 and default_warmup(1) == 1
    assert default_warmup(2000) == 100
    assert default_warmup(100_000) == 1000  # capped
    assert warmup_of(cfg(warmup_iters=None, max_iters=400)) == 20
    assert warmup_of(cfg(warmup_iters=7)) == 7


def test_cosine_floor_and_midpoint():
    c = cfg()
    assert lr_at(1000, c) == pytest.approx(1e-4)              # the floor at max_iters
    assert lr_at(5000, c) == pytest.approx(1e-4)              # and stays there
    mid = 50 + (1000 - 50) // 2
    assert lr_at(mid, c) == pytest.approx(1e-4 + 0.5 * 9e-4, rel=1e-3)
    after = [lr_at(i, c) for i in range(50, 1001)]
    assert all(b <= a for a, b in zip(after, after[1:]))      # monotone decay
    assert min(after) >= 1e-4 - 1e-15


def test_cosine_matches_reference_schedule(reference_dir):
    sys.path.insert(0, str(reference_dir))
    from gpt_reference import reference_lr
    for n in (20, 300, 2000):
        c = cfg(max_iters=n, warmup_iters=None, lr=6e-4)
        for i in range(n):
            assert lr_at(i, c) == pytest.approx(reference_lr(i, n, 6e-4), rel=1e-12, abs=1e-15)


def test_constant_is_flat_after_warmup():
    c = cfg(schedule="constant")
    assert {lr_at(i, c) for i in range(50, 1200)} == {1e-3}


@pytest.mark.parametrize("shape", ["linear", "1-sqrt"])
def test_wsd_plateau_and_cooldown(shape):
    c = cfg(schedule="wsd", cooldown_shape=shape)
    start = cooldown_start(1000, 0.2)
    assert start == 800
    assert {lr_at(i, c) for i in range(50, 801)} == {1e-3}     # plateau up to and at the start
    assert lr_at(1000, c) == pytest.approx(1e-4)               # ends at the floor
    half = lr_at(900, c)
    frac = 0.5 if shape == "linear" else 1 - math.sqrt(0.5)
    assert half == pytest.approx(1e-4 + frac * 9e-4)
    cool = [lr_at(i, c) for i in range(800, 1001)]
    assert all(b < a for a, b in zip(cool, cool[1:]))
    if shape == "1-sqrt":  # drops faster early than linear
        lin = cfg(schedule="wsd", cooldown_shape="linear")
        assert lr_at(820, c) < lr_at(820, lin)


def test_wsd_zero_floor_and_full_cooldown():
    c = cfg(schedule="wsd", min_lr_frac=0.0, cooldown_frac=1.0, warmup_iters=0)
    assert lr_at(0, c) == pytest.approx(1e-3)
    assert lr_at(1000, c) == 0.0


@pytest.mark.parametrize("trunk_schedule", ["constant", "wsd"])
def test_branch_sees_trunk_lr_before_its_cooldown(trunk_schedule):
    # A sweep: trunk of the largest budget, a cooldown branch per budget B started from the trunk's
    # checkpoint at K = cooldown_start(B); both must agree on every step before K.
    trunk = cfg(schedule=trunk_schedule, max_iters=20_000, warmup_iters=300)
    for budget in (6000, 10_000, 15_000):
        branch = cfg(schedule="wsd", max_iters=budget, warmup_iters=300)
        k = cooldown_start(budget, 0.2)
        assert k == int(0.8 * budget)
        assert all(lr_at(i, branch) == lr_at(i, trunk) for i in range(0, k + 1))
        assert lr_at(k + 1, branch) < lr_at(k + 1, trunk)
        assert lr_at(budget, branch) == pytest.approx(1e-4)
