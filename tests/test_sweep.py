"""fwlab.sweep: plans, and real sweeps executed through papermill on the shared FineWeb-Edu sample.

The sweeps are tiny (tiny preset, 512 tokens per iteration, budgets of 6-16 iterations) and shared
between tests by module-scoped fixtures; what costs time is starting one Jupyter kernel per run.
"""
import functools
import json
from pathlib import Path

import pytest
import torch

from fwlab import cli, sweep
from fwlab.checkpoint import ckpt_path, list_checkpoints, load_checkpoint
from fwlab.data import TrainLoader
from fwlab.errors import FwlabError
from fwlab.model import GPT, GPTConfig
from fwlab.utils import iter_jsonl

TINY = dict(preset="tiny", tokens_per_iter=512, micro_batch=4, eval_interval=4, eval_tokens=1024,
            device="cpu", dtype="float32", compile=False)
TINY_FLAGS = ["--preset", "tiny", "--tokens-per-iter", "512", "--micro-batch", "4",
              "--eval-interval", "4", "--eval-tokens", "1024", "--device", "cpu",
              "--dtype", "float32", "--no-compile"]


def train_points(run_dir: Path) -> list[dict]:
    return [r for r in iter_jsonl(run_dir / "metrics.jsonl") if "train_loss" in r]


def sweep_json(out: Path) -> dict:
    return json.loads((out / "sweep.json").read_text())


# --- plans (no training) --------------------------------------------------------------------------
def test_reference_plan_costs_26200_iterations_in_wsd_mode():
    specs = sweep.plan_sweep("wsd", [20000, 6000, 15000, 10000], cooldown_frac=0.2)
    by = {s["name"]: s for s in specs}
    assert [s["name"] for s in specs][0] == "b20000"  # the trunk runs first
    assert sweep.planned_total(specs) == 20000 + 1200 + 2000 + 3000 == 26200
    trunk = by["b20000"]
    assert trunk["role"] == "trunk" and trunk["settings"]["schedule"] == "wsd"
    assert trunk["settings"]["ckpt_at"] == "4800,8000,12000"
    for b, k in ((6000, 4800), (10000, 8000), (15000, 12000)):
        s = by[f"b{b}"]
        assert (s["parent"], s["branch_iter"], s["max_iters"], s["planned_iters"]) == \
            ("b20000", k, b, b - k)
    assert len({s["settings"]["warmup_iters"] for s in specs}) == 1  # one explicit warmup for all

    ind = sweep.plan_sweep("independent", [6000, 10000, 15000, 20000])
    assert sweep.planned_total(ind) == 51000
    assert all(s["parent"] is None and s["settings"]["schedule"] == "cosine" for s in ind)
    assert sweep.plan_sweep("independent", [10], schedule="wsd")[0]["settings"]["schedule"] == "wsd"


def test_epochs_become_budgets_and_bad_budgets_are_refused():
    # the reference scenario: 3.68e9 tokens, 524,288 tokens per iteration
    assert sweep.epochs_to_budgets([0.85, 1.42, 2.13, 2.85], 3_680_000_000, 524_288) == \
        [5966, 9967, 14951, 20004]
    with pytest.raises(FwlabError, match="duplicate budget"):
        sweep.epochs_to_budgets([1.0, 1.001], 10_000, 512)
    with pytest.raises(FwlabError, match="less than one iteration"):
        sweep.epochs_to_budgets([0.01], 10_000, 512)
    with pytest.raises(FwlabError, match="at least 1"):
        sweep.plan_sweep("independent", [0, 10])
    with pytest.raises(FwlabError, match="wsd schedule"):
        sweep.plan_sweep("wsd", [10, 20], schedule="cosine")
    with pytest.raises(FwlabError, match="inside the warmup"):
        sweep.plan_sweep("wsd", [100, 200], warmup_iters=90)
    with pytest.raises(FwlabError, match="mode"):
        sweep.plan_sweep("grid", [10])


def test_the_notebook_takes_a_runs_config_as_one_file():
    assert "config_file" in sweep.notebook_parameters(sweep.NOTEBOOK)


def test_progress_bar_follows_a_growing_metrics_file(tmp_path):
    # a run from iteration 3 that was interrupted at 4: the sweep counted that one as done already
    bar = sweep._Progress(total=10, done_iters=1, n_runs=2, enabled=True)
    m = tmp_path / "metrics.jsonl"
    m.write_text('{"iter": 4, "train_loss": 1}\n')
    bar.start_run(tmp_path, start=3, name="b9", max_iters=9)
    with open(m, "a") as f:
        f.write('{"iter": 5, "train_loss": 1}\n{"iter": 5, "val_loss": 1}\n{"iter": 6, "tr')
    bar._advance(*bar._args)
    assert bar.bar.n == 2  # iterations 4 and 5; the torn line is not read yet
    with open(m, "a") as f:
        f.write('ain_loss": 1}\n')
    bar.end_run(planned_left=3)
    assert bar.bar.n == 3 and bar.bar.total == 7 and bar.runs_done == 1
    bar.close()


# --- real sweeps ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sweeps_root(tmp_path_factory):
    return tmp_path_factory.mktemp("sweeps")


@pytest.fixture(scope="module")
def wsd_sweep(sweeps_root, tiny_data):
    out = sweeps_root / "wsd"
    state = sweep.run_sweep(out, tiny_data, "wsd", budgets=[8, 12, 16], config=TINY, progress=False)
    return out, state


@pytest.fixture(scope="module")
def independent_sweep(sweeps_root, tiny_data):
    out = sweeps_root / "independent"
    state = sweep.run_sweep(out, tiny_data, "independent", budgets=[6, 10], config=TINY,
                            progress=False)
    return out, state


def test_wsd_sweep_runs_trunk_and_branches_through_papermill(wsd_sweep):
    out, state = wsd_sweep
    assert state == sweep_json(out) and state["status"] == "completed"
    runs = {r["name"]: r for r in state["runs"]}
    assert set(runs) == {"b8", "b12", "b16"}
    assert runs["b16"]["role"] == "trunk" and runs["b16"]["parent"] is None
    assert (runs["b8"]["branch_iter"], runs["b12"]["branch_iter"]) == (6, 10)
    warmups = set()
    for name, r in runs.items():
        d = out / "runs" / name
        final = json.loads((d / "final.json").read_text())
        conf = json.loads((d / "config.json").read_text())
        assert r["status"] == final["status"] == "completed"
        assert r["final_val_loss"] == final["final_val_loss"]
        assert final["iters"] == conf["max_iters"] == r["max_iters"] == int(name[1:])
        assert conf["schedule"] == "wsd"
        warmups.add(conf["warmup_iters"])
        # the executed notebook is kept, with the parameters papermill injected
        nb = json.loads((d / "train.ipynb").read_text())
        assert nb["metadata"]["papermill"]["parameters"] == {
            "config_file": str(out.resolve() / "configs" / f"{name}.json")}  # the one parameter
        given = json.loads((out / "configs" / f"{name}.json").read_text())
        assert {k: conf[k] for k in ("lr", "max_iters", "init_from", "out")} == \
            {k: given[k] for k in ("lr", "max_iters", "init_from", "out")}
        assert conf["code"] == state["code"] and set(state["code"]) == {
            "fwlab_version", "git_commit", "git_dirty", "git_diff_sha256"}
        if r["parent"]:
            assert Path(conf["init_from"]) == (out / "runs" / "b16").resolve()
            assert conf["init_iter"] == r["branch_iter"]
    assert len(warmups) == 1
    # the trunk kept exactly the checkpoints its branches start from
    assert {6, 10} <= set(list_checkpoints(out / "runs" / "b16"))
    # iterations: the plan, sweep.json and what metrics.jsonl shows was computed all agree
    assert state["planned_iters"] == 16 + 2 + 2
    counted = {n: len(train_points(out / "runs" / n)) for n in runs}
    assert counted == {n: r["iters_computed"] for n, r in runs.items()}
    assert state["total_iters_computed"] == sum(counted.values()) == 20


def test_wsd_branches_start_from_the_trunk_checkpoint(wsd_sweep, tiny_data):
    out, state = wsd_sweep
    trunk = out / "runs" / "b16"
    trunk_pts = {p["iter"]: p for p in train_points(trunk)}
    for name, k in (("b8", 6), ("b12", 10)):
        branch = out / "runs" / name
        conf = json.loads((branch / "config.json").read_text())
        first = train_points(branch)[0]
        assert first["iter"] == k + 1
        # the trunk's weights at K, loaded from its checkpoint, on the batch the branch drew next,
        # give the branch's first loss: the branch started from exactly those weights and data
        ck = load_checkpoint(ckpt_path(trunk, k))
        model = GPT(GPTConfig(**ck["model_config"]))
        model.load_state_dict({n.removeprefix("_orig_mod."): t for n, t in ck["model"].items()})
        loader = TrainLoader(tiny_data, model.config.block_size, seed=conf["seed"])
        loader.load_state_dict(ck["loader"])
        with torch.no_grad():
            losses = [model(*loader.next_batch(conf["micro_batch"]))[1].item()
                      for _ in range(conf["grad_accum_steps"])]
        assert sum(losses) / len(losses) == pytest.approx(first["train_loss"], abs=1e-5)
        # and the same step in the trunk is identical (same weights, optimizer, batch, LR)
        for key in ("train_loss", "grad_norm", "lr"):
            assert first[key] == trunk_pts[k + 1][key]
        assert state["runs"][[r["name"] for r in state["runs"]].index(name)]["parent"] == "b16"


def test_independent_sweep_runs_one_cosine_run_per_budget(independent_sweep):
    out, state = independent_sweep
    assert state["status"] == "completed" and state["mode"] == "independent"
    assert state["total_iters_computed"] == state["planned_iters"] == 16
    for r in state["runs"]:
        d = out / "runs" / r["name"]
        conf = json.loads((d / "config.json").read_text())
        assert conf["schedule"] == "cosine" and not conf["init_from"]
        assert len(train_points(d)) == r["iters_computed"] == r["max_iters"]
        assert (d / "train.ipynb").is_file()


def test_rerunning_a_finished_sweep_does_no_training(wsd_sweep, tiny_data, monkeypatch):
    out, state = wsd_sweep
    files = sorted((out / "runs").glob("*/*.json*"))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}

    def no_papermill(*a, **k):
        raise AssertionError("a finished sweep executed a notebook")
    monkeypatch.setattr(sweep, "_execute", no_papermill)
    # settings that do not change the maths may differ in a later session (e.g. after an OOM)
    again = sweep.run_sweep(out, tiny_data, "wsd", budgets=[16, 8, 12],
                            config=TINY | {"micro_batch": 2}, progress=False)
    assert again["status"] == "completed"
    assert [r["status"] for r in again["runs"]] == [r["status"] for r in state["runs"]]
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == before


def test_another_plan_in_an_existing_sweep_dir_is_refused(wsd_sweep, tiny_data):
    out, _ = wsd_sweep
    before = (out / "sweep.json").read_bytes()
    with pytest.raises(FwlabError, match="different sweep.*budgets"):
        sweep.run_sweep(out, tiny_data, "wsd", budgets=[8, 12, 20], config=TINY, progress=False)
    with pytest.raises(FwlabError, match="different sweep.*config"):
        sweep.run_sweep(out, tiny_data, "wsd", budgets=[8, 12, 16], config=TINY | {"lr": 1e-3},
                        progress=False)
    assert (out / "sweep.json").read_bytes() == before


def test_an_interrupted_run_is_resumed(independent_sweep, tiny_data, monkeypatch):
    out, state = independent_sweep
    run = out / "runs" / "b10"
    final = json.loads((run / "final.json").read_text())
    metrics = (run / "metrics.jsonl").read_bytes()
    (run / "final.json").unlink()  # killed after its last checkpoint, before final.json
    calls = []
    real = sweep._execute
    monkeypatch.setattr(sweep, "_execute", lambda nb, o, params, cwd: (calls.append(params),
                                                                      real(nb, o, params, cwd)))
    again = sweep.run_sweep(out, tiny_data, "independent", budgets=[6, 10], config=TINY,
                            progress=False)
    assert [json.loads(open(p["config_file"]).read())["out"] for p in calls] == [str(run.resolve())]
    assert again["status"] == "completed"
    assert json.loads((run / "final.json").read_text())["final_val_loss"] == final["final_val_loss"]
    assert (run / "metrics.jsonl").read_bytes() == metrics  # resumed at the end: nothing redone


def test_a_failing_run_is_recorded_and_the_others_complete(sweeps_root, tiny_data, monkeypatch):
    out = sweeps_root / "failing"
    # an invalid setting for one run only: it fails inside the notebook, as a real error would
    monkeypatch.setattr(sweep, "run_sweep", functools.partial(
        sweep.run_sweep, run_overrides={"b4": {"preset": "no-such-preset"}}, progress=False))
    rc = cli.main(["sweep", "--data", str(tiny_data), "--out", str(out), "--budgets", "4,6",
                   "--mode", "independent", *TINY_FLAGS])
    assert rc == 1
    state = sweep_json(out)
    runs = {r["name"]: r for r in state["runs"]}
    assert state["status"] == "failed"
    assert runs["b4"]["status"] == "failed" and "no-such-preset" in runs["b4"]["error"]
    # a user's error (FwlabError) is its one line, in the kernel too; other errors keep a traceback
    assert runs["b4"]["error_detail"].startswith("preset='no-such-preset': unknown preset")
    assert "\n" not in runs["b4"]["error_detail"]
    nb = json.loads((out / "runs" / "b4" / "train.ipynb").read_text())
    assert any(o.get("output_type") == "error" for c in nb["cells"] for o in c.get("outputs", []))
    assert not (out / "runs" / "b4" / "final.json").exists()
    assert runs["b6"]["status"] == "completed" and runs["b6"]["iters_computed"] == 6
    assert state["total_iters_computed"] == 6


def test_branches_of_a_failed_trunk_are_skipped(sweeps_root, tiny_data):
    out = sweeps_root / "failed-trunk"
    state = sweep.run_sweep(out, tiny_data, "wsd", budgets=[6, 8], config=TINY, progress=False,
                            run_overrides={"b8": {"preset": "no-such-preset"}})
    runs = {r["name"]: r for r in state["runs"]}
    assert runs["b8"]["status"] == "failed"
    assert runs["b6"]["status"] == "skipped" and "b8" in runs["b6"]["reason"]
    assert not (out / "runs" / "b6").exists()
    assert state["status"] == "failed" and state["total_iters_computed"] == 0


def test_report_summary_equals_final_json(wsd_sweep):
    import pandas as pd

    from fwlab import report
    out, _ = wsd_sweep
    report.make_report(out)
    summary = pd.read_csv(out / "report" / "summary.csv").set_index("max_iters")
    assert sorted(summary.index) == [8, 12, 16]
    for b in (8, 12, 16):
        final = json.loads((out / "runs" / f"b{b}" / "final.json").read_text())
        for col in ("tokens", "epochs", "final_val_loss", "val_loss_stderr", "wall_s"):
            assert summary.loc[b, col] == pytest.approx(final[col], rel=1e-9)


def test_papermill_kernels_start_without_the_unencrypted_tcp_warning(tmp_path, capfd):
    """Every papermill run of fwlab's (sweep runs, the report) passes utils.kernel_config()."""
    import nbformat
    import papermill as pm
    from fwlab.utils import kernel_config
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "one.ipynb")
    # (the control that warns, a kernel started over plain TCP, is in tests/test_noise.py: the
    # venv's own kernelspec may already encrypt, so Config() here need not warn)
    pm.execute_notebook(str(tmp_path / "one.ipynb"), str(tmp_path / "out.ipynb"),
                        kernel_name="python3", progress_bar=False, config=kernel_config())
    assert "without encryption" not in capfd.readouterr().err
