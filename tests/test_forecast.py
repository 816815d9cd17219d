"""fwlab.forecast: the loss fit, the repetition correction, the bootstrap interval and the backtest
(the priors and the claims verdicts: tests/test_claims.py; the planner's hours, plateau advice and
the CLI: tests/test_plan.py).

Synthetic sweeps are written in the run-directory format of fwlab/train.py (config.json,
metrics.jsonl, final.json, sweep.json) from a known curve, so every number has a known answer.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from fwlab import forecast as F
from fwlab.errors import FwlabError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "claims_40m_fineweb_edu.yaml"

# the truth of the synthetic sweeps: the law L = E + A·S1^-alpha - C·S2 (fwlab/forecast.py) with
# S1, S2 in units of D0 tokens, under fwlab's own WSD schedule
TRUTH = dict(E=4.0, A=1.5, alpha=0.45, C=1.0, D0=1e6)
SCHED = dict(schedule="wsd", lr=1e-3, min_lr_frac=0.1, warmup_iters=5, cooldown_frac=0.2,
             cooldown_shape="linear")


def law_loss(iters, max_iters, tpi, U, t=TRUTH, sched=SCHED):
    """The true val loss after `iters` (array) of a run of `max_iters` at `tpi` tokens/iter."""
    lr = F.lr_fracs(sched, max_iters)
    s1, s2 = F.areas(lr, tpi, U, iters, t["D0"], lam=F.LAMBDA)
    return t["E"] + t["A"] * s1 ** -t["alpha"] - t["C"] * s2


def final_loss(d, U, tpi=4096, t=TRUTH):
    """The true final val loss of a WSD run of `d` tokens."""
    n = int(round(d / tpi))
    return float(law_loss([n], n, tpi, U, t)[0])


def write_sweep(root: Path, budgets=(60, 100, 150, 200), tpi=4096, U=290_000, noise=0.004,
                seed=0, eval_interval=4, warmup=5, truth=TRUTH, device_name="x86_64",
                tok_per_s=2500.0) -> Path:
    """A wsd sweep as fwlab.sweep lays it out: the largest budget's run is the trunk, the others
    branch from it at their cooldown start."""
    rng = np.random.default_rng(seed)
    top = max(budgets)
    runs = []
    sched = dict(SCHED, warmup_iters=warmup)
    for b in sorted(budgets):
        k = b - round(0.2 * b)
        name, is_trunk = f"b{b}", b == top
        d = root / "runs" / name
        d.mkdir(parents=True)
        cfg = dict(sched, preset="tiny", tokens_per_iter=tpi, max_iters=b, device="cpu",
                   device_name=device_name,
                   init_from="" if is_trunk else str(root / "runs" / f"b{top}"),
                   init_iter=None if is_trunk else k)
        (d / "config.json").write_text(json.dumps(cfg))
        lines = []
        first = 0 if is_trunk else k
        lr = F.lr_fracs(sched, b)
        true = law_loss(np.arange(1, b + 1), b, tpi, U, truth, sched)
        for it in range(first + 1, b + 1):
            tok = it * tpi
            lines.append(dict(kind="train", iter=it, tokens=tok, epoch=tok / U,
                              lr=1e-3 * lr[it - 1], train_loss=4.0, tok_per_s=tok_per_s,
                              elapsed_s=it * tpi / tok_per_s, mfu=None))
            if it % eval_interval == 0 or it == b:
                lines.append(dict(kind="eval", iter=it, tokens=tok, epoch=tok / U,
                                  val_loss=true[it - 1] + rng.normal(0, noise),
                                  val_loss_stderr=0.01, elapsed_s=it * tpi / tok_per_s))
        (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        last = [x for x in lines if x["kind"] == "eval"][-1]
        (d / "final.json").write_text(json.dumps(dict(
            status="completed", final_val_loss=last["val_loss"], val_loss_stderr=0.01, iters=b,
            tokens=b * tpi, epochs=b * tpi / U, wall_s=(b - first) * tpi / tok_per_s,
            tok_per_s=tok_per_s, device_name=device_name)))
        runs.append(dict(name=name, max_iters=b, budget=b, parent=None if is_trunk else f"b{top}",
                         branch_iter=None if is_trunk else k, status="completed",
                         iters_computed=b - first, role="trunk" if is_trunk else "branch"))
    (root / "sweep.json").write_text(json.dumps(dict(
        mode="wsd", budgets=sorted(budgets), runs=runs, preset="tiny", tokens_per_iter=tpi,
        total_iters_computed=sum(r["iters_computed"] for r in runs))))
    return root


# --- the law's areas -----------------------------------------------------------------------------
def test_areas_by_hand():
    lr = np.array([0.5, 1.0, 1.0, 0.5, 0.5])  # a warm-up step, two at peak, a halving
    s1, s2 = F.areas(lr, 10, 1e9, [1, 2, 3, 4, 5], d_ref=100.0, lam=0.9)
    np.testing.assert_allclose(s1, np.cumsum(lr) * 10 / 100)  # fresh data: LR x tokens
    # the warm-up rise counts nothing; the 0.5 fall stays in the momentum, decaying by 0.9 a step
    np.testing.assert_allclose(s2, np.array([0, 0, 0, 0.5, 0.5 + 0.45]) * 10 / 100)
    # at constant LR, S1 is the effective (repetition-discounted) tokens
    ones = np.ones(3000)
    s1, s2 = F.areas(ones, 1000, 1e6, [3000], d_ref=1.0)
    assert s1[0] == pytest.approx(F.effective_tokens(3e6, 1e6), rel=1e-3) and s2[0] == 0
    # a fwlab WSD schedule: peak until the cooldown, then linear down to min_lr_frac
    lr = F.lr_fracs(SCHED, 100)
    assert lr[4] == 1.0 and lr[79] == 1.0 and lr[-1] == pytest.approx(1 - 0.9 * 19 / 20)


# --- the fit -----------------------------------------------------------------------------------
def test_fit_recovers_known_parameters(tmp_path):
    """A trunk and three cooldown branches from the known law: the fit finds its parameters."""
    sweep = write_sweep(tmp_path / "sw", budgets=(100, 200, 400, 800), noise=0.001,
                        eval_interval=10, U=10_000_000)
    pts = F.load_points(sweep)
    assert set(pts["kind"]) == {"trunk", "anneal", "final"}
    fit = F.fit_points(pts, d_ref=TRUTH["D0"])
    assert fit.E == pytest.approx(TRUTH["E"], abs=0.15)
    assert fit.A == pytest.approx(TRUTH["A"], rel=0.1)
    assert fit.alpha == pytest.approx(TRUTH["alpha"], abs=0.05)
    assert fit.C == pytest.approx(TRUTH["C"], rel=0.1)
    assert fit.rmse == pytest.approx(0.001, rel=0.5)


def test_one_cosine_run_forecasts_a_longer_cosine_budget(tmp_path):
    """A cosine run anneals from its start, so alone it shows the law's every term: its curve
    forecasts the end of a run twice as long under the same schedule."""
    cos = dict(SCHED, schedule="cosine")
    U, tpi, n = 10_000_000, 4096, 200
    lr, true = F.lr_fracs(cos, n), law_loss(np.arange(1, n + 1), n, tpi, U, sched=cos)
    truth = float(law_loss([2 * n], 2 * n, tpi, U, sched=cos)[0])
    inside = 0
    for seed in range(5):
        run = tmp_path / f"cos{seed}"
        run.mkdir()
        (run / "config.json").write_text(json.dumps(dict(cos, preset="tiny", tokens_per_iter=tpi,
                                                         max_iters=n, device="cpu")))
        rng = np.random.default_rng(seed)
        lines = [dict(kind="train", iter=i, tokens=i * tpi, epoch=i * tpi / U, lr=1e-3 * lr[i - 1],
                      train_loss=4.0, tok_per_s=2500.0, elapsed_s=i) for i in range(1, n + 1)]
        lines += [dict(kind="eval", iter=i, tokens=i * tpi, epoch=i * tpi / U, elapsed_s=i,
                       val_loss=true[i - 1] + rng.normal(0, 0.002), val_loss_stderr=0.01)
                  for i in range(5, n + 1, 5)]
        lines.sort(key=lambda x: (x["iter"], x["kind"] == "eval"))
        (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        (run / "final.json").write_text(json.dumps(dict(
            status="completed", final_val_loss=lines[-1]["val_loss"], val_loss_stderr=0.01,
            iters=n, tokens=n * tpi, epochs=n * tpi / U, wall_s=n, tok_per_s=2500.0)))
        pts = F.load_points(run)
        assert pts["kind"].iloc[-1] == "final" and (pts["kind"] == "anneal").any()
        out = F.forecast_loss(pts, 2 * n * tpi, U, n_boot=40, seed=seed)  # its schedule, 2x long
        assert out["val_loss"][0] == pytest.approx(truth, abs=0.03)
        assert not out["drop_assumed"]
        inside += out["low"][0] <= truth <= out["high"][0]
    assert inside >= 4


def test_constant_lr_points_leave_the_cooldown_unknown(tmp_path):
    sweep = write_sweep(tmp_path / "sw", budgets=(100, 400), eval_interval=10)
    pts = F.load_points(sweep)
    trunk = pts[(pts["kind"] == "trunk") & (pts["iter"] <= 300)]
    fit = F.fit_points(trunk)
    assert np.isnan(fit.C)
    out = F.forecast_loss(trunk, 400 * 4096, 290_000, n_boot=20)
    assert out["drop_assumed"] and "ASSUMED" in out["method"]


def test_too_few_points_is_a_clear_error(tmp_path):
    pts = F.load_points(write_sweep(tmp_path / "sw", budgets=(100, 400), eval_interval=10))
    with pytest.raises(FwlabError, match="too few validation points"):
        F.fit_points(pts[pts["iter"] <= 30])


# --- repetition ----------------------------------------------------------------------------------
def test_repetition_correction(tmp_path):
    U = 1e9
    d = np.array([0.2, 0.5, 1.0]) * U
    np.testing.assert_allclose(F.effective_tokens(d, U), d)  # no effect up to one epoch
    ep = np.array([1.0, 2.0, 3.0, 5.0, 10.0, 100.0])
    dp = F.effective_tokens(ep * U, U)
    assert np.all(np.diff(dp) > 0)                    # more data still helps ...
    assert np.all(dp[1:] < ep[1:] * U)                # ... less than fresh data
    gains = np.diff(dp) / np.diff(ep)                 # ... with diminishing returns
    assert np.all(np.diff(gains) < 0)
    assert dp[-1] < U * (1 + F.R_STAR)                # saturating at U (1 + R*)
    # the reference scenario's 2.85 epochs are worth about 2.74 fresh epochs
    assert F.effective_tokens(2.85 * U, U) / U == pytest.approx(2.743, abs=0.01)
    # and the forecast of a fixed budget is worse when its tokens are repeats
    pts = F.load_points(write_sweep(tmp_path / "sw", budgets=(60, 200), U=10_000_000))
    fresh = F.forecast_loss(pts, 600 * 4096, 1e7, n_boot=20)["val_loss"][0]
    repeated = F.forecast_loss(pts, 600 * 4096, 1e6, n_boot=20)["val_loss"][0]
    assert repeated > fresh


# --- the interval ------------------------------------------------------------------------------
def test_bootstrap_interval_covers_truth(tmp_path):
    """What a 30% backtest sees (the trunk to 30% and one finished short cooldown branch): the 90%
    interval holds the true final loss 3.3x further out for most noise draws."""
    inside, errors = 0, []
    for seed in range(6):
        sweep = write_sweep(tmp_path / f"sw{seed}", budgets=(60, 201), seed=seed, eval_interval=3,
                            noise=0.004)
        pts = F.load_points(sweep)
        pts = pts[(pts["run"] == "b60") | (pts["iter"] <= 48 + 12)]
        out = F.forecast_loss(pts, 201 * 4096, 290_000, n_boot=60, seed=seed)
        truth = final_loss(201 * 4096, 290_000)
        inside += out["low"][0] <= truth <= out["high"][0]
        errors.append(out["val_loss"][0] - truth)
        assert out["low"][0] < out["val_loss"][0] < out["high"][0]
        assert out["high"][0] - out["low"][0] < 0.3
    assert inside >= 5
    assert np.median(np.abs(errors)) < 0.03


# --- backtest ------------------------------------------------------------------------------------
def test_backtest_on_a_synthetic_sweep(tmp_path):
    sweep = write_sweep(tmp_path / "sw", budgets=(60, 100, 150, 201), eval_interval=3)
    bt = F.backtest(sweep, frac=0.3, n_boot=60)
    assert bt["run"] == "b201" and bt["runs_used"] == ["b60"]
    assert bt["actual"] == pytest.approx(final_loss(201 * 4096, 290_000), abs=0.015)
    assert abs(bt["error"]) < 0.03 and bt["inside"] and bt["passed"]
    # 30% of 201 iterations: the 60-iteration branch's 12 cooldown steps, and the trunk to 48
    assert bt["cutoff_iter"] == 48 and bt["compute_frac"] == pytest.approx(60 / 201)


def test_backtest_table_in_the_analysis(tmp_path):
    """The analysis notebook's backtest section shows the same numbers as forecast.backtest."""
    from fwlab import report
    from fwlab.runs import load_runs

    sweep = write_sweep(tmp_path / "sw", budgets=(60, 100, 150, 201), eval_interval=3)
    bt = F.backtest(sweep, frac=0.3)
    row = report.backtest_summary(load_runs(sweep)).iloc[0]
    assert row["run"] == bt["run"] == "b201"
    assert row["forecast [interval]"] == f"{bt['forecast']:.4f} [{bt['low']:.4f}, {bt['high']:.4f}]"
    assert row["error (nats)"] == f"{bt['error']:+.4f}" and bool(row["inside interval"]) == bt["inside"]
    # a sweep with no completed run cannot be backtested: a message, not an exception
    (tmp_path / "sw" / "runs" / "b60" / "final.json").unlink()
    for name in ("b100", "b150", "b201"):
        (tmp_path / "sw" / "runs" / name / "final.json").unlink()
    assert report.backtest_summary(load_runs(sweep)).startswith("No backtest:")


def test_seed_floor_of_sweeps_that_differ_by_an_offset(tmp_path):
    """Seeds that only shift the whole curve: the oracle (short budget + the others' mean gain) is
    exact up to the eval noise, and the spread of the finals is the shifts'."""
    shifts = (0.0, 0.05, 0.1)
    sweeps = [write_sweep(tmp_path / f"s{k}", budgets=(60, 100, 201), eval_interval=3, seed=k,
                          noise=0.002, truth=dict(TRUTH, E=TRUTH["E"] + d))
              for k, d in enumerate(shifts)]
    fl = F.seed_floor(sweeps)
    assert fl["n"] == 3 and fl["budgets"] == [60, 201]
    assert fl["final_sd"] == pytest.approx(0.05, abs=0.005)
    for r, d in zip(fl["rows"], shifts):
        assert r["actual"] == pytest.approx(final_loss(201 * 4096, 290_000) + d, abs=0.01)
        assert abs(r["error"]) < 0.01
    # a seed whose cooldowns gain less: the oracle misses it by the difference of the gains
    t_odd = dict(TRUTH, C=0.2)
    odd = write_sweep(tmp_path / "odd", budgets=(60, 100, 201), eval_interval=3, seed=9,
                      noise=0.002, truth=t_odd)

    def gain(t):
        return final_loss(201 * 4096, 290_000, t=t) - final_loss(60 * 4096, 290_000, t=t)
    expected = gain(TRUTH) - gain(t_odd)
    fl = F.seed_floor(sweeps + [odd])
    assert abs(expected) > F.TARGET_ABS_ERROR and fl["rows"][-1]["error"] == pytest.approx(expected, abs=0.01)


def test_seed_floor_refuses_mixed_settings_and_too_few_seeds(tmp_path):
    a = write_sweep(tmp_path / "a", budgets=(60, 201), eval_interval=3)
    b = write_sweep(tmp_path / "b", budgets=(60, 201), eval_interval=3, seed=1)
    c = write_sweep(tmp_path / "c", budgets=(60, 150), eval_interval=3, seed=2)
    with pytest.raises(FwlabError, match="at least 3 seeds"):
        F.seed_floor([a, b])
    with pytest.raises(FwlabError, match=r"budgets 60\.\.150.*60\.\.201"):
        F.seed_floor([a, b, c])
