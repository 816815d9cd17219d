"""The trainer on the real FineWeb-Edu sample: gradient accumulation, exact resume after SIGKILL,
branching, the NaN guard, early stopping, DDP under torchrun, the papermill notebook, bad input.

Everything runs the tiny preset at 512-1024 tokens per iteration in exact fp32 eager mode, so runs
that must agree can be compared number for number.
"""
import ast
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import run_training_notebook

import fwlab.train as T
from fwlab.checkpoint import list_checkpoints, load_checkpoint, load_model
from fwlab.config import TrainConfig, config_from_params
from fwlab.errors import FwlabError
from fwlab.schedule import lr_array, lr_at, spec_from_config
from fwlab.utils import iter_jsonl

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "02_train.ipynb"


def make_cfg(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), preset="tiny", max_iters=12, tokens_per_iter=512,
                eval_interval=4, eval_tokens=1024, ckpt_interval=4, keep_ckpts=2, dtype="float32",
                compile=False, device="cpu", progress=False, seed=1337)
    return TrainConfig(**(base | kw))


def cli_args(cfg: TrainConfig) -> list[str]:
    args = []
    for k, v in cfg.to_dict().items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            args.append(flag if v else "--no-" + flag[2:])
        elif v is not None and v != "":
            args += [flag, str(v)]
    return args


def metrics(run) -> list[dict]:
    return list(iter_jsonl(Path(run) / "metrics.jsonl"))


def untimed(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in o.items() if k not in T.TIMING_FIELDS} for o in lines]


def train_losses(run) -> dict[int, float]:
    return {o["iter"]: o["train_loss"] for o in metrics(run) if o["kind"] == "train"}


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


@pytest.fixture(scope="module")
def base_run(tiny_data, tmp_path_factory):
    """A finished 12-iteration constant-LR run that keeps its iteration-6 checkpoint for branching."""
    cfg = make_cfg(tiny_data, tmp_path_factory.mktemp("runs") / "base", schedule="constant",
                   warmup_iters=2, ckpt_at="6", keep_ckpts=1, eval_interval=3)
    final = T.train(cfg)
    return cfg, final


# --- the run-directory contract -------------------------------------------------------------------
def test_run_directory_contract(base_run):
    cfg, final = base_run
    run = Path(cfg.out)
    lines = metrics(run)
    tr = [o for o in lines if o["kind"] == "train"]
    ev = [o for o in lines if o["kind"] == "eval"]
    assert [o["iter"] for o in tr] == list(range(1, 13))
    assert [o["iter"] for o in ev] == [0, 3, 6, 9, 12]  # and the loss before any step
    assert ev[0]["tokens"] == 0 and ev[0]["epoch"] == 0 and ev[0] == lines[0]
    assert abs(ev[0]["val_loss"] - math.log(50304)) < 0.1  # untrained: ~uniform over the vocabulary
    for o in tr:
        assert {"iter", "tokens", "epoch", "lr", "train_loss", "tok_per_s", "elapsed_s", "mfu"} <= set(o)
        assert o["tokens"] == 512 * o["iter"] and o["mfu"] is None  # no known peak for a CPU
        assert o["lr"] == lr_at(o["iter"] - 1, cfg)
        assert o["epoch"] == pytest.approx(o["iter"] * 4 / T.TrainLoader(cfg.data, 128).windows_per_epoch)
    for o in ev:
        assert o["val_loss"] > 0 and 0 < o["val_loss_stderr"] < 0.5
    assert tr[-1]["train_loss"] < tr[0]["train_loss"]
    # final.json
    assert final["status"] == "completed" and final["iters"] == 12 and final["tokens"] == 12 * 512
    assert final["final_val_loss"] == ev[-1]["val_loss"]
    assert final["val_loss_stderr"] == ev[-1]["val_loss_stderr"]
    assert final["epochs"] == tr[-1]["epoch"] and final["wall_s"] > 0
    assert json.loads((run / "final.json").read_text()) == final
    # config.json: every setting, resolved
    conf = json.loads((run / "config.json").read_text())
    assert set(TrainConfig().to_dict()) <= set(conf)
    assert (conf["device"], conf["dtype"], conf["compile"], conf["micro_batch"]) == ("cpu", "float32", False, 4)
    assert conf["warmup_iters"] == 2 and conf["grad_accum_steps"] == 1 and conf["world_size"] == 1
    assert conf["eval_interval"] == 3 and conf["requested"]["eval_interval"] == 3
    # the schedule as a spec that reproduces every logged learning rate
    assert conf["lr_schedule"] == spec_from_config(cfg)
    assert list(lr_array(conf["lr_schedule"], 12)) == pytest.approx([o["lr"] for o in tr], abs=0)
    assert conf["n_params"] == 3_327_744 and conf["n_params_non_embedding"] == 100_096
    assert conf["flops_per_token"] > 6 * 100_096 and conf["fwlab_version"]
    assert conf["parent"] is None and conf["model"]["n_layer"] == 2
    assert conf["data_manifest"]["train_tokens"] > 50_000 and conf["data_manifest"]["train_windows"] > 0
    # checkpoints: the last one regular (keep_ckpts=1) plus the one asked for
    assert sorted(list_checkpoints(run)) == [6, 12]
    model, meta = load_model(run, 12)
    assert meta["iter"] == 12 and model.num_params() == 3_327_744
    assert meta["path"] == str(list_checkpoints(run)[12])  # the file the weights came from


def test_the_point_at_zero_tokens_is_left_off_log_x_plots_and_the_forecast(base_run):
    from fwlab import forecast
    from fwlab.report import plot_curves
    from fwlab.runs import load_runs
    cfg, _ = base_run
    lab = load_runs(cfg.out)
    assert 0 in set(lab.evals["iter"])  # the run logged its iteration-0 evaluation
    v0 = float(lab.evals.loc[lab.evals["iter"] == 0, "val_loss"].iloc[0])
    fig = plot_curves(lab, log_x=True)  # tokens and hours (where iteration 0 is the eval's time)
    for ax in fig.axes:
        xs = [x for line in ax.get_lines() for x in line.get_xdata()]
        ys = [y for line in ax.get_lines() for y in line.get_ydata()]
        assert xs and min(xs) > 0 and v0 not in ys
    pts = forecast.load_points(lab=lab)
    assert len(pts) and pts["tokens"].min() > 0 and 0 not in set(pts["iter"])


def test_the_manifest_and_the_device_peak_are_looked_up_once_per_run(tiny_data, tmp_path,
                                                                      monkeypatch):
    import fwlab.data
    reads, read_json = [], fwlab.data.read_json
    monkeypatch.setattr(fwlab.data, "read_json", lambda path: reads.append(path) or read_json(path))
    peaks, peak_flops = [], T.hardware.peak_flops
    monkeypatch.setattr(T.hardware, "peak_flops", lambda dev: peaks.append(dev) or peak_flops(dev))
    T.train(make_cfg(tiny_data, tmp_path / "once", max_iters=3, eval_interval=3, ckpt_interval=3))
    assert [p.name for p in reads] == ["manifest.json"] and len(peaks) == 1


def test_finished_run_is_left_alone_and_other_maths_refused(base_run):
    cfg, final = base_run
    before = (Path(cfg.out) / "metrics.jsonl").read_bytes()
    assert T.train(cfg) == final
    assert (Path(cfg.out) / "metrics.jsonl").read_bytes() == before
    # a setting that does not change the maths may differ
    assert T.train(TrainConfig(**(cfg.to_dict() | {"eval_interval": 5, "micro_batch": 2}))) == final
    for change, word in (({"lr": 1e-3}, "lr"), ({"max_iters": 20}, "max_iters"),
                         ({"n_layer": 3}, "model"), ({"seed": 1}, "seed")):
        with pytest.raises(FwlabError, match=word):
            T.train(TrainConfig(**(cfg.to_dict() | change)))


def test_corrupt_checkpoint_is_refused(base_run, tmp_path):
    cfg, _ = base_run
    run = tmp_path / "copy"
    shutil.copytree(cfg.out, run)
    (run / "final.json").unlink()
    newest = run / "ckpt" / "ckpt_0000012.pt"
    newest.write_bytes(newest.read_bytes()[:5000])  # truncated
    with pytest.raises(FwlabError, match="ckpt_0000012.pt"):
        T.train(TrainConfig(**(cfg.to_dict() | {"out": str(run)})))
    newest.write_bytes(b"not a checkpoint at all")
    with pytest.raises(FwlabError, match="ckpt_0000012.pt"):
        T.train(TrainConfig(**(cfg.to_dict() | {"out": str(run)})))


def test_default_eval_interval_scales_with_the_run():
    every = {n: TrainConfig(max_iters=n).eval_every() for n in (1, 12, 100, 240, 6000, 20000)}
    assert every == {1: 1, 12: 1, 100: 4, 240: 10, 6000: 250, 20000: 250}
    assert TrainConfig(max_iters=20000, eval_interval=7).eval_every() == 7
    with pytest.raises(FwlabError, match="eval_interval=0"):
        make_cfg("d", "r", eval_interval=0).validate()


def test_a_short_headless_run_gets_a_curve_loss_lines_and_one_capped_eval_warning(tiny_data,
                                                                                  tmp_path, capsys):
    run = tmp_path / "short"
    run.mkdir()  # left by a session killed before its first checkpoint: iteration 0 is redone
    (run / "metrics.jsonl").write_text('{"iter": 0, "kind": "eval", "tokens": 0, "val_loss": 99.0}\n')
    # the val split holds ~10k tokens (81 windows of 128); ask for 4x that
    c = make_cfg(tiny_data, run, max_iters=4, eval_interval=None, eval_tokens=40_960,
                 ckpt_interval=100, log_interval=2)
    final = T.train(c)
    ev = [o for o in metrics(run) if o["kind"] == "eval"]
    assert [o["iter"] for o in ev] == [0, 1, 2, 3, 4]  # max_iters/24 -> every iteration
    assert ev[0]["val_loss"] < 11 and final["final_val_loss"] == ev[-1]["val_loss"]
    assert json.loads((run / "config.json").read_text())["eval_interval"] == 1
    out, err = capsys.readouterr()
    lines = [ln for ln in out.splitlines() if ln.startswith("iter ") and ": loss" in ln]
    assert [ln.split(":")[0] for ln in lines] == ["iter 2/4", "iter 4/4"]
    assert all(" ms/iter, " in ln and " tok/s, MFU n/a" in ln for ln in lines)  # no CPU peak
    warnings = [ln for ln in err.splitlines() if "warning" in ln]
    assert len(warnings) == 1, err
    assert "eval_tokens=40,960 asks for 320 validation windows" in warnings[0]
    assert "holds 81 (10,368 tokens)" in warnings[0] and "--eval-tokens 10368" in warnings[0]


def test_the_sweep_bar_shows_the_current_runs_loss(tmp_path):
    from fwlab import sweep
    from fwlab.runs import MetricsTail
    m = tmp_path / "metrics.jsonl"
    m.write_text('{"iter": 0, "kind": "eval", "val_loss": 10.8}\n'
                 '{"iter": 1, "kind": "train", "train_loss": 9.25}\n')
    tail = MetricsTail(m)
    assert tail.poll() == 1 and (tail.loss, tail.val_loss) == (9.25, 10.8)
    with open(m, "a") as f:
        f.write('{"iter": 2, "kind": "train", "train_loss": 8.5e-1}\n{"iter": 2, "kind": "eval", '
                '"val_loss": 0.875}\n{"iter": 3, "kind": "train", "train_lo')  # a torn line
    assert tail.poll() == 2 and (tail.loss, tail.val_loss) == (0.85, 0.875)
    bar = sweep._Progress(total=10, done_iters=0, n_runs=2, enabled=True)
    bar.start_run(tmp_path, start=0, name="b10", max_iters=10)
    bar._advance(*bar._args)
    assert bar.bar.postfix == "runs 0/2 | b10 iter 2/10 | loss 0.8500 | val 0.8750"
    bar.end_run()
    bar.close()


# --- maths: accumulation, branching, DDP ----------------------------------------------------------
def test_grad_accumulation_equals_big_batch(tiny_data, tmp_path):
    runs = {}
    for micro in (4, 1):  # 1 x 4 sequences vs 4 accumulated micro-batches of 1
        c = make_cfg(tiny_data, tmp_path / f"m{micro}", micro_batch=micro, max_iters=3, eval_interval=3)
        T.train(c)
        runs[micro] = c.out
    assert json.loads((Path(runs[1]) / "config.json").read_text())["grad_accum_steps"] == 4
    a, b = train_losses(runs[4]), train_losses(runs[1])
    assert list(a) == [1, 2, 3]
    for i in a:
        assert a[i] == pytest.approx(b[i], abs=1e-5)
    wa, wb = load_model(runs[4])[0].state_dict(), load_model(runs[1])[0].state_dict()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=2e-5, rtol=1e-4)


def test_branch_reproduces_parent(base_run, tmp_path):
    parent, _ = base_run
    # 1) same schedule as the parent: the branch must retrace the parent's iterations 7..12 exactly
    same = make_cfg(parent.data, tmp_path / "same", schedule="constant", warmup_iters=2,
                    eval_interval=3, init_from=parent.out, init_iter=6)
    final = T.train(same)
    mine, theirs = metrics(same.out), metrics(parent.out)
    assert mine[0]["iter"] == 7
    assert untimed(mine) == untimed([o for o in theirs if o["iter"] > 6])
    assert final["final_val_loss"] == json.loads((Path(parent.out) / "final.json").read_text())["final_val_loss"]
    wa, wb = load_model(same.out, 12)[0].state_dict(), load_model(parent.out, 12)[0].state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    conf = json.loads((Path(same.out) / "config.json").read_text())
    assert conf["parent"] == {"run": str(Path(parent.out).resolve()), "init_iter": 6}
    assert final["iters_computed"] == 6
    # 2) a WSD cooldown branch from K=6: same first step as the trunk (same weights, batch and LR),
    #    then its own decaying schedule
    wsd = make_cfg(parent.data, tmp_path / "wsd", schedule="wsd", cooldown_frac=0.5, warmup_iters=2,
                   eval_interval=3, init_from=parent.out, init_iter=6)
    T.train(wsd)
    w = [o for o in metrics(wsd.out) if o["kind"] == "train"]
    p = {o["iter"]: o for o in theirs if o["kind"] == "train"}
    assert w[0]["iter"] == 7 and w[0]["train_loss"] == p[7]["train_loss"] and w[0]["lr"] == p[7]["lr"]
    assert w[-1]["lr"] < p[12]["lr"]


def test_torchrun_two_ranks_match_single_process(tiny_data, tmp_path):
    single = make_cfg(tiny_data, tmp_path / "single", tokens_per_iter=1024, max_iters=4, eval_interval=4)
    ddp = make_cfg(tiny_data, tmp_path / "ddp", tokens_per_iter=1024, max_iters=4, eval_interval=4)
    e = env() | {"OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "fwlab.train", *cli_args(ddp)], env=e, capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    T.train(single)
    conf = json.loads((Path(ddp.out) / "config.json").read_text())
    assert conf["world_size"] == 2 and conf["micro_batch"] * 2 * 128 * conf["grad_accum_steps"] == 1024
    a, b = metrics(single.out), metrics(ddp.out)
    assert [(o["kind"], o["iter"]) for o in a] == [(o["kind"], o["iter"]) for o in b]  # rank 0 only wrote
    for x, y in zip(a, b):
        for key in ("train_loss", "val_loss", "val_loss_stderr", "epoch", "lr"):
            if key in x:
                assert x[key] == pytest.approx(y[key], abs=1e-4), (key, x["iter"])


# --- resume, divergence, early stopping -----------------------------------------------------------
def test_sigkill_then_resume_gives_identical_metrics(tiny_data, tmp_path):
    c = make_cfg(tiny_data, tmp_path / "killed", max_iters=16, ckpt_interval=4, eval_interval=5,
                 keep_ckpts=1, schedule="cosine")
    ref = make_cfg(tiny_data, tmp_path / "ref", max_iters=16, ckpt_interval=4, eval_interval=5,
                   keep_ckpts=1, schedule="cosine")
    cmd = [sys.executable, "-m", "fwlab.train"]
    p = subprocess.Popen(cmd + cli_args(c), env=env(), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    log = Path(c.out) / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None:
        if log.is_file() and any(o.get("iter", 0) >= 9 for o in iter_jsonl(log)):
            break
        time.sleep(0.05)
    assert p.poll() is None, "the run ended before it could be killed"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert not (Path(c.out) / "final.json").exists()
    assert max(o["iter"] for o in iter_jsonl(log)) < 16
    assert max(list_checkpoints(c.out)) >= 8
    # resume (the same command) and an uninterrupted run in a fresh process
    for cfg in (c, ref):
        r = subprocess.run(cmd + cli_args(cfg), env=env(), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
    killed, clean = metrics(c.out), metrics(ref.out)
    assert [o["iter"] for o in killed if o["kind"] == "train"] == list(range(1, 17))
    assert untimed(killed) == untimed(clean)
    fk, fr = (json.loads((Path(x) / "final.json").read_text()) for x in (c.out, ref.out))
    for key in ("final_val_loss", "val_loss_stderr", "iters", "tokens", "epochs", "status"):
        assert fk[key] == fr[key]
    wa, wb = load_model(c.out)[0].state_dict(), load_model(ref.out)[0].state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    # a real divergence: after 5 sane steps the learning rate jumps to 1e6
    monkeypatch.setattr(T, "lr_at", lambda it, cfg: 6e-4 if it < 5 else 1e6)
    c = make_cfg(tiny_data, tmp_path / "nan", max_iters=30, ckpt_interval=2, eval_interval=100, keep_ckpts=100)
    final = T.train(c)
    assert final["status"] == "diverged" and final["final_val_loss"] is None
    # the step of iteration 6 (lr 1e6) wrecks the weights; iteration 7's loss is NaN
    assert final["iters"] == 6 and "non-finite loss (nan) at iteration 7" in final["message"]
    lines = metrics(c.out)
    assert max(o["iter"] for o in lines) == final["iters"]
    assert all(o.get("train_loss", 0) == o.get("train_loss", 0) for o in lines)  # no NaN logged
    ckpts = list_checkpoints(c.out)
    assert max(ckpts) <= final["iters"]
    ck = load_checkpoint(ckpts[max(ckpts)])
    assert all(torch.isfinite(v).all() for v in ck["model"].values())
    # a diverged run is finished: running it again changes nothing
    monkeypatch.undo()
    assert T.train(c) == final


def test_early_stopping(tiny_data, tmp_path):
    c = make_cfg(tiny_data, tmp_path / "early", max_iters=40, eval_interval=2, ckpt_interval=100,
                 early_stop_patience=2, early_stop_delta=100.0)  # no eval can improve by 100 nats
    final = T.train(c)
    # evals at 2 (best), 4, 6; the one at iteration 0, before training, does not count
    assert final["status"] == "early_stopped" and final["iters"] == 6
    assert "early stop at iteration 6" in final["message"]
    ev = [o for o in metrics(c.out) if o["kind"] == "eval"]
    assert [o["iter"] for o in ev] == [0, 2, 4, 6] and final["final_val_loss"] == ev[-1]["val_loss"]
    assert final["best_val_loss"] == ev[1]["val_loss"]
    assert max(list_checkpoints(c.out)) == 6
    # killed after the last checkpoint but before final.json: resuming stops again, trains nothing
    before = metrics(c.out)
    (Path(c.out) / "final.json").unlink()
    again = T.train(c)
    assert again["status"] == "early_stopped" and again["iters"] == 6
    assert again["final_val_loss"] == final["final_val_loss"]
    assert metrics(c.out) == before


# --- bad input --------------------------------------------------------------------------------------
def test_bad_config_values_raise_fwlab_error(tiny_data, tmp_path):
    bad = [
        ({"micro_batch": 3}, "micro_batch=3"),
        ({"tokens_per_iter": 500}, "tokens_per_iter"),
        ({"lr": -1.0}, "lr"),
        ({"schedule": "linear"}, "schedule"),
        ({"data": str(tmp_path / "nowhere")}, "nowhere"),
        ({"init_from": str(tmp_path / "no-parent"), "init_iter": 2}, "no-parent"),
    ]
    for change, word in bad:
        with pytest.raises(FwlabError, match=word):
            T.train(TrainConfig(**(make_cfg(tiny_data, tmp_path / "bad").to_dict() | change)))
    assert not list_checkpoints(tmp_path / "bad")


def test_notebook_parameters_are_validated(tiny_data):
    ok = config_from_params({"data_dir": str(tiny_data), "run_dir": "r", "max_iters": 200.0,
                            "preset": "tiny", "tokens_per_iter": "1024", "ckpt_at": [40, 80],
                            "extra": {"min_lr_frac": 0}})
    assert (ok.max_iters, ok.tokens_per_iter, ok.ckpt_at, ok.min_lr_frac, ok.data) == \
        (200, 1024, "40,80", 0.0, str(tiny_data))
    for params, word in (({"max_iter": 5}, "unknown parameter 'max_iter'"),
                         ({"max_iters": "lots"}, "max_iters"), ({"compile": "yes"}, "compile"),
                         ({"max_iters": 2.5}, "max_iters"), ({"extra": {"lrr": 1}}, "lrr"),
                         ({"extra": [1]}, "extra"), ({"schedule": "wsd", "cooldown_frac": 2.0}, "cooldown_frac")):
        with pytest.raises(FwlabError, match=word):
            config_from_params({"data_dir": str(tiny_data), "run_dir": "r"} | params)


# --- the notebook -------------------------------------------------------------------------------------
def test_notebook_is_stored_clean_with_literal_parameters():
    nb = json.loads(NOTEBOOK.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    params = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
    assert len(params) == 1
    tree = ast.parse("".join(params[0]["source"]))
    values = {}
    for node in tree.body:
        assert isinstance(node, ast.Assign), ast.dump(node)
        values[node.targets[0].id] = ast.literal_eval(node.value)  # literals only
    defaults = TrainConfig().to_dict()
    for name, v in values.items():
        if name not in ("data_dir", "run_dir", "extra", "config_file"):
            assert v == defaults[name], name  # the notebook's defaults are TrainConfig's
    assert values["extra"] == {} and values["config_file"] == ""
    assert {"max_iters", "preset", "data_dir", "run_dir", "schedule", "tokens_per_iter", "lr",
            "warmup_iters", "cooldown_frac", "micro_batch", "eval_interval", "eval_tokens",
            "ckpt_interval", "ckpt_at", "init_from", "init_iter", "device", "dtype", "compile", "seed",
            "extra", "config_file"} <= set(values)


def test_papermill_runs_the_training_notebook(tiny_data, tmp_path):
    run = tmp_path / "nbrun"
    run_training_notebook(tiny_data, tmp_path, max_iters=6, eval_interval=3)
    final = json.loads((run / "final.json").read_text())
    assert final["status"] == "completed" and final["iters"] == 6
    assert [o["iter"] for o in metrics(run) if o["kind"] == "eval"] == [0, 3, 6]
    out = json.loads((tmp_path / "out.ipynb").read_text())
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in out["cells"] for o in c.get("outputs", []))  # the curves were drawn


def test_a_mistyped_notebook_parameter_ends_with_one_line(tiny_data, tmp_path):
    """`papermill 02_train.ipynb out.ipynb -p max_iter 40`: the kernel's error is the one line."""
    import papermill as pm
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(NOTEBOOK), str(tmp_path / "out.ipynb"), kernel_name="python3",
                            cwd=str(tmp_path), progress_bar=False,
                            parameters=dict(max_iter=40, data_dir=str(tiny_data), run_dir="r"))
    line = "unknown parameter 'max_iter'; did you mean 'max_iters'?"
    assert e.value.traceback == [line]  # no traceback around it
    assert str(e.value).strip().splitlines()[-1] == line
    assert not (tmp_path / "r").exists()


def test_notebook_config_reads_a_config_file_and_resolves_paths(tmp_path, monkeypatch, repo_root):
    from fwlab.config import notebook_config
    from fwlab.utils import atomic_write_json
    cfg = TrainConfig(data="/d", out="/r", max_iters=7, lr=1e-3, keep_ckpts=5, preset="tiny")
    atomic_write_json(tmp_path / "b7.json", cfg.to_dict())
    assert notebook_config({"config_file": str(tmp_path / "b7.json"), "max_iters": 6000}) == cfg
    monkeypatch.chdir(repo_root / "notebooks")  # JupyterLab's working directory
    got = notebook_config({"data_dir": "results/demo/data", "run_dir": "results/r", "preset": "tiny",
                           "tokens_per_iter": 512, "In": [], "_x": 1, "final": {}})
    assert (got.data, got.out) == (str(repo_root / "results" / "demo" / "data"),
                                   str(repo_root / "results" / "r"))
    with pytest.raises(FwlabError, match=r"^unknown parameter 'data_dr'; did you mean 'data_dir'\?$"):
        notebook_config({"data_dr": "x"})
