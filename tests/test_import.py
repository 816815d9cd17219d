"""fwlab import: other trainers' logs and published curves -> run and sweep directories.

The logs are the real ones in ../shared/data/reference-curves/logs (skipped when absent); nanoGPT's
stdout, which that folder lacks, is written here. URLs are served from 127.0.0.1 only.
"""
import csv
import functools
import http.server
import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from fwlab import importers as I
from fwlab.cli import main as cli
from fwlab.errors import FwlabError
from fwlab.schedule import lr_array, spec_from_reference

REF = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "reference-curves"
LOGS = REF / "logs"
NEED_REF = pytest.mark.skipif(not (REF / "runs").is_dir(),
                              reason=f"published reference curves not found at {REF}")


def metrics(run):
    return [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def points(run, kind, key):
    return {m["iter"]: m[key] for m in metrics(run) if m["kind"] == kind}


def first_last(d):
    its = sorted(d)
    return (its[0], d[its[0]]), (its[-1], d[its[-1]])


def log_values(path, pattern):
    """(step, value text) of every line matching `pattern` (read here, independently of fwlab)."""
    out = []
    for line in Path(path).read_text().splitlines():
        m = re.search(pattern, line)
        if m:
            out.append((int(m.group(1)), m.group(2)))
    return out


def run_json(name):
    return json.loads((REF / "runs" / name / "run.json").read_text())


# --- each format: the first and the last value of the log, exactly ----------------------------
@NEED_REF
def test_llmc_values_and_schedule_equal_the_log(tmp_path):
    log = LOGS / "llmc_124M_adamw_cosine_19560.log"
    final = I.import_log("llmc", log, tmp_path / "run", flags={"tokens_per_iter": 524288})
    ev, tr = points(tmp_path / "run", "eval", "val_loss"), points(tmp_path / "run", "train", "train_loss")
    tel = log_values(log, r"^s:(\d+) tel:(\S+)")
    trl = log_values(log, r"^s:(\d+) trl:(\S+)")
    assert first_last(ev) == ((tel[0][0], float(tel[0][1])), (tel[-1][0], float(tel[-1][1])))
    # llm.c's trl at step N is the batch of update N+1: fwlab's train line iter N+1
    assert first_last(tr) == ((trl[0][0] + 1, float(trl[0][1])), (trl[-1][0] + 1, float(trl[-1][1])))
    assert len(ev) == len(tel) and len(tr) == len(trl)
    # the schedule recognised from the logged lr gives every logged lr at its printed digits
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    spec = cfg["lr_schedule"]
    assert spec["kind"] == "cosine" and spec["float32"] and spec["warmup_steps"] == 700
    logged = log_values(log, r"^s:(\d+) trl:\S+ lr:(\S+)")
    assert len(logged) == 19560
    lrs = lr_array(spec, 19560)
    assert all(f"{lrs[s]:.6f}" == text for s, text in logged)
    # and it is the schedule run.json documents (the published lr column, to 1e-6)
    ref = lr_array(spec_from_reference(run_json("llmc_124M_adamw_cosine_19560")["schedule"]), 19561)
    assert np.allclose(lr_array(spec, 19561), ref, rtol=1e-6, atol=1e-12)
    assert cfg["imported_from"]["format"] == "llmc"
    assert cfg["imported_from"]["sha256"] == __import__("hashlib").sha256(log.read_bytes()).hexdigest()
    assert cfg["tokens_per_iter"] == 524288 and cfg["n_params"] is None and cfg["dataset"] is None
    assert final["status"] == "completed" and final["final_val_loss"] == 3.2722
    assert final["iters"] == 19560 and final["tokens"] == 19560 * 524288
    lines = metrics(tmp_path / "run")
    train_lr = {m["iter"]: m["lr"] for m in lines if m["kind"] == "train"}
    assert train_lr[1] == lrs[0] and train_lr[19560] == lrs[19559]  # line k: the rate of update k


@NEED_REF
def test_llmc_without_lr_takes_the_schedule_flags(tmp_path):
    # llm.c-format log of modded-nanogpt's AdamW record: no lr printed; its schedule as train flags
    log = LOGS / "mng_124M_adamw_wsd_9536.log"
    I.import_log("llmc", log, tmp_path / "bare")
    cfg = json.loads((tmp_path / "bare" / "config.json").read_text())
    assert cfg["lr_schedule"] is None and cfg["tokens_per_iter"] is None  # unknown, not guessed
    assert "no learning rates" in cfg["lr_schedule_from"]
    flags = dict(schedule="wsd", lr=0.0018, warmup_iters=256, max_iters=9536,
                 cooldown_frac=2048 / 9536, min_lr_frac=0.0, tokens_per_iter=524288)
    final = I.import_log("llmc", log, tmp_path / "run", flags=flags)
    spec = json.loads((tmp_path / "run" / "config.json").read_text())["lr_schedule"]
    ref = spec_from_reference(run_json("mng_124M_adamw_wsd_9536")["schedule"])
    assert np.allclose(lr_array(spec, 9537), lr_array(ref, 9537), rtol=1e-9, atol=1e-15)
    assert final["status"] == "completed" and final["final_val_loss"] == 3.275959
    tr = points(tmp_path / "run", "train", "train_loss")
    assert first_last(tr)[0] == (1, 10.965596) and first_last(tr)[1] == (9536, 3.340180)


@NEED_REF
def test_modded_nanogpt_values(tmp_path):
    log = LOGS / "mng_124M_muon_wsd_5100_optcmp.log"
    final = I.import_log("modded-nanogpt", log, tmp_path / "run")
    ev = points(tmp_path / "run", "eval", "val_loss")
    tr = points(tmp_path / "run", "train", "train_loss")
    val = log_values(log, r"^step:(\d+)/\d+ val_loss:(\S+)")
    trn = log_values(log, r"^step:(\d+)/\d+ train_loss:(\S+)")
    assert first_last(ev) == ((0, float(val[0][1])), (5100, float(val[-1][1])))
    assert first_last(tr) == ((1, float(trn[0][1])), (5100, float(trn[-1][1])))
    assert final["status"] == "completed" and final["max_iters"] == 5100  # step:N/T states T
    assert final["wall_s"] == pytest.approx(722.818)  # train_time of the last line
    el = points(tmp_path / "run", "eval", "elapsed_s")
    assert el[0] == pytest.approx(0.479)


@NEED_REF
def test_build_nanogpt_values(tmp_path):
    log = LOGS / "build-nanogpt_log_short.txt"
    final = I.import_log("build-nanogpt", log, tmp_path / "run")
    ev = points(tmp_path / "run", "eval", "val_loss")
    tr = points(tmp_path / "run", "train", "train_loss")
    hs = points(tmp_path / "run", "extras", "hellaswag_acc_norm")
    val = log_values(log, r"^(\d+) val (\S+)")
    trn = log_values(log, r"^(\d+) train (\S+)")
    hel = log_values(log, r"^(\d+) hella (\S+)")
    assert first_last(ev) == ((val[0][0], float(val[0][1])), (val[-1][0], float(val[-1][1])))
    assert first_last(tr) == ((trn[0][0] + 1, float(trn[0][1])), (trn[-1][0] + 1, float(trn[-1][1])))
    assert first_last(hs)[0] == (hel[0][0], float(hel[0][1]))
    # the log states neither the planned length nor the schedule
    assert final["status"] == "incomplete" and "unknown" in final["message"]


@NEED_REF
def test_nano_gpt_variant_recognises_a_truncated_cosine(tmp_path):
    # the log stops at step 15499 of 19073; its 6-decimal lr still pins warmup, end and floor
    log = LOGS / "nanogpt_edu_124M_adamw_cosine10_19073_allenporter.log"
    final = I.import_log("build-nanogpt", log, tmp_path / "run", flags={"tokens_per_iter": 524288})
    ev = points(tmp_path / "run", "eval", "val_loss")
    val = log_values(log, r"^val: step: (\d+) \| loss: (\S+)")
    assert first_last(ev) == ((0, float(val[0][1])), (val[-1][0], float(val[-1][1])))
    spec = json.loads((tmp_path / "run" / "config.json").read_text())["lr_schedule"]
    ref = run_json("nanogpt_edu_124M_adamw_cosine10_19073_allenporter")["schedule"]
    assert (spec["kind"], spec["warmup_steps"], spec["total_steps"], spec["min_lr_frac"]) == \
        ("cosine", ref["warmup_steps"], ref["decay_end"], ref["min_lr_frac"])
    logged = log_values(log, r"^train: step: (\d+) .*\| lr: (\S+)")
    lrs = lr_array(spec, 15500)
    assert all(abs(lrs[s] - float(t)) <= 5e-7 * (1 + 1e-9) for s, t in logged)
    assert final["status"] == "incomplete" and final["max_iters"] == 19073


NANOGPT_STDOUT = """\
tokens per iteration will be: 8,192
found vocab_size = 65 (inside data/shakespeare_char/meta.pkl)
Initializing a new model from scratch
number of parameters: 10.65M
step 0: train loss 4.2874, val loss 4.2823
iter 0: loss 4.2654, time 29993.10ms, mfu -100.00%
iter 10: loss 3.1462, time 25.03ms, mfu 14.88%
step 250: train loss 1.9709, val loss 2.0683
saving checkpoint to out-shakespeare-char
iter 250: loss 2.0357, time 3532.02ms, mfu 13.42%
step 500: train loss 1.5381, val loss 1.7231
iter 500: loss 1.5890, time 3617.11ms, mfu 13.30%
"""


def test_nanogpt_stdout(tmp_path):
    src = tmp_path / "train.out"
    src.write_text(NANOGPT_STDOUT)
    final = I.import_log("nanogpt", src, tmp_path / "run",
                         flags=dict(schedule="cosine", lr=1e-3, warmup_iters=100, max_iters=5000,
                                    min_lr_frac=0.1, tokens_per_iter=8192))
    ev = points(tmp_path / "run", "eval", "val_loss")
    tr = points(tmp_path / "run", "train", "train_loss")
    assert first_last(ev) == ((0, 4.2823), (500, 1.7231))
    assert first_last(tr) == ((1, 4.2654), (501, 1.5890))
    assert points(tmp_path / "run", "eval", "train_split_loss")[250] == 1.9709
    assert points(tmp_path / "run", "eval", "tokens")[500] == 500 * 8192
    assert final["status"] == "incomplete" and final["message"] == "the log ends at step 501 of 5000"
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    # an exact fwlab schedule keeps fwlab's config.json fields (lr_at gives the same rates)
    assert (cfg["schedule"], cfg["lr"], cfg["warmup_iters"], cfg["cooldown_shape"]) == \
        ("cosine", 1e-3, 100, "linear")
    assert points(tmp_path / "run", "train", "lr")[1] == pytest.approx(1e-3 / 100)
    # the config.json's own spec is what spec_from_config reads back
    from fwlab.schedule import spec_from_config
    assert spec_from_config(cfg) == cfg["lr_schedule"]


def test_csv_format(tmp_path):
    src = tmp_path / "curve.csv"
    src.write_text("\ufeffstep,tokens,val_loss,lr,train_loss\n0,0,10.9,,\n100,409600,6.51,0.0006,6.6\n"
                   "200,819200,5.25,0.0006,5.3\n")
    I.import_log("csv", src, tmp_path / "run")
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["tokens_per_iter"] == 4096  # the file states it through its tokens column
    assert points(tmp_path / "run", "eval", "val_loss") == {0: 10.9, 100: 6.51, 200: 5.25}
    assert points(tmp_path / "run", "train", "train_loss") == {100: 6.6, 200: 5.3}
    assert cfg["lr_schedule"]["kind"] == "constant" and cfg["lr_schedule"]["peak_lr"] == 0.0006


# --- the reference layout ----------------------------------------------------------------------
def _curve(d):
    with open(Path(d) / "curve.csv", newline="") as f:
        return list(csv.DictReader(f))


@NEED_REF
@pytest.mark.parametrize("name", ["llmc_124M_adamw_cosine_19560", "schaipp124m_lr0.001_constant_50000",
                                  "mpl400m_wsd_20000_24000", "t3_124M_muon_cool70_3600"])
def test_reference_round_trips_every_value(tmp_path, name):
    d = REF / "runs" / name
    I.import_reference_run(d, tmp_path / "run", with_trunk=False)
    rows = _curve(d)
    ev = points(tmp_path / "run", "eval", "val_loss")
    tr = points(tmp_path / "run", "train", "train_loss")
    tok = {m["iter"]: m["tokens"] for m in metrics(tmp_path / "run")}
    spec = json.loads((tmp_path / "run" / "config.json").read_text())["lr_schedule"]
    lrs = lr_array(spec, max(int(r["step"]) for r in rows) + 1)
    for r in rows:
        s = int(r["step"])
        if r.get("val_loss"):
            assert ev[s] == float(r["val_loss"])
        if r.get("train_loss"):
            assert tr[s] == float(r["train_loss"])
        assert tok[s] == (int(r["tokens"]) if r["tokens"] else None)
        assert lrs[s] == pytest.approx(float(r["lr"]), rel=1e-6, abs=1e-300)
    n_val = sum(bool(r.get("val_loss")) for r in rows)
    n_tr = sum(bool(r.get("train_loss")) for r in rows)
    assert (len(ev), len(tr)) == (n_val, n_tr)  # nothing added
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    rj = run_json(name)
    assert cfg["n_params"] == rj["model"]["params"] and cfg["reference"]["name"] == name
    assert cfg["loss"] == rj["curve"]["loss_column"]


@NEED_REF
def test_reference_branch_alone_gets_its_trunk_points(tmp_path):
    d = REF / "runs" / "schaipp124m_lr0.001_wsd-linear-0.2_25000"
    I.import_reference_run(d, tmp_path / "run")
    ev = points(tmp_path / "run", "eval", "val_loss")
    trunk = {int(r["step"]): float(r["val_loss"]) for r in _curve(REF / "runs" /
                                                                     "schaipp124m_lr0.001_constant_50000")}
    own = {int(r["step"]): float(r["val_loss"]) for r in _curve(d)}
    assert ev == {s: v for s, v in trunk.items() if s < 20000} | own


@NEED_REF
def test_reference_group_gives_a_sweep_with_four_budgets(tmp_path):
    from fwlab.report import decision_table
    from fwlab.runs import load_runs

    state = I.import_reference_group(REF, "schaipp2025-124m-lr0.001", tmp_path / "sweep",
                                     progress=False)
    assert state["mode"] == "wsd" and state["budgets"] == [15000, 25000, 35000, 50000]
    assert len(state["runs"]) == 33
    lab = load_runs(tmp_path / "sweep")
    table = decision_table(lab.runs)
    assert list(table["max_iters"]) == [15000, 25000, 35000, 50000]
    assert list(table["run"]) == [f"wsd-linear-0.2_{b}" for b in (15000, 25000, 35000, 50000)]
    for b, v in zip((15000, 25000, 35000, 50000), table["final_val_loss"]):
        rows = _curve(REF / "runs" / f"schaipp124m_lr0.001_wsd-linear-0.2_{b}")
        assert v == float(rows[-1]["val_loss"])
    assert table["gain"].iloc[1] == pytest.approx(table["final_val_loss"].iloc[0] -
                                                  table["final_val_loss"].iloc[1])
    # a group of training-loss curves has no decision table to give
    with pytest.raises(FwlabError, match="training loss only"):
        I.import_reference_group(REF, "luo2025-mpl-25m", tmp_path / "luo", progress=False)
    assert not (tmp_path / "luo").exists()
    # a branch's curve is its trunk's before branch_iter, then its own
    ev = lab.evals[lab.evals["run"] == "wsd-linear-0.2_25000"]
    assert ev["iter"].min() == 0 and ev["iter"].max() == 24800
    assert not ev[ev["iter"] < 20000]["own"].any() and ev[ev["iter"] >= 20000]["own"].all()


# --- from a URL ----------------------------------------------------------------------------------
@pytest.fixture()
def http_dir(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))

    class Quiet(http.server.ThreadingHTTPServer):
        def handle_error(self, *a):
            pass
    handler.log_message = lambda *a: None
    srv = Quiet(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_url_source_and_its_errors(tmp_path, http_dir):
    root, base = http_dir
    (root / "main.log").write_text("s:0 tel:10.9\ns:0 trl:10.8 lr:0.000100 norm:1.0\n"
                                   "s:1 trl:9.5 lr:0.000100 norm:1.0\ns:2 tel:9.1\n")
    (root / "page.html").write_text("<!DOCTYPE html>\n<html><body>github blob view</body></html>\n")
    final = I.import_log("llmc", f"{base}/main.log", tmp_path / "run")
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["imported_from"]["source"] == f"{base}/main.log"
    assert final["final_val_loss"] == 9.1 and cfg["lr_schedule"]["kind"] == "constant"
    with pytest.raises(FwlabError, match=r"page\.html:1: an HTML page, not a log"):
        I.import_log("llmc", f"{base}/page.html", tmp_path / "html")
    with pytest.raises(FwlabError, match="HTTP 404"):
        I.import_log("llmc", f"{base}/missing.log", tmp_path / "404")
    with pytest.raises(FwlabError, match="cannot download"):
        I.import_log("llmc", "http://127.0.0.1:9/main.log", tmp_path / "down")  # discard port
    assert not any(p.name in ("html", "404", "down") for p in tmp_path.iterdir())


@NEED_REF
def test_reference_from_a_url(tmp_path, http_dir):
    root, base = http_dir
    name = "t3_124M_muon_cool70_3600"
    (root / name).mkdir()
    for f in ("run.json", "curve.csv"):
        (root / name / f).write_bytes((REF / "runs" / name / f).read_bytes())
    I.import_reference_run(f"{base}/{name}", tmp_path / "url")
    I.import_reference_run(REF / "runs" / name, tmp_path / "path")
    assert (tmp_path / "url" / "metrics.jsonl").read_text() == \
        (tmp_path / "path" / "metrics.jsonl").read_text()


# --- bad input: one line naming file, line and text; nothing written ---------------------------
def _bad(tmp_path, fmt, text, match, **kw):
    src = tmp_path / "bad.log"
    src.write_text(text)
    with pytest.raises(FwlabError, match=match) as e:
        I.import_log(fmt, src, tmp_path / "out", **kw)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temp left
    return str(e.value)


def test_bad_inputs(tmp_path):
    msg = _bad(tmp_path, "llmc", "hello\nworld\n", "no line of the llmc format")
    assert "bad.log" in msg
    _bad(tmp_path, "llmc", "s:0 tel:10.9\ns:5 trl:9.1\ns:3 trl:9.0\n",
         r"bad\.log:3: step 3 comes after step 5 .*'s:3 trl:9.0'")
    _bad(tmp_path, "modded-nanogpt", "step:0/10 val_loss:10.9 train_time:0ms\n"
         "step:1/10 train_loss:abc train_time:5ms\n", r"bad\.log:2: 'abc' is not a number")
    _bad(tmp_path, "build-nanogpt", "0 val 10.9\n1 val nan\n", r"bad\.log:2: 'nan' is not a finite")
    _bad(tmp_path, "csv", "a,b\n1,2\n", r"bad\.log:1: no line of the csv format")
    _bad(tmp_path, "csv", "step,val_loss\n0,10\n200,9\n100,8\n", r"bad\.log:4: step 100 comes after")
    _bad(tmp_path, "llmc", "<!DOCTYPE html>\n<html></html>\n", r"bad\.log:1: an HTML page")
    # a schedule that contradicts the logged lr: the first line it contradicts
    log = "".join(f"s:{i} trl:9.0 lr:{6e-4 * (i + 1) / 10:.6f} norm:1.0\n" for i in range(20))
    _bad(tmp_path, "llmc", log, r"bad\.log:1: the log's lr 6e-05 at step 0 contradicts",
         flags=dict(schedule="cosine", lr=6e-4, warmup_iters=5, max_iters=100))


@NEED_REF
def test_bad_real_logs(tmp_path):
    # twenty trials in one log: the steps start again at 0
    with pytest.raises(FwlabError, match=r"t3_muon_lr025_wd025_3375\.log:29: step 0 comes after "
                                         r"step 3375"):
        I.import_log("modded-nanogpt", LOGS / "t3_muon_lr025_wd025_3375.log", tmp_path / "a")
    # llm.c's lr is logged: flags saying otherwise are refused, naming the line
    with pytest.raises(FwlabError, match=r"llmc_124M_adamw_cosine_19560\.log:\d+: the log's lr"):
        I.import_log("llmc", LOGS / "llmc_124M_adamw_cosine_19560.log", tmp_path / "b",
                     flags=dict(schedule="cosine", lr=6e-4, warmup_iters=700, max_iters=19560,
                                min_lr_frac=0.1))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_existing_out_is_kept(tmp_path):
    src = tmp_path / "x.log"
    src.write_text("s:0 tel:10.9\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FwlabError, match="exists and is not empty"):
        I.import_log("llmc", src, tmp_path / "out")
    with pytest.raises(FwlabError, match="not an earlier import"):  # --overwrite keeps it too
        I.import_log("llmc", src, tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    (tmp_path / "out" / "keep.txt").unlink()
    I.import_log("llmc", src, tmp_path / "out")
    src.write_text("s:0 tel:10.5\n")
    I.import_log("llmc", src, tmp_path / "out", overwrite=True)  # an earlier import: replaced
    assert points(tmp_path / "out", "eval", "val_loss") == {0: 10.5}


def test_cli_import_prints_errors_as_one_line(tmp_path, capsys):
    src = tmp_path / "x.log"
    src.write_text("s:0 tel:ten\n")
    assert cli(["import", "llmc", str(src), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fwlab import: error: ") and err.count("\n") == 1 and "x.log:1" in err
    src.write_text("s:0 tel:10.5\ns:4 tel:9.5\n")
    assert cli(["import", "llmc", str(src), "--out", str(tmp_path / "run"), "--tokens-per-iter",
                "1024", "--max-iters", "4", "--params", "124e6", "--dataset", "FineWeb"]) == 0
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (cfg["tokens_per_iter"], cfg["max_iters"], cfg["n_params"], cfg["dataset"]) == \
        (1024, 4, 124_000_000, "FineWeb")
    assert json.loads((tmp_path / "run" / "final.json").read_text())["status"] == "completed"


# --- reference curves to overlay ---------------------------------------------------------------
@NEED_REF
def test_reference_curves_default_selection():
    curves = I.reference_curves(root=REF)
    assert [c["name"] for c in curves] == list(I.DEFAULT_REFERENCES)
    llmc, edu = curves
    assert llmc["kind"] == "val" and llmc["loss"][0] == 11.0092 and llmc["loss"][-1] == 3.2722
    assert np.array_equal(llmc["tokens"], llmc["steps"] * 524288)
    assert "124M" in llmc["label"] and "FineWeb" in llmc["label"] and "cosine" in llmc["label"]
    assert "Edu" in edu["dataset"] and edu["val_set"]
    assert I.default_reference_dir() in (REF.resolve(), None)
    mpl = I.reference_curves(["mpl25m_wsd_20000_24000"], root=REF)[0]
    assert mpl["kind"] == "train" and mpl["tokens"] is None and "training loss" in mpl["label"]
    assert mpl["steps"][0] < 20000  # a branch comes with its trunk's points before branch_step
    with pytest.raises(FwlabError, match="no published curve"):
        I.reference_curves(["no_such_run"], root=REF)


def test_default_reference_dir_refuses_a_wrong_folder(tmp_path):
    with pytest.raises(FwlabError, match="not a reference-curves folder"):
        I.default_reference_dir(tmp_path)


# --- a run still going, from a published curve cut at half its steps ---------------------------
@NEED_REF
def test_a_published_cosine_cut_at_half_is_a_run_still_going(tmp_path, capsys):
    """llm.c's 124M cosine curve (its lr logged in float32 with 10 digits) up to step 9,750 of
    19,560, imported with the schedule it states: the flags agree with every logged lr, the
    forecast knows the decay is unfinished (the run's plan, not its last evaluation, says where
    the decay ends), and plan asks for the unique tokens the csv does not state."""
    from fwlab import forecast as F
    rows = (REF / "runs" / "llmc_124M_adamw_cosine_19560" / "curve.csv").read_text().splitlines()
    cut = [rows[0]] + [r for r in rows[1:] if int(r.split(",")[0]) <= 9750]
    src = tmp_path / "half.csv"
    src.write_text("\n".join(cut) + "\n")
    sched = ["--tokens-per-iter", "524288", "--max-iters", "19560", "--lr", "6e-4",
             "--min-lr-frac", "0", "--warmup-iters", "700", "--schedule", "cosine"]
    assert cli(["import", "csv", str(src), "--out", str(tmp_path / "run")] + sched) == 0
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["max_iters"] == 19560
    pts = F.load_points(tmp_path / "run")
    assert pts["iter"].max() == 9750 and (pts["kind"] == "anneal").any()
    out = F.forecast_loss(pts, [19560 * 524288], None, sched=F.schedule_of(pts)[0])
    assert "unfinished-decay prior" in out["method"], out["method"]
    # the whole curve has its decay finished: the measured prior, not the unfinished one
    full = tmp_path / "full.csv"
    full.write_text("\n".join(rows) + "\n")
    assert cli(["import", "csv", str(full), "--out", str(tmp_path / "full")] + sched) == 0
    pf = F.load_points(tmp_path / "full")
    out = F.forecast_loss(pf, [19560 * 524288], None, sched=F.schedule_of(pf)[0])
    assert "unfinished-decay" not in out["method"], out["method"]
    capsys.readouterr()
    assert cli(["plan", "--from", str(tmp_path / "run"), "--budgets", "19560", "--tok-per-s",
                "1e5"]) == 2
    err = capsys.readouterr().err
    assert "--data-tokens: give the number of unique training tokens" in err, err
    assert cli(["plan", "--from", str(tmp_path / "run"), "--budgets", "19560", "--tok-per-s",
                "1e5", "--data-tokens", "10e9"]) == 0
    out = capsys.readouterr()
    assert "does not name a fwlab preset; hours and FLOPs are for the 40m preset" in out.err
    assert "0.51 epochs" in out.out and "unfinished-decay prior" in out.out, out.out
    # 19,560 is 2.006x the curve's reach, but it is the run's own planned end: no loud warning
    assert "FAR BEYOND" not in out.out and "is the planned end of" in out.out, out.out
    # llm.c's d12 stated with --params: exactly the 124m preset's count, so the plan takes it
    assert cli(["import", "csv", str(src), "--out", str(tmp_path / "d12"), "--params",
                "124475904"] + sched) == 0
    capsys.readouterr()
    assert cli(["plan", "--from", str(tmp_path / "d12"), "--budgets", "19560,30000",
                "--tok-per-s", "1e5", "--data-tokens", "10e9", "--json"]) == 0
    out = capsys.readouterr()
    assert "exactly the 124m preset's: hours and FLOPs are for 124m" in out.err, out.err
    p = json.loads(out.out)
    assert p["preset"] == "124m" and p["n_params"] == 124475904
    assert [r["own_end"] for r in p["rows"]] == ["d12", None]
    from fwlab import plan as P
    assert "FAR BEYOND THE CURVES: budgets 30,000" in P.format_plan(p)
    # check-claims on the same run: the setting is 124m too, and the hours are for that model
    from fwlab import claims as C
    (tmp_path / "c.yaml").write_text("data_tokens: 10e9\nclaims:\n  - hours: [1, 2]\n"
                                     "    per_iters: 10000\n    gpu: RTX 4070\n")
    df = C.check_claims(tmp_path / "c.yaml", tmp_path / "d12")
    assert df.attrs["setting"]["preset"] == "124m"
    assert df.loc[0, "value"] == pytest.approx(P.gpu_hours("RTX 4070", "124m", 10000, 524288)["hours"])
