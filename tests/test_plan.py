"""fwlab.plan and fwlab.throughput: the measured throughput, hours on a named GPU, the plan table and its
recommendation, and the `fwlab plan` / `fwlab check-claims` commands end to end.

Synthetic sweeps come from tests/test_forecast.py (a known curve, so every number has an answer).
"""
import json
import subprocess
import sys

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
    assert "INDICATIVE PRIOR ONLY" in text and "recommendation:" in text

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
