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


# --- the general spec: lr_array, spec_from_config, spec_from_reference, with_total_steps ----------

import csv  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from fwlab.errors import FwlabError  # noqa: E402
from fwlab.schedule import (lr_array, spec_from_config, spec_from_reference,  # noqa: E402
                            validate_spec, with_total_steps)

REF = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "reference-curves"
NEED_REF = pytest.mark.skipif(not (REF / "runs").is_dir(),
                              reason=f"published reference curves not found at {REF}")


def _ref_runs():
    if not (REF / "runs").is_dir():
        return []
    return sorted(p.parent for p in [*REF.glob("runs/*/run.json"), *REF.glob("seeds/*/*/run.json")])


@NEED_REF
def test_every_reference_schedule_reproduces_its_lr_column():
    runs = _ref_runs()
    assert len(runs) >= 100  # 99 runs and 24 repeat runs: none silently missed
    impls = set()
    for d in runs:
        sch = json.loads((d / "run.json").read_text())["schedule"]
        impls.add((sch["impl"], sch.get("mpl_kind")))
        with open(d / "curve.csv") as f:
            rows = list(csv.DictReader(f))
        steps = np.array([int(r["step"]) for r in rows])
        want = np.array([float(r["lr"]) for r in rows])
        spec = spec_from_reference(sch)
        json.dumps(spec)  # storable in config.json as is
        got = lr_array(spec, int(steps.max()) + 1)[steps]
        rel = np.abs(got - want) / np.where(want == 0, 1.0, want)
        assert rel.max() < 1e-6, (d.name, int(steps[rel.argmax()]), got[rel.argmax()], want[rel.argmax()])
    assert len(impls) >= 11  # every implementation (and MultiPowerLaw kind) was exercised


def cases():
    for schedule in ("cosine", "wsd", "constant"):
        for kw in (dict(), dict(warmup_iters=None, max_iters=333), dict(warmup_iters=0),
                   dict(min_lr_frac=0.0, cooldown_frac=1.0), dict(cooldown_shape="1-sqrt"),
                   dict(max_iters=20_000, warmup_iters=300, lr=6e-4, cooldown_frac=0.37)):
            yield schedule, kw


@pytest.mark.parametrize("schedule,kw", list(cases()))
def test_spec_from_config_equals_lr_at_exactly(schedule, kw):
    c = cfg(schedule=schedule, **kw)
    n = c.max_iters + 50  # past the end: the floor (or the peak) holds
    want = [lr_at(i, c) for i in range(n)]
    assert lr_array(spec_from_config(c), n).tolist() == want
    # config.json's dict gives the same spec
    assert spec_from_config(c.to_dict()) == spec_from_config(c)


def test_spec_fields_are_validated_by_name():
    good = spec_from_config(cfg(schedule="wsd"))
    for field, value in [("peak_lr", 0), ("total_steps", -3), ("decay_shape", "square"),
                         ("warmup_convention", "s/2"), ("min_lr_frac", 1.5), ("kind", "zigzag"),
                         ("warmup_steps", 2.5), ("surprise", 1)]:
        with pytest.raises(FwlabError, match=field):
            validate_spec(good | {field: value})
    with pytest.raises(FwlabError, match="lrs"):
        validate_spec({"kind": "explicit", "lrs": []})
    with pytest.raises(FwlabError, match="float32"):
        validate_spec(good | {"float32": True})  # defined for llm.c's cosine only


def test_explicit_list_and_two_stage():
    e = {"kind": "explicit", "lrs": [1e-4, 2e-4, 3e-4]}
    assert lr_array(e, 5).tolist() == [1e-4, 2e-4, 3e-4, 3e-4, 3e-4]
    two = {"kind": "two_stage", "peak_lr": 3e-4, "total_steps": 100, "warmup_steps": 10,
           "warmup_convention": "s/(W-1)", "decay_start": 60, "decay_shape": "step",
           "min_lr_frac": 0.1}
    a = lr_array(two, 100)
    assert a[0] == 0 and a[9] == pytest.approx(3e-4) and a[59] == 3e-4
    assert np.allclose(a[60:], 3e-5)
    for s in (e, two):
        with pytest.raises(FwlabError, match="horizon"):
            with_total_steps(s, 200)


def test_with_total_steps_retargets_the_family():
    wsd = spec_from_config(cfg(schedule="wsd", max_iters=1000, cooldown_frac=0.2, warmup_iters=50))
    assert lr_array(with_total_steps(wsd, 3000), 3000).tolist() == \
        lr_array(spec_from_config(cfg(schedule="wsd", max_iters=3000, cooldown_frac=0.2,
                                      warmup_iters=50)), 3000).tolist()
    cos = spec_from_config(cfg(schedule="cosine", max_iters=1000, warmup_iters=50))
    assert lr_array(with_total_steps(cos, 400), 450).tolist() == \
        lr_array(spec_from_config(cfg(schedule="cosine", max_iters=400, warmup_iters=50)), 450).tolist()
    const = spec_from_config(cfg(schedule="constant"))
    assert set(lr_array(with_total_steps(const, 5000), 5000)[50:]) == {1e-3}
    with pytest.raises(FwlabError, match="warmup"):
        with_total_steps(cos, 40)


@NEED_REF
def test_with_total_steps_on_published_schedules():
    # Schaipp et al.: the linear WSD (cooldown 0.2) and the cosine moved to 50k are their 50k runs
    def sch(name):
        return json.loads((REF / "runs" / name / "run.json").read_text())["schedule"]
    for a, b in [("schaipp124m_lr0.001_wsd-linear-0.2_25000", "schaipp124m_lr0.001_wsd-linear-0.2_50000"),
                 ("schaipp124m_lr0.001_cosine-to-10pct_15000", "schaipp124m_lr0.001_cosine-to-10pct_50000")]:
        got = lr_array(with_total_steps(spec_from_reference(sch(a)), 50_000), 50_000)
        want = lr_array(spec_from_reference(sch(b)), 50_000)
        assert np.allclose(got, want, rtol=1e-12, atol=0)
