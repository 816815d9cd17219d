"""fwlab.prior and fwlab.claims: the published and calibrated priors, and claim verdicts with their
basis and strength (measured / forecast from curves / gpu peak / prior; by how many interval
widths a claim misses), against synthetic sweeps of a known curve (tests/test_forecast.py) and
the published FineWeb-Edu run of ../shared/data/reference-curves."""
import json

import numpy as np
import pytest

from fwlab import claims as C
from fwlab import forecast as F
from fwlab import plan as P
from fwlab import prior as PR
from fwlab.errors import FwlabError
from test_forecast import EXAMPLE, REPO, final_loss, write_sweep

REFS = (REPO / ".." / "shared" / "data" / "reference-curves").resolve()
needs_refs = pytest.mark.skipif(not (REFS / "index.csv").is_file(),
                                reason=f"no published reference curves at {REFS}")


# --- priors --------------------------------------------------------------------------------------
def test_published_prior_gives_sane_numbers():
    # GPT-2 124M on 10B tokens: published FineWeb-Edu runs end near 3.03-3.09
    p124 = PR.prior_loss(124e6, 10e9, 10e9)
    assert 2.9 < p124["val_loss"][0] < 3.2
    n40 = F.preset_params("40m")
    assert 40e6 < n40 < 42e6
    budgets = np.array([6000, 10000, 15000, 20000]) * 524_288
    p = PR.prior_loss(n40, budgets, 3.68e9)
    assert np.all(np.diff(p["val_loss"]) < 0)                     # more tokens, lower loss
    assert np.all((p["low"] <= p["val_loss"]) & (p["val_loss"] <= p["high"]))
    assert 3.2 < p["val_loss"][-1] < 3.6 and 3.4 < p["val_loss"][0] < 3.8
    assert "indicative prior only" in p["method"] and p["prior"] == "published"
    # repetition: at 2.85 epochs the optimistic end (repeats = fresh) is below the D' fits
    assert p["low"][-1] < min(v[-1] for v in p["fits"].values())


@needs_refs
def test_calibrated_prior_passes_through_the_fineweb_edu_run():
    cal = PR.calibration(REFS)
    assert cal["runs"] == ["nanogpt_edu_124M_adamw_cosine10_19073_allenporter"]
    assert cal["n_spread"] >= 10
    # at that run's own size and tokens every calibrated fit gives its final loss exactly
    p = PR.calibrated_loss(124475904, 19072 * 524288, None, cal)
    assert p["fits"]["hoffmann2022"][0] == pytest.approx(3.0538, abs=1e-9)
    assert p["fits"]["besiroglu2024"][0] == pytest.approx(3.0538, abs=1e-9)
    assert p["low"][0] < 3.0538 < p["high"][0]
    # the width is the FineWeb runs' spread of that constant (~0.09 nats SD -> ~±0.15 at 90%)
    for f in cal["fits"].values():
        assert 0.05 < f["half_width"] < 0.3
    out = PR.prior_for([6000, 20000], 524_288, 3.68e9, "40m", reference=REFS)
    assert out["row_basis"] == ["prior (calibrated)"] * 2 and out["prior"] == "calibrated"
    assert "nanogpt_edu_124M" in out["method"] and "calibrated" in out["method"]
    assert 3.2 < out["val_loss"][1] < out["val_loss"][0] < 3.9
    pub = PR.prior_for([6000, 20000], 524_288, 3.68e9, "40m", calibrate=False)
    assert pub["row_basis"] == ["prior (published)"] * 2


def test_no_reference_folder_means_the_published_prior(tmp_path, monkeypatch):
    monkeypatch.setattr(PR, "default_reference_dir", lambda root=None: None)
    out = PR.prior_for([6000], 524_288, 3.68e9, "40m")
    assert out["prior"] == "published" and out["row_basis"] == ["prior (published)"]


# --- verdicts: basis and strength ----------------------------------------------------------------
def test_verdict_words_follow_the_basis():
    assert C.verdict(2.4, 2.5, 3.0, 3.2, "measured") == "too optimistic"
    assert C.verdict(2.4, 2.5, 3.0, 3.2, "forecast") == "too optimistic"
    assert C.verdict(2.4, 2.5, 3.0, 3.2, "prior") == "likely optimistic (prior only)"
    assert C.verdict(3.5, 3.6, 3.0, 3.2, "prior") == "likely pessimistic (prior only)"
    assert C.verdict(3.1, 3.6, 3.0, 3.2, "prior") == "consistent"
    # by how many widths of fwlab's interval the claim misses
    assert C.misses_by(2.4, 2.6, 3.0, 3.2) == pytest.approx(2.0)
    assert C.misses_by(3.3, 3.4, 3.0, 3.2) == pytest.approx(0.5)
    assert C.misses_by(3.1, 3.4, 3.0, 3.2) == 0
    assert C.misses_by(1.0, 2.0, 3.0, 3.0) == float("inf")
    assert [C.basis_kind(b) for b in ("measured (b100)", "forecast", "prior (calibrated)",
                                      "plan (prior (published))", "plan (measured (b1))",
                                      "gpu peak", "measured")] == [
        "measured", "forecast", "prior", "prior", "measured", "gpu peak", "measured"]


def test_example_claims_file_parses():
    cl = C.load_claims(EXAMPLE)
    assert cl["preset"] == "40m" and cl["tokens_per_iter"] == 524_288
    assert cl["data_tokens"] == pytest.approx(3.68e9)
    loss = {c["iters"]: (c["low"], c["high"]) for c in cl["claims"] if c["kind"] == "val_loss"}
    assert loss == {6000: (2.9, 3.1), 10000: (2.65, 2.8), 15000: (2.5, 2.65), 20000: (2.42, 2.55)}
    (h,) = [c for c in cl["claims"] if c["kind"] == "hours"]
    assert (h["low"], h["high"], h["iters"], h["gpu"]) == (8, 11, 10000, "RTX 4070")


def test_claims_verdicts_on_a_synthetic_sweep(tmp_path):
    sweep = write_sweep(tmp_path / "sw", noise=0.002)
    U, tpi = 290_000, 4096
    f100, f400 = final_loss(100 * tpi, U), final_loss(400 * tpi, U)
    claims = tmp_path / "c.yaml"
    claims.write_text(f"""
preset: tiny
tokens_per_iter: {tpi}
data_tokens: {U}
claims:
  - iters: 100
    val_loss: [{f100 - 0.05:.3f}, {f100 + 0.05:.3f}]
  - iters: 200
    val_loss: [1.0, 2.0]
  - iters: 400
    val_loss: [{f400 + 0.3:.3f}, {f400 + 0.5:.3f}]
  - hours: [0.4, 0.5]
    per_iters: 1000
  - hours: [0.001, 0.002]
    per_iters: 100000
    gpu: H100
""")
    df = C.check_claims(claims, sweep, n_boot=40)
    assert list(df["verdict"]) == ["consistent", "too optimistic", "too pessimistic",
                                   "consistent", "too optimistic"]
    assert list(df["basis"]) == ["measured (b100)", "measured (b200)", "forecast", "measured",
                                 "gpu peak"]
    assert list(df["basis_kind"]) == ["measured", "measured", "forecast", "measured", "gpu peak"]
    assert df.loc[0, "misses_by"] == 0 and df.loc[3, "misses_by"] == 0
    # claim 3 sits 0.3 nats above the truth: that many widths of the forecast's interval
    assert df.loc[2, "misses_by"] == pytest.approx(
        (df.loc[2, "claimed_low"] - df.loc[2, "high"]) / (df.loc[2, "high"] - df.loc[2, "low"]))
    assert df.loc[2, "misses_by"] > 1
    assert df.loc[0, "value"] == pytest.approx(f100, abs=0.01)
    assert df.loc[2, "low"] <= f400 <= df.loc[2, "high"]
    assert df.loc[3, "value"] == pytest.approx(1000 * tpi / 2500.0 / 3600)  # the runs' tok/s
    assert set(C.COLUMNS) <= set(df.columns)
    text = C.format_verdicts(df)
    assert "TOO OPTIMISTIC" in text and "interval widths" in text


def test_reference_claims_against_a_cpu_sweep_use_a_prior_and_say_so(tmp_path):
    """A CPU-scale sweep (tiny preset) cannot speak for 40m claims: a prior answers, hedged."""
    sweep = write_sweep(tmp_path / "sw")
    df = C.check_claims(EXAMPLE, sweep, n_boot=20)
    loss = df[df["kind"] == "val_loss"]
    assert set(loss["basis_kind"]) == {"prior"}
    expected = "prior (calibrated)" if (REFS / "index.csv").is_file() else "prior (published)"
    assert set(loss["basis"]) == {expected}
    assert loss["note"].str.contains("not on your curves").all()
    assert set(loss["verdict"]) == {"likely optimistic (prior only)"}
    assert (loss["misses_by"] > 1).all()  # the shared table is far below even the prior
    hours = df[df["kind"] == "hours"].iloc[0]
    assert hours["basis"] == "gpu peak" and hours["verdict"] == "too optimistic"
    text = C.format_verdicts(df)
    assert "likely optimistic (prior only)" in text and "LIKELY" not in text
    assert text.count("TOO OPTIMISTIC") == 1  # the hours claim only


def test_claims_against_a_plan_json(tmp_path):
    plan = P.plan("40m", 3.68e9, 524_288, [6000, 10000, 15000, 20000], tok_per_s=80_000,
                  progress=False)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    df = C.check_claims(EXAMPLE, path)
    loss = df[df["kind"] == "val_loss"]
    assert loss["basis"].str.startswith("plan (prior (").all()
    assert (loss["basis_kind"] == "prior").all()
    assert loss["note"].str.contains("plan.json: ").all()
    assert list(loss["value"]) == pytest.approx([r["val_loss"] for r in plan["rows"]])
    assert set(loss["verdict"]) == {"likely optimistic (prior only)"}


@pytest.mark.parametrize("body, match", [
    ("claims: []", "non-empty `claims:`"),
    ("claims:\n  - iters: 10\n", "exactly one of val_loss"),
    ("claims:\n  - val_loss: [3, 2]\n    iters: 10\n", "above high"),
    ("claims:\n  - hours: [1, 2]\n", "per_iters"),
    ("claims:\n  - iters: 10\n    val_loss: [a, 2]\n", "not a number"),
    ("preset: 7b\nclaims:\n  - iters: 10\n    val_loss: [1, 2]\n", "preset '7b' unknown"),
])
def test_bad_claims_files_name_the_file(tmp_path, body, match):
    p = tmp_path / "bad.yaml"
    p.write_text(body)
    with pytest.raises(FwlabError, match=match) as e:
        C.load_claims(p)
    assert "bad.yaml" in str(e.value)
