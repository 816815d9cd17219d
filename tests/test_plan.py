"""fwlab.plan and fwlab.throughput: the measured throughput, hours on a named GPU, the plan table and its
recommendation, and the `fwlab plan` / `fwlab check-claims` commands end to end.

Synthetic sweeps come from tests/test_forecast.py (a known curve, so every number has an answer).
"""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from fwlab import plan as P
from fwlab import throughput
from fwlab.errors import FwlabError
from test_forecast import EXAMPLE, REPO, final_loss, write_sweep


# --- throughput and the planner ------------------------------------------------------------------
def test_measure_throughput_runs_the_real_step():
    m = throughput.measure_throughput("tiny", 4 * 128, device="cpu", dtype="float32", compile=False,
                             iters=2, micro_batch=2, warmup=1, progress=False)
    assert m["accum"] == 2 and m["micro_batch"] == 2
    assert m["tok_per_s"] > 0
    assert m["s_per_iter"] == pytest.approx(4 * 128 / m["tok_per_s"])
    assert m["mfu"] is None and m["peak_flops"] is None  # a CPU has no peak in the table


def test_planner_hours_follow_the_measured_throughput(monkeypatch, tmp_path):
    sweep = write_sweep(tmp_path / "sw")
    calls = []

    def fake_measure(preset, tokens_per_iter, *a, **k):
        calls.append((preset, tokens_per_iter))
        return dict(tok_per_s=1234.5, s_per_iter=tokens_per_iter / 1234.5, device="cpu",
                    device_name="test-cpu", dtype="float32", compile=False, mfu=None,
                    method="fake")

    monkeypatch.setattr(throughput, "measure_throughput", fake_measure)
    p = P.plan("tiny", 290_000, 4096, [60, 100, 150, 200, 400], sources=[sweep], n_boot=40,
               progress=False)
    assert calls == [("tiny", 4096)]
    for r in p["rows"]:
        assert r["hours"] == pytest.approx(r["budget"] * 4096 / 1234.5 / 3600)
        assert r["val_loss_low"] <= r["val_loss"] <= r["val_loss_high"]
    rows = p["rows"]
    assert rows[1]["gain_per_hour"] == pytest.approx(
        (rows[0]["val_loss"] - rows[1]["val_loss"]) / (rows[1]["hours"] - rows[0]["hours"]))
    assert p["loss_basis"] == "curves"
    # budgets the sweep ran are its measured finals; the one beyond is forecast near the truth
    for r in rows[:4]:
        final = json.loads((sweep / "runs" / f"b{r['budget']}" / "final.json").read_text())
        assert r["loss_basis"] == f"measured (b{r['budget']})"
        assert r["val_loss"] == final["final_val_loss"]
    assert rows[4]["loss_basis"] == "forecast"
    assert rows[4]["val_loss"] == pytest.approx(final_loss(400 * 4096, 290_000), abs=0.03)
    assert rows[4]["val_loss_low"] <= final_loss(400 * 4096, 290_000) <= rows[4]["val_loss_high"]
    # recommendation: walk up while each step still buys more than the threshold per hour
    gph = [r["gain_per_hour"] for r in rows[1:]]
    thr = sorted(gph)[len(gph) // 2]  # a threshold that some steps pass and some do not
    rec = P.recommend(rows, thr)
    k = next((i for i, g in enumerate(gph) if g <= thr), len(gph))
    assert rec["budget"] == rows[k]["budget"]
    assert "nats/hour" in rec["reason"]
    json.dumps(p)  # JSON-ready


def test_plan_with_a_named_gpu_and_the_prior():
    p = P.plan("40m", 3.68e9, 524_288, [6000, 10000, 15000, 20000], gpu="NVIDIA GeForce RTX 4070",
               progress=False)
    assert p["loss_basis"] == "prior"
    r10k = p["rows"][1]
    fpt = P.preset_flops_per_token("40m")
    assert r10k["hours_low"] == pytest.approx(10000 * 524_288 * fpt / (58.3e12 * 0.5) / 3600)
    assert r10k["hours_high"] == pytest.approx(10000 * 524_288 * fpt / (58.3e12 * 0.3) / 3600)
    assert r10k["hours_low"] > 11  # the shared "8-11 h per 10k iterations" cannot hold
    text = P.format_plan(p)
    assert "PRIOR ONLY" in text and "recommendation:" in text
    assert p["rows"][0]["loss_basis"] == f"prior ({p['prior']})"

def test_mfu_range_flag():
    assert P.parse_mfu_range("0.3,0.5") == [0.3, 0.5]
    for bad in ("0.3", "0.3,1.5", "0,0.5", "a,0.5", "nan,0.5", "0.3,inf"):
        with pytest.raises(FwlabError, match="--mfu"):
            P.parse_mfu_range(bad)


@pytest.mark.parametrize("flag", ["--data-tokens", "--tokens-per-iter"])
@pytest.mark.parametrize("value, why", [("inf", "finite"), ("nan", "finite"), ("-5", "positive"),
                                        ("lots", "not a number")])
def test_plan_refuses_bad_counts(flag, value, why):
    import argparse
    args = argparse.Namespace(from_=None, preset="tiny", data_tokens="1e6", tokens_per_iter="512",
                              mfu="0.3,0.5", budgets="10", tok_per_s=1000.0, measure_iters=0,
                              device="cpu", dtype="float32", compile=False, micro_batch=0,
                              data=None, gpu=None, min_gain_per_hour=0.01, json=True, out=None)
    setattr(args, flag[2:].replace("-", "_"), value)
    with pytest.raises(FwlabError, match=f"{flag} .*{why}"):
        P.main_plan(args)


# --- the CLI -------------------------------------------------------------------------------------
def test_cli_plan_and_check_claims(tmp_path):
    sweep = write_sweep(tmp_path / "sw")
    env_py = sys.executable
    out = subprocess.run([env_py, "-m", "fwlab", "plan", "--from", str(sweep), "--tok-per-s",
                          "2000", "--budgets", "100,200,400", "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    p = json.loads(out.stdout)
    assert p["preset"] == "tiny" and p["data_tokens"] == pytest.approx(290_000)
    assert [r["budget"] for r in p["rows"]] == [100, 200, 400]
    assert p["rows"][2]["hours"] == pytest.approx(400 * 4096 / 2000 / 3600)
    assert p["plateau"] and p["plateau"][0]["run"] == "b200"
    out = subprocess.run([env_py, "-m", "fwlab", "check-claims", str(EXAMPLE), "--from",
                          str(sweep)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "TOO OPTIMISTIC" in out.stdout and "RTX 4070" in out.stdout
    bad = subprocess.run([env_py, "-m", "fwlab", "check-claims", str(tmp_path / "none.yaml"),
                          "--from", str(sweep)], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert bad.returncode == 2 and "none.yaml" in bad.stderr and "Traceback" not in bad.stderr


# --- one model for the recommendation and the plateau advice; budgets from --from ----------------
def test_plateau_slope_test():
    it = np.arange(1, 21) * 100
    rng = np.random.default_rng(0)
    flat = pd.DataFrame(dict(iter=it, val_loss=3.0 + rng.normal(0, 0.003, len(it))))
    falling = pd.DataFrame(dict(iter=it, val_loss=3.0 + 1 / np.sqrt(it) * 5))
    assert P.plateau(flat)["plateaued"] is True
    f = P.plateau(falling)
    assert f["plateaued"] is False and f["slope_per_1k_iters"] < 0
    assert P.plateau(flat.head(3))["plateaued"] is None


def _args(**kw):
    import argparse
    base = dict(from_=None, preset=None, data_tokens=None, tokens_per_iter=None, mfu="0.3,0.5",
                budgets=None, tok_per_s=2000.0, measure_iters=0, device="cpu", dtype="float32",
                compile=False, micro_batch=0, data=None, gpu=None, min_gain_per_hour=0.01,
                json=True, out=None)
    return argparse.Namespace(**(base | kw))


def test_coverage_lines_warn_loudly_past_twice_the_curves_even_at_a_runs_own_end():
    """A run cut at the evaluation nearest half its steps (2.006x) gets a note; a run's own end
    from a quarter of it (4x) still gets the loud warning, with the note beside it."""
    cov = dict(curves_tokens=5e9, curves_epochs=0.5, far_beyond=P.FAR_BEYOND)
    half = dict(budget=19560, epochs=1.0, beyond_curves=2.006, own_end="d12")
    assert P.coverage_lines(dict(coverage=cov, rows=[half])) == [
        "note: budgets 19,560 go past what the curves cover (the curves reach 5B tokens (0.50 "
        "epochs)): their losses are extrapolations of the fitted law",
        "note: budget 19,560 is the planned end of d12, still going: its loss is forecast along "
        "that run's own known schedule"]
    quarter = dict(half, beyond_curves=4.0)
    lines = P.coverage_lines(dict(coverage=cov, rows=[quarter]))
    assert len(lines) == 2 and "planned end of d12" in lines[0]
    assert lines[1].startswith("*** FAR BEYOND THE CURVES: budgets 19,560 need up to 4.0x")
    assert P.coverage_lines(dict(coverage=cov, rows=[dict(half, beyond_curves=1.04)])) == []


def test_plan_from_a_sweep_plans_its_own_budgets(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "sw")
    assert P.main_plan(_args(from_=[str(sweep)], out=str(tmp_path / "p.json"))) == 0
    p = json.loads((tmp_path / "p.json").read_text())
    assert [r["budget"] for r in p["rows"]] == [60, 100, 150, 200]
    assert "those of" in capsys.readouterr().err
    assert all(r["loss_basis"].startswith("measured") for r in p["rows"])
    assert all(r["beyond_curves"] == pytest.approx(r["tokens"] / (200 * 4096)) for r in p["rows"])
    assert "FAR BEYOND" not in P.format_plan(p)


def _agree(p):
    """The recommendation and the plateau advice say the same about a longer budget."""
    rec = p["recommendation"]
    (pl,) = p["plateau"]
    assert pl["advice_from"].startswith("the plan's forecast")
    longer = bool(rec["longer_pays"])
    assert pl["plateaued"] is (not longer)
    text = P.format_plan(p)
    rec_line = next(l for l in text.splitlines() if l.startswith("recommendation:"))
    pl_line = next(l for l in text.splitlines() if l.startswith("plateau:"))
    if longer:
        assert "would still pay" in rec_line and "would still pay" in pl_line
    else:
        assert "would still pay" not in pl_line and "buys little" in pl_line
    return text


def test_far_beyond_the_curves_is_said_loudly_and_advice_agrees(tmp_path):
    sweep = write_sweep(tmp_path / "sw")  # the curves reach 200 x 4096 tokens (2.8 epochs)
    p = P.plan("tiny", 290_000, 4096, [100, 400, 1300], sources=[sweep], tok_per_s=2000,
               n_boot=20, progress=False)
    assert [round(r["beyond_curves"], 2) for r in p["rows"]] == [0.5, 2.0, 6.5]
    text = _agree(p)
    assert "*** FAR BEYOND THE CURVES: budgets 1,300 need up to 6.5x the tokens" in text
    assert "6.5x past the curves" in text
    assert p["next_step"]["budget"] == 1950
    # the default threshold and a threshold above every step: both agree with the advice
    p2 = P.plan("tiny", 290_000, 4096, [100, 150, 200], sources=[sweep], tok_per_s=2000,
                n_boot=20, progress=False, min_gain_per_hour=1e9)
    assert p2["recommendation"]["budget"] == 100 and p2["recommendation"]["longer_pays"] is False
    assert "recommended" in next(l for l in P.format_plan(p2).splitlines() if l.startswith("     100"))
    _agree(p2)
    p3 = P.plan("tiny", 290_000, 4096, [100, 150, 200], sources=[sweep], tok_per_s=2000,
                n_boot=20, progress=False, min_gain_per_hour=0.0)
    assert p3["recommendation"]["budget"] == 200 and p3["recommendation"]["longer_pays"] is True
    _agree(p3)


def test_format_plan_survives_unknown_stderrs():
    rows = [dict(budget=b, tokens=b * 10, epochs=0.1, val_loss=3.0 - i / 10, val_loss_low=None,
                 val_loss_high=None, loss_basis="measured (x)", hours=1.0 + i, hours_low=1.0 + i,
                 hours_high=1.0 + i, gain=None if i == 0 else 0.1,
                 extra_hours=None if i == 0 else 1.0, gain_per_hour=None if i == 0 else 0.1)
            for i, b in enumerate((10, 20))]
    p = dict(preset="tiny", n_params=1e6, flops_per_token=6e6, data_tokens=1e6,
             tokens_per_iter=10, throughput=dict(source="given", tok_per_s=10.0), loss_basis="curves",
             loss_method="m", interval="90% bootstrap", rows=rows,
             recommendation=P.recommend(rows, 0.01), plateau=[])
    text = P.format_plan(p)
    assert "[?, ?]" in text and "nats per hour" in text


REFS = (REPO / ".." / "shared" / "data" / "reference-curves").resolve()


@pytest.mark.skipif(not (REFS / "runs").is_dir(), reason=f"no reference curves at {REFS}")
def test_plan_from_an_imported_reference_sweep(tmp_path):
    from fwlab.importers import import_reference_group
    out = tmp_path / "s"
    import_reference_group(REFS, "schaipp2025-124m-lr0.001", out, budgets_only=True,
                           progress=False)
    # unique tokens unknown: the forecast takes the runs as single-epoch and says so
    p0 = P.plan("40m", 1e12, 102_400, [15000, 50000], sources=[out], tok_per_s=1e6, n_boot=10,
                progress=False)
    assert "single-epoch" in p0["loss_method"]
    out2 = tmp_path / "s2"
    import_reference_group(REFS, "schaipp2025-124m-lr0.001", out2, budgets_only=True,
                           progress=False, train_tokens=600_000_000_000)
    lab = P.load_runs(out2)
    assert P.sweep_budgets(lab) == [15000, 25000, 35000, 50000]
    p = P.plan("40m", 6e11, 102_400, P.sweep_budgets(lab), sources=[out2], tok_per_s=1e6,
               n_boot=10, progress=False, lab=lab)
    text = _agree(p)  # measured rows without a logged stderr print, not crash
    assert "[?, ?]" in text
    assert [r["loss_basis"] for r in p["rows"]] == [
        f"measured (wsd-linear-0.2_{b})" for b in (15000, 25000, 35000, 50000)]


def test_advice_for_a_running_run_follows_the_forecast(tmp_path):
    sweep = write_sweep(tmp_path / "sw")
    (sweep / "runs" / "b200" / "final.json").unlink()  # the trunk is still training
    state = json.loads((sweep / "sweep.json").read_text())
    for r in state["runs"]:
        if r["name"] == "b200":
            r["status"] = "running"
    (sweep / "sweep.json").write_text(json.dumps(state))
    for thr, word in ((0.01, "keep training"), (1e9, "cool down")):
        p = P.plan("tiny", 290_000, 4096, [60, 100, 150, 200], sources=[sweep], tok_per_s=2000,
                   n_boot=10, progress=False, min_gain_per_hour=thr)
        (pl,) = [x for x in p["plateau"] if x["run"] == "b200"]
        assert pl["status"] == "running" and word in pl["advice"]
        assert pl["plateaued"] is (word == "cool down")
        assert str(f"{p['recommendation']['budget']:,}") in pl["advice"]
