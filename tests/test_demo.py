"""fwlab.demo: sizing the main job to the machine, saying what data it used, and the job end to end
on a slice of the real sample."""
import argparse
import json
import re

import pytest

from fwlab import demo, sweep
from fwlab.errors import FwlabError
from fwlab.importers import default_reference_dir

REFS_THERE = default_reference_dir() is not None  # ../shared/data/reference-curves beside the checkout

FAST = dict(train_tok_s=1e6, eval_tok_s=3e6, device="cpu", dtype="bfloat16")
# an AVX2-only 2-core EPYC under load: fp32, ~700 tokens/s of training
SLOW = dict(train_tok_s=700.0, eval_tok_s=2000.0, device="cpu", dtype="float32")


# --- sizing (no training) -------------------------------------------------------------------------
def test_a_fast_machine_gets_every_token_asked():
    s = demo.size_demo(FAST, 300_000, 8 * 60)
    assert not s["sized"] and s["fits"]
    assert s["max_tokens"] == 300_000 and s["train_tokens"] == 300_000 - demo.DEMO_VAL_TOKENS


def test_a_slow_machine_gets_the_most_tokens_that_fit_the_target():
    target = 8 * 60
    s = demo.size_demo(SLOW, 300_000, target)
    assert s["sized"] and s["fits"]
    assert s["expected"]["total"] <= target
    # about the most that fit (to the bisection's 1000 tokens): 2000 more would not
    assert demo.expected_seconds(s["train_tokens"] + 2000, SLOW)["total"] > target
    assert s["max_tokens"] == s["train_tokens"] + demo.DEMO_VAL_TOKENS
    # the same sweep, smaller: budgets still at the reference epoch ratios
    shape = demo.sweep_shape(s["train_tokens"])
    ratios = [b / shape["budgets"][-1] for b in shape["budgets"]]
    want = [e / demo.DEMO_EPOCHS[-1] for e in demo.DEMO_EPOCHS]
    assert ratios == pytest.approx(want, abs=0.01)
    # and the full-size sweep would not have fitted
    assert demo.expected_seconds(300_000 - demo.DEMO_VAL_TOKENS, SLOW)["total"] > target
    # twice as slow: fewer tokens again
    slower = dict(SLOW, train_tok_s=SLOW["train_tok_s"] / 2, eval_tok_s=SLOW["eval_tok_s"] / 2)
    assert demo.size_demo(slower, 300_000, target)["train_tokens"] < s["train_tokens"]


def test_too_slow_a_machine_gets_the_smallest_demo_and_is_told():
    crawl = dict(SLOW, train_tok_s=20.0, eval_tok_s=60.0)
    s = demo.size_demo(crawl, 300_000, 8 * 60)
    assert s["train_tokens"] == demo.MIN_TRAIN_TOKENS and not s["fits"]
    assert not demo.size_demo(crawl, 300_000, 0)["sized"]  # target 0: no sizing
    with pytest.raises(FwlabError, match="validation"):
        demo.size_demo(FAST, demo.DEMO_VAL_TOKENS, 60)


def test_expected_duration_counts_training_evaluation_and_fixed_work():
    e = demo.expected_seconds(235_000, SLOW)
    shape = demo.sweep_shape(235_000)
    assert shape["budgets"] == sweep.epochs_to_budgets(demo.DEMO_EPOCHS, 235_000, 512)
    assert shape["eval_interval"] == 32 and shape["iters"] == 1712
    assert e["train"] == pytest.approx(1712 * 512 / 700)
    assert shape["eval_tokens"] == 16_384
    assert e["eval"] == pytest.approx(shape["evals"] * 16_384 / 2000)
    assert e["fixed"] > 0 and e["compile"] == 0  # no compile without native bf16
    assert e["total"] == pytest.approx(e["train"] + e["eval"] + e["fixed"] + e["compile"])
    # a quarter of the data: more frequent evaluations of fewer tokens, enough points for a
    # curve, and evaluation costing about what training does
    small = demo.sweep_shape(60_000)
    assert small["eval_interval"] < 32 and small["eval_tokens"] < 16_384 and small["evals"] >= 20
    assert small["evals"] * small["eval_tokens"] <= 1.2 * small["iters"] * 512


def test_measure_speed_times_real_steps():
    sp = demo.measure_speed(steps=1, device="cpu")
    assert sp["train_tok_s"] > 0 and sp["eval_tok_s"] > 0
    assert sp["device"] == "cpu" and sp["dtype"] in ("bfloat16", "float32")


# --- what the data is -----------------------------------------------------------------------------
def test_the_demo_says_how_much_of_each_source_it_used(tmp_path, edu_sample, fineweb_sample):
    from fwlab.prepare import prepare
    sources = [str(edu_sample), str(fineweb_sample)]
    m = prepare(sources, str(tmp_path / "d"), max_tokens=150_000, val_tokens=10_000, progress=False)
    rows = demo.data_composition(sources, m)
    assert [r["label"] for r in rows] == ["FineWeb-Edu", "plain FineWeb, not FineWeb-Edu"]
    assert sum(r["tokens"] for r in rows) == m["tokens"] == 150_000
    assert sum(r["docs"] for r in rows) == m["docs"]
    edu, web = rows
    assert edu["docs"] == edu["docs_in_source"] == 156 and 0 < web["docs"] < web["docs_in_source"]
    text = "\n".join(demo.describe_data(rows, m, asked=150_000, sized_to=None))
    assert f"{edu['tokens']:,} tokens, all 156 documents" in text
    assert f"{web['docs']:,} of {web['docs_in_source']:,} documents" in text
    assert "not those of FineWeb-Edu alone" in text and "fewer than" not in text

    # asking for more than the sources hold is said, with both numbers
    m2 = prepare([str(edu_sample)], str(tmp_path / "e"), max_tokens=300_000, val_tokens=10_000,
                 progress=False)
    text = "\n".join(demo.describe_data(demo.data_composition([str(edu_sample)], m2), m2,
                                        asked=300_000, sized_to=None))
    assert f"only {m2['tokens']:,} tokens, fewer than the 300,000 asked" in text
    assert "not those of FineWeb-Edu alone" not in text


# --- the main job -------------------------------------------------------------------------------
def test_demo_prepares_sweeps_and_reports_then_does_no_work_again(tmp_path, edu_sample, monkeypatch,
                                                                  capsys):
    """`fwlab demo` end to end on a slice of the real sample (smaller data and evals than the real
    demo, the same code path): sizing, data, a wsd sweep at the reference epoch ratios, the report."""
    monkeypatch.setattr(demo, "DEMO_VAL_TOKENS", 4_000)
    monkeypatch.setattr(demo, "DEMO_CONFIG", dict(demo.DEMO_CONFIG, eval_interval=16,
                                                  eval_tokens=2048, device="cpu", compile=False))
    monkeypatch.setattr(demo, "measure_speed", lambda: dict(FAST))
    args = argparse.Namespace(source=[str(edu_sample)], out=str(tmp_path / "demo"), max_tokens="24e3",
                              target_min=8)
    assert demo.main(args) == 0
    out = capsys.readouterr().out
    assert "expected duration" in out and "ETA" in out
    assert re.search(r"24,000 tokens, \d+ of 156 documents, of .*\[FineWeb-Edu\]", out)
    plan = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert plan["max_tokens"] == 24_000 and not plan["sized"]
    state = json.loads((tmp_path / "demo" / "sweep" / "sweep.json").read_text())
    assert state["mode"] == "wsd" and state["status"] == "completed"
    assert state["epochs"] == list(demo.DEMO_EPOCHS)
    assert state["total_iters_computed"] == state["planned_iters"]
    report = tmp_path / "demo" / "sweep" / "report"
    for name in ("analysis.ipynb", "report.html", "curves.png", "summary.csv"):
        assert (report / name).stat().st_size > 0, name
    assert str(report / "report.html") in out
    assert "train " in out and " iterations: final validation loss" in out  # the answer, printed
    real = tmp_path / "demo" / "reference-124m" / "sweep"
    if REFS_THERE:  # the real 124M sweep imported and reported beside the CPU one
        assert f"the real 124M sweep's {real / 'report' / 'report.html'}" in out
        assert f"the CPU sweep's {report / 'report.html'}" in out
        rows = (real / "report" / "summary.csv").read_text().splitlines()
        assert [r.split(",")[1] for r in rows[1:]] == ["15000", "25000", "35000", "50000"]
        assert "train 50,000 iterations" in out
        real_mtime = (real / "report" / "report.html").stat().st_mtime_ns
    else:
        assert not real.exists()
    # a second run finds everything done: not re-sized, no notebook executed, the report left alone
    mtime = (report / "report.html").stat().st_mtime_ns
    monkeypatch.setattr(demo, "measure_speed", lambda: pytest.fail("re-sized a started demo"))
    monkeypatch.setattr(sweep, "_execute", lambda *a, **k: pytest.fail("re-ran a finished run"))
    assert demo.main(args) == 0
    assert "resuming the demo" in capsys.readouterr().out
    assert (report / "report.html").stat().st_mtime_ns == mtime
    if REFS_THERE:
        assert (real / "report" / "report.html").stat().st_mtime_ns == real_mtime


def test_demo_refuses_a_wrong_reference_folder_before_any_work(tmp_path):
    args = argparse.Namespace(source=["x.jsonl"], out=str(tmp_path / "demo"), max_tokens="24e3",
                              target_min=8, reference=str(tmp_path))
    with pytest.raises(FwlabError, match="not a reference-curves folder"):
        demo.main(args)
    assert not (tmp_path / "demo").exists()
