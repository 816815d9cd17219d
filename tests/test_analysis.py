"""fwlab.runs and fwlab.report on fabricated sweep directories written exactly as CONTRACTS.md and fwlab/sweep.py
lay them out (sweep.json + runs/NAME/{config,final}.json + metrics.jsonl), so every expected number
is known in advance; and one real papermill execution of notebooks/03_analysis.ipynb."""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_training_notebook

from fwlab import report as R
from fwlab.runs import load_runs
from fwlab.errors import FwlabError

TPI = 1024               # tokens per iteration
TPE = 40_000             # training tokens per epoch
SEC_PER_ITER = 0.5
EVAL_EVERY = 20


def base_loss(it):
    return 3.0 + 4.0 / math.sqrt(it + 1)


def _write_run(d: Path, cfg: dict, train_pts, eval_pts, final: dict | None, extra_lines=()):
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(cfg))
    lines = []
    for it, loss in train_pts:
        lines.append(dict(iter=it, tokens=it * TPI, epoch=it * TPI / TPE, lr=6e-4, train_loss=loss,
                          tok_per_s=2048.0, mfu=None, elapsed_s=SEC_PER_ITER * (it - cfg.get(
                              "init_iter", 0) if cfg.get("init_iter") else it)))
    for it, loss in eval_pts:
        own = it - cfg["init_iter"] if cfg.get("init_iter") else it
        lines.append(dict(iter=it, tokens=it * TPI, epoch=it * TPI / TPE, val_loss=loss,
                          val_loss_stderr=0.01 + 1e-4 * it / 7, elapsed_s=SEC_PER_ITER * own + 0.1))
    lines.sort(key=lambda o: (o["iter"], "val_loss" in o))
    text = "".join(json.dumps(o) + "\n" for o in list(lines) + list(extra_lines))
    (d / "metrics.jsonl").write_text(text)
    if final is not None:
        (d / "final.json").write_text(json.dumps(final))


def _final(B, eval_pts, start=0):
    last_it, last_loss = eval_pts[-1]
    return dict(final_val_loss=last_loss, val_loss_stderr=0.01 + 1e-4 * last_it / 7, iters=B,
                tokens=B * TPI, epochs=B * TPI / TPE, wall_s=SEC_PER_ITER * (B - start) + 0.7,
                status="completed")


def _cfg(B, schedule, **kw):
    return dict(dict(max_iters=B, tokens_per_iter=TPI, preset="tiny", schedule=schedule,
                     cooldown_frac=0.2, warmup_iters=5, init_from="", init_iter=None, n_params=123456,
                     device="cpu"), **kw)


def make_sweep(root: Path, mode: str, budgets=(60, 100, 150), fail=None) -> Path:
    """A finished sweep of `mode` with known curves. wsd: the trunk is the largest budget's run
    (fwlab/sweep.py), branches start at round(0.8 * B) and log only their own iterations (b100's
    also logs an eval at its starting iteration). `fail`: a budget whose run failed (no final.json)."""
    root.mkdir(parents=True)
    budgets = sorted(budgets)
    entries = []
    if mode == "independent":
        for B in budgets:
            cosine = lambda it, B=B: base_loss(it) - 0.2 * (it / B) ** 2  # noqa: E731
            ev = [(it, cosine(it)) for it in range(0, B + 1, EVAL_EVERY)]
            if ev[-1][0] != B:
                ev.append((B, cosine(B)))
            tr = [(it, cosine(it) + 0.05) for it in range(1, B + 1)]
            failed = B == fail
            _write_run(root / "runs" / f"b{B}", _cfg(B, "cosine"), tr[: B // 2] if failed else tr,
                       ev[: len(ev) // 2] if failed else ev, None if failed else _final(B, ev))
            entries.append(dict(name=f"b{B}", budget=B, role="run", max_iters=B, parent=None,
                                branch_iter=None, planned_iters=B,
                                status="failed" if failed else "completed",
                                iters_computed=B // 2 if failed else B)
                           | (dict(error="RuntimeError: boom") if failed else {}))
    else:
        top = budgets[-1]
        wsd = lambda it, B, k: base_loss(it) - (0.3 * (it - k) / (B - k) if it > k else 0)  # noqa
        k_top = round(0.8 * top)
        ev = [(it, wsd(it, top, k_top)) for it in range(0, top + 1, EVAL_EVERY)]
        if ev[-1][0] != top:
            ev.append((top, wsd(top, top, k_top)))
        tr = [(it, wsd(it, top, k_top) + 0.05) for it in range(1, top + 1)]
        _write_run(root / "runs" / f"b{top}", _cfg(top, "wsd", ckpt_at="48,80"), tr, ev,
                   _final(top, ev))
        entries.append(dict(name=f"b{top}", budget=top, role="trunk", max_iters=top, parent=None,
                            branch_iter=None, planned_iters=top, status="completed",
                            iters_computed=top))
        for B in budgets[:-1]:
            k = round(0.8 * B)
            first = k if B == 100 else k + 1  # b100 logs its starting point, b60 does not
            ev = [(it, wsd(it, B, k)) for it in range(first, B + 1) if it % EVAL_EVERY == 0 or
                  it in (B, first if B == 100 else -1)]
            tr = [(it, wsd(it, B, k) + 0.05) for it in range(k + 1, B + 1)]
            cfg = _cfg(B, "wsd", init_from=str((root / "runs" / f"b{top}").resolve()), init_iter=k)
            _write_run(root / "runs" / f"b{B}", cfg, tr, ev, _final(B, ev, start=k))
            entries.append(dict(name=f"b{B}", budget=B, role="branch", max_iters=B,
                                parent=f"b{top}", branch_iter=k, planned_iters=B - k,
                                status="completed", iters_computed=B - k))
    sweep = dict(mode=mode, budgets=budgets, runs=entries, preset="tiny", tokens_per_iter=TPI,
                 data="/nowhere/data", train_tokens=TPE, status="completed",
                 total_iters_computed=sum(e["iters_computed"] for e in entries),
                 planned_iters=sum(e["planned_iters"] for e in entries))
    (root / "sweep.json").write_text(json.dumps(sweep))
    return root


def _final_json(sweep: Path, name: str) -> dict:
    return json.loads((sweep / "runs" / name / "final.json").read_text())


def test_independent_sweep_loads_final_numbers_and_curves(tmp_path):
    sw = make_sweep(tmp_path / "ind", "independent")
    lab = load_runs(sw)
    r = lab.runs.set_index("run")
    assert list(r.index) == ["b60", "b100", "b150"] and r["is_budget"].all()
    for name, B in (("b60", 60), ("b100", 100), ("b150", 150)):
        f = _final_json(sw, name)
        assert r.loc[name, "max_iters"] == B and r.loc[name, "status"] == "completed"
        for col in ("final_val_loss", "val_loss_stderr", "tokens", "epochs", "wall_s"):
            assert r.loc[name, col] == f[col], col
        assert r.loc[name, "hours"] == pytest.approx(f["wall_s"] / 3600)
        assert r.loc[name, "iters_computed"] == B
        assert r.loc[name, "tokens_per_epoch"] == pytest.approx(TPE)
        ev = lab.evals[lab.evals["run"] == name]
        assert list(ev["iter"]) == sorted(set(list(range(0, B + 1, EVAL_EVERY)) + [B]))
        assert ev["own"].all() and ev["val_loss"].iloc[-1] == f["final_val_loss"]
        assert len(lab.train[lab.train["run"] == name]) == B
    assert lab.sweeps.loc[0, "total_iters_computed"] == 310


def test_wsd_branches_are_stitched_to_the_trunk(tmp_path):
    sw = make_sweep(tmp_path / "wsd", "wsd")
    lab = load_runs(sw)
    r = lab.runs.set_index("run")
    assert r["is_budget"].all()  # the trunk is the largest budget's run
    assert r.loc["b60", "parent_run"] == "b150" and r.loc["b60", "branch_iter"] == 48
    trunk_ev = lab.evals[lab.evals["run"] == "b150"].set_index("iter")

    ev = lab.evals[lab.evals["run"] == "b60"]
    assert list(ev["iter"]) == [0, 20, 40, 60] and list(ev["own"]) == [False, False, False, True]
    # inherited points are the trunk's; own points are on the trunk clock (trunk at 48 = 24.0 s)
    assert list(ev["val_loss"].iloc[:3]) == list(trunk_ev.loc[[0, 20, 40], "val_loss"])
    assert ev["elapsed_s"].iloc[-1] == pytest.approx(24.0 + SEC_PER_ITER * 12 + 0.1)
    tr = lab.train[lab.train["run"] == "b60"]
    assert list(tr["iter"]) == list(range(1, 61)) and tr["own"].sum() == 12
    assert tr["elapsed_s"].is_monotonic_increasing

    f60 = _final_json(sw, "b60")
    assert r.loc["b60", "wall_s"] == f60["wall_s"]                       # what the branch cost
    assert r.loc["b60", "hours"] == pytest.approx((24.0 + f60["wall_s"]) / 3600)  # budget alone
    assert r.loc["b60", "iters_computed"] == 12
    # b100 logs an eval at its starting iteration 80: its own point wins over the trunk's there,
    # and the trunk's time at 80 is the later of its train (40.0 s) and eval (40.1 s) lines
    ev = lab.evals[lab.evals["run"] == "b100"].set_index("iter")
    assert ev.loc[80, "own"] and not ev.loc[60, "own"]
    f100 = _final_json(sw, "b100")
    assert r.loc["b100", "hours"] == pytest.approx((40.1 + f100["wall_s"]) / 3600)
    assert r.loc["b150", "hours"] == pytest.approx(_final_json(sw, "b150")["wall_s"] / 3600)
    assert lab.sweeps.loc[0, "total_iters_computed"] == 150 + 12 + 20


def test_decision_table_gains_and_summary_csv_equal_final_json(tmp_path):
    sw = make_sweep(tmp_path / "wsd", "wsd")
    table = R.decision_table(load_runs(sw).runs)
    assert list(table["run"]) == ["b60", "b100", "b150"]
    loss, hours = table["final_val_loss"].to_numpy(), table["hours"].to_numpy()
    assert math.isnan(table["gain"].iloc[0]) and math.isnan(table["gain_per_hour"].iloc[0])
    assert np.allclose(table["gain"].iloc[1:], loss[:-1] - loss[1:])
    assert (table["gain"].iloc[1:] > 0).all()  # the curves were built so that longer is better
    assert np.allclose(table["gain_per_hour"].iloc[1:], (loss[:-1] - loss[1:]) / np.diff(hours))
    se = table["val_loss_stderr"].to_numpy()
    assert table["gain_stderr"].iloc[2] == pytest.approx(math.hypot(se[1], se[2]))

    path = R.write_summary(table, tmp_path / "summary.csv")
    rows = list(csv.DictReader(path.read_text().splitlines()))
    assert set(R.SUMMARY_COLUMNS) <= set(rows[0])
    for row in rows:
        f = _final_json(sw, row["run"])
        for col in ("tokens", "epochs", "final_val_loss", "val_loss_stderr", "wall_s"):
            assert float(row[col]) == f[col], (row["run"], col)  # exact: full precision written
        assert int(row["max_iters"]) == f["iters"]
    assert [int(r["iters_computed"]) for r in rows] == [12, 20, 150]


def test_failed_run_is_shown_not_hidden(tmp_path):
    sw = make_sweep(tmp_path / "ind", "independent", fail=100)
    lab = load_runs(sw)
    table = R.decision_table(lab.runs).set_index("run")
    assert table.loc["b100", "status"] == "failed" and math.isnan(table.loc["b100", "final_val_loss"])
    assert math.isnan(table.loc["b150", "gain"])  # no gain over a budget that has no result
    assert table.loc["b100", "iters_computed"] == 50
    assert "b100" in R.describe(lab) and "boom" in R.describe(lab)
    shown = R.display_table(R.decision_table(lab.runs))
    assert shown["val loss ± stderr"].iloc[1] == "– ± –"


def test_runs_without_a_directory_are_listed_with_their_sweep_status(tmp_path):
    """fwlab/sweep.py skips the branches of a failed trunk: no directory, status "skipped"."""
    sw = make_sweep(tmp_path / "wsd", "wsd")
    s = json.loads((sw / "sweep.json").read_text())
    s["runs"][1].update(status="skipped", iters_computed=0, reason="trunk b150 did not finish")
    (sw / "sweep.json").write_text(json.dumps(s))
    import shutil
    shutil.rmtree(sw / "runs" / s["runs"][1]["name"])
    lab = load_runs(sw)
    table = R.decision_table(lab.runs).set_index("run")
    assert table.loc["b60", "status"] == "skipped" and math.isnan(table.loc["b60", "final_val_loss"])
    assert "did not finish" in R.describe(lab)
    assert len(lab.evals[lab.evals["run"] == "b60"]) == 0


def test_run_dirs_metrics_robustness_and_parent_by_path(tmp_path):
    """Loose run directories: a branch finds its trunk through config.json's init_from. Metrics
    lines: a resume's re-logged iteration (the later one wins), unknown kinds, a torn last line."""
    sw = make_sweep(tmp_path / "wsd", "wsd")
    trunk, branch = sw / "runs" / "b150", sw / "runs" / "b60"
    with open(branch / "metrics.jsonl", "a") as f:
        f.write(json.dumps(dict(iter=60, tokens=60 * TPI, epoch=1.5, val_loss=9.0,
                                val_loss_stderr=0.5, elapsed_s=7.0)) + "\n")
        f.write(json.dumps(dict(iter=60, hellaswag_acc_norm=0.26)) + "\n")
        f.write('{"iter": 61, "train_lo')
    (branch / "eval_hellaswag.json").write_text(json.dumps(dict(acc=0.25, acc_norm=0.27, n=100)))
    lab = load_runs(branch, trunk)
    r = lab.runs.set_index("run")
    assert r.loc["b60", "parent_run"] == "b150" and r.loc["b60", "sweep"] == ""
    ev = lab.evals[lab.evals["run"] == "b60"]
    assert list(ev["iter"]) == [0, 20, 40, 60] and ev["val_loss"].iloc[-1] == 9.0
    assert r.loc["b60", "iters_computed"] == 12  # final iters - init_iter, without sweep.json
    assert r.loc["b60", "hellaswag_acc_norm"] == 0.27
    assert list(R.hellaswag_table(lab.runs)["run"]) == ["b60"]


def test_constant_trunk_without_budget_keys_is_not_a_budget(tmp_path):
    """Another sweep writer's layout: a constant-LR trunk that is no budget result."""
    sw = make_sweep(tmp_path / "wsd", "wsd", budgets=(60, 100, 150))
    s = json.loads((sw / "sweep.json").read_text())
    for e in s["runs"]:
        e.pop("budget"), e.pop("role")
    s["budgets"] = [60, 100]
    (sw / "sweep.json").write_text(json.dumps(s))
    cfg = json.loads((sw / "runs" / "b150" / "config.json").read_text())
    (sw / "runs" / "b150" / "config.json").write_text(json.dumps(cfg | dict(schedule="constant")))
    lab = load_runs(sw)
    assert list(R.decision_table(lab.runs)["run"]) == ["b60", "b100"]
    assert len(lab.evals[lab.evals["run"] == "b60"]) == 4  # still stitched to the trunk


def test_plot_curves_marks_epochs_and_branch_points(tmp_path):
    lab = load_runs(make_sweep(tmp_path / "wsd", "wsd"))
    fig = R.plot_curves(lab, log_x=True)
    ax_tok, ax_hours = fig.axes
    assert ax_tok.get_xscale() == "log" and ax_tok.get_xlabel() == "training tokens"
    vlines = [ln for ln in ax_tok.get_lines() if ln.get_linestyle() == ":"]
    assert sorted(ln.get_xdata()[0] for ln in vlines) == [TPE, 2 * TPE, 3 * TPE]  # 153.6k tokens
    hollow = [ln for ln in ax_tok.get_lines() if ln.get_markerfacecolor() == "none"
              and len(ln.get_xdata())]
    assert sorted(float(ln.get_xdata()[0]) for ln in hollow) == [48 * TPI, 80 * TPI]
    b60 = next(ln for ln in ax_tok.get_lines() if ln.get_label().startswith("b60"))
    assert list(b60.get_xdata()) == [48 * TPI, 60 * TPI]  # from the branch point to its own eval
    assert "hours" in ax_hours.get_xlabel()
    assert R.plot_curves(lab, log_x=False, xs=("tokens",)).axes[0].get_xscale() == "linear"
    png = R.save_figure(fig, tmp_path / "c.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "c.png").read_bytes() == png


def test_make_report_writes_the_four_files(tmp_path, repo_root):
    sw = make_sweep(tmp_path / "wsd", "wsd")
    out = R.make_report(sw, claims=repo_root / "examples" / "claims_40m_fineweb_edu.yaml")
    assert out == sw.resolve() / "report"
    assert sorted(p.name for p in out.iterdir()) == sorted(R.REPORT_FILES)
    nb = json.loads((out / "analysis.ipynb").read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    html = (out / "report.html").read_text()
    assert "load_runs(" not in html  # code cells hidden
    assert "data:image/png;base64" in html and "Decision table" in html and "b100" in html
    assert "val loss 2.42-2.55 after 20,000 iterations" in html  # the claims' verdicts
    assert R.claims_verdicts(None, load_runs(sw)).startswith("No claims file given")
    rows = list(csv.DictReader((out / "summary.csv").read_text().splitlines()))
    assert [r["run"] for r in rows] == ["b60", "b100", "b150"]
    for row in rows:
        f = _final_json(sw, row["run"])
        assert float(row["final_val_loss"]) == f["final_val_loss"]
        assert float(row["wall_s"]) == f["wall_s"]
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_missing_or_empty_sweep_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(FwlabError, match="nope: no such directory"):
        R.make_report(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(FwlabError, match=r"plain.*no sweep\.json"):
        R.make_report(tmp_path / "plain")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "sweep.json").write_text(json.dumps(dict(mode="wsd", budgets=[], runs=[])))
    with pytest.raises(FwlabError, match=r"empty.*no runs"):
        R.make_report(tmp_path / "empty")
    assert not (tmp_path / "empty" / "report").exists()
    with pytest.raises(FwlabError, match="not a run directory"):
        load_runs(tmp_path / "plain")
    from fwlab.cli import main
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no runs" in capsys.readouterr().err


def test_a_failing_notebook_leaves_no_report_under_final_names(tmp_path, monkeypatch):
    import nbformat
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3"}})
    params = nbformat.v4.new_code_cell("sweep_dir = ''\nclaims = None\nlog_x = True\nreport_dir = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("raise ValueError('boom in the notebook')")]
    nbformat.write(nb, tmp_path / "failing.ipynb")
    monkeypatch.setattr(R, "NOTEBOOK", tmp_path / "failing.ipynb")
    sw = make_sweep(tmp_path / "ind", "independent")
    with pytest.raises(FwlabError, match=r"ValueError: boom in the notebook.*analysis\.failed\.ipynb"):
        R.make_report(sw)
    assert sorted(p.name for p in (sw / "report").iterdir()) == ["analysis.failed.ipynb"]


def test_bad_claims_file_is_refused_before_any_kernel(tmp_path):
    sw = make_sweep(tmp_path / "ind", "independent")
    bad = tmp_path / "claims.yaml"
    bad.write_text("name: x\nclaims: []\n")
    with pytest.raises(FwlabError, match="claims.yaml"):
        R.make_report(sw, claims=bad)
    with pytest.raises(FwlabError, match="missing.yaml"):
        R.make_report(sw, claims=tmp_path / "missing.yaml")


def test_relative_paths_are_from_the_repository_root(tmp_path, monkeypatch, repo_root):
    from fwlab.utils import resolve_path
    monkeypatch.chdir(repo_root / "notebooks")  # as JupyterLab runs a notebook
    assert resolve_path("results/demo/data") == repo_root / "results" / "demo" / "data"
    assert resolve_path("/elsewhere/x") == Path("/elsewhere/x")
    monkeypatch.chdir(tmp_path)  # outside any repository: from the current directory
    assert resolve_path("runs/b6") == tmp_path.resolve() / "runs" / "b6"


def test_a_missing_data_directory_names_the_path_tried_and_the_right_fix(tmp_path, monkeypatch,
                                                                          repo_root):
    from fwlab.config import notebook_config
    from fwlab.data import load_manifest
    monkeypatch.chdir(repo_root / "notebooks")
    cfg = notebook_config({"data_dir": "results/no-such-data", "run_dir": "results/r"})
    with pytest.raises(FwlabError) as e:
        load_manifest(cfg.data)
    assert str(e.value).startswith(f"{repo_root / 'results' / 'no-such-data'}: no prepared data")
    assert "create it with: fwlab prepare" in str(e.value)
    sw = make_sweep(tmp_path / "ind", "independent")  # a folder of something else: no such advice
    with pytest.raises(FwlabError, match="not a prepared data directory") as e:
        load_manifest(sw)
    assert "create it with" not in str(e.value) and str(sw) in str(e.value)


def test_two_sweeps_together_keep_their_runs_apart(tmp_path):
    lab = load_runs(make_sweep(tmp_path / "wsd", "wsd"),
                             make_sweep(tmp_path / "ind", "independent"))
    assert sorted(lab.runs["run"]) == sorted(f"{s}/b{b}" for s in ("ind", "wsd")
                                             for b in (60, 100, 150))
    assert len(lab.evals[lab.evals["run"] == "wsd/b60"]) == 4  # stitched to wsd/b150, not ind's
    table = R.decision_table(lab.runs)
    assert list(table["sweep"]) == ["ind"] * 3 + ["wsd"] * 3
    assert table.groupby("sweep")["gain"].apply(lambda g: g.isna().tolist()).tolist() == \
        [[True, False, False]] * 2
    assert "sweep" in R.display_table(table).columns
    assert len(R.plot_curves(lab).axes[0].get_legend().get_texts()) == 7


# --- fwlab.runs: the one reader -----------------------------------------------------------------
def test_the_lab_carries_every_file_whole(tmp_path):
    sw = make_sweep(tmp_path / "wsd", "wsd")
    (sw / "runs" / "b60" / "eval_hellaswag.json").write_text(json.dumps(dict(acc=0.3, n=10)))
    lab = load_runs(sw)
    for name in ("b60", "b100", "b150"):
        d = sw / "runs" / name
        assert lab.config(name) == json.loads((d / "config.json").read_text())
        assert lab.final(name) == json.loads((d / "final.json").read_text())
    assert lab.benchmarks["b60"] == {"hellaswag": dict(acc=0.3, n=10)}
    assert lab.sweep_files["wsd"] == json.loads((sw / "sweep.json").read_text())
    assert lab.sources == [sw.resolve()]


@pytest.mark.parametrize("doc, key", [({"runs": 5}, "'runs'"), ({"runs": [5]}, r"runs\[0\]"),
                                      ({"runs": [{"status": "completed"}]}, r"runs\[0\]"),
                                      ({"runs": [], "budgets": "60,100"}, "'budgets'"),
                                      ([1, 2], "JSON object")])
def test_bad_sweep_json_is_one_line_naming_file_and_key(tmp_path, doc, key):
    sw = make_sweep(tmp_path / "ind", "independent")
    (sw / "sweep.json").write_text(json.dumps(doc))
    with pytest.raises(FwlabError, match=rf"sweep\.json: .*{key}") as e:
        load_runs(sw)
    assert "\n" not in str(e.value)


def test_plot_run_draws_one_runs_curves_and_lr(tmp_path):
    sw = make_sweep(tmp_path / "wsd", "wsd")
    lab = load_runs(sw / "runs" / "b100")  # a branch alone: only its own points
    fig = R.plot_run(lab)
    ax, ax_lr = fig.axes
    own = lab.evals[lab.evals["own"]]
    bars = ax.containers[0]  # the val-loss errorbar
    assert list(bars.lines[0].get_xdata()) == list(own["tokens"])
    assert list(bars.lines[0].get_ydata()) == list(own["val_loss"])
    assert list(ax.lines[0].get_xdata()) == list(lab.train["tokens"])
    assert list(ax_lr.lines[0].get_ydata()) == list(lab.train["lr"])
    assert "b100: completed" in ax.get_title()
    assert R.save_figure(fig, tmp_path / "run.png")[:4] == b"\x89PNG"


def test_report_of_runs_trained_separately(tmp_path, capsys):
    """`fwlab report RUN RUN --out DIR`: two runs from no sweep, plotted and tabled together."""
    from fwlab.cli import main
    sw = make_sweep(tmp_path / "ind", "independent")
    runs = [str(sw / "runs" / "b60"), str(sw / "runs" / "b150")]
    assert main(["report", *runs]) == 2
    assert "--out DIR" in capsys.readouterr().err
    out = tmp_path / "together"
    assert main(["report", *runs, "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "summary.csv").read_text().splitlines()))
    assert [r["run"] for r in rows] == ["b60", "b150"]
    assert float(rows[1]["final_val_loss"]) == _final_json(sw, "b150")["final_val_loss"]
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG" and (out / "report.html").is_file()


def test_fwlab_report_opens_each_file_of_the_sweep_once(tmp_path, repo_root):
    """Every open() of a file under the sweep (but its report/), in the `fwlab report` process and
    in the notebook's kernel, logged by an audit hook both load through sitecustomize."""
    import os
    import subprocess
    import sys
    sw = make_sweep(tmp_path / "wsd", "wsd")
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, sys\n"
        "_ROOT, _LOG = os.environ['OPENS_ROOT'], os.environ['OPENS_LOG']\n"
        "def _hook(event, args):\n"
        "    if event != 'open' or not isinstance(args[0], (str, bytes, os.PathLike)):\n"
        "        return\n"
        "    p, mode = os.fsdecode(args[0]), str(args[1] or 'r')\n"
        "    if p.startswith(_ROOT) and not p.startswith(os.path.join(_ROOT, 'report')) \\\n"
        "            and not set(mode) & set('wax+'):\n"
        "        with open(_LOG, 'a') as f:\n"
        "            f.write(os.path.relpath(p, _ROOT) + '\\n')\n"
        "sys.addaudithook(_hook)\n")
    log = tmp_path / "opens.log"
    env = dict(os.environ, OPENS_ROOT=str(sw.resolve()), OPENS_LOG=str(log),
               PYTHONPATH=os.pathsep.join([str(hook), str(repo_root)]
                                          + [os.environ.get("PYTHONPATH", "")]))
    claims = repo_root / "examples" / "claims_40m_fineweb_edu.yaml"
    r = subprocess.run([sys.executable, "-m", "fwlab", "report", str(sw), "--claims", str(claims)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    opened = log.read_text().split()
    files = sorted(str(p.relative_to(sw)) for p in sw.rglob("*")
                   if p.is_file() and "report" not in p.relative_to(sw).parts)
    assert len(files) == 10  # sweep.json + 3 runs x (config.json, metrics.jsonl, final.json)
    assert sorted(opened) == files  # each once


def test_check_claims_uses_the_lab_it_is_given(tmp_path, monkeypatch, repo_root):
    from fwlab import claims
    lab = load_runs(make_sweep(tmp_path / "wsd", "wsd"))
    monkeypatch.setattr(claims, "load_runs", lambda *a: pytest.fail("the sweep was loaded again"))
    df = claims.check_claims(repo_root / "examples" / "claims_40m_fineweb_edu.yaml", lab=lab)
    assert len(df) and set(df["verdict"]) <= {"too optimistic", "too pessimistic", "consistent",
                                              "unchecked", "likely optimistic (prior only)"}


# --- the decision table's answer, significance and units ------------------------------------------
def test_gains_within_one_stderr_are_not_significant_and_stop_the_recommendation(tmp_path):
    sw = make_sweep(tmp_path / "ind", "independent", budgets=(60, 100, 150, 400))
    # b400 gains less than one stderr over b150: not significant, so b150 is the answer
    f150 = _final_json(sw, "b150")
    f400 = dict(_final_json(sw, "b400"), final_val_loss=f150["final_val_loss"] - 0.005)
    (sw / "runs" / "b400" / "final.json").write_text(json.dumps(f400))
    t = R.decision_table(load_runs(sw))
    assert list(t["significant"]) == [None, True, True, False]
    assert list(t["recommended"]) == [False, False, True, False]
    assert t.loc[3, "gain_per_1k_iters"] == pytest.approx(0.005 / 250 * 1000)
    show = R.display_table(t)
    assert show.loc[2, ""] == "◀ recommended" and show.loc[3, ""] == ""
    assert show.loc[3, "gain vs smaller (nats)"].endswith("(n.s.)")
    assert "(n.s.)" not in show.loc[2, "gain vs smaller (nats)"]
    assert "gain / extra hour (nats/h)" in show.columns
    assert "gain / 1k extra iters (nats)" not in show.columns  # hours are known here
    text = R.answer(t)
    assert text.startswith("**train 150 iterations**: final validation loss ")
    assert "within one standard error: not shown to pay" in text
    html = R.style_table(t).to_html()
    assert "font-weight: bold" in html and "◀ recommended" in html
    csv_text = R.write_summary(t, tmp_path / "s.csv").read_text()
    assert "significant" in csv_text.splitlines()[0] and "recommended" in csv_text.splitlines()[0]


def test_answer_when_every_step_pays_and_when_hours_are_unknown(tmp_path):
    t = R.decision_table(load_runs(make_sweep(tmp_path / "wsd", "wsd")))
    assert list(t["recommended"]) == [False, False, True]
    assert "train 150 iterations" in R.answer(t) and "a longer one may still pay" in R.answer(t)
    t2 = t.assign(hours=np.nan, extra_hours=np.nan, gain_per_hour=np.nan, val_loss_stderr=np.nan,
                  gain_stderr=np.nan, significant=None)
    assert "hours unknown, so no per-hour threshold applies" in R.answer(t2)
    assert "gain / 1k extra iters (nats)" in R.display_table(t2).columns


def test_backtest_table_has_no_index_and_the_whole_method():
    bt = pd.DataFrame([dict(run="b1", method="x" * 300)])
    html = R.display_backtest(bt).to_html()
    assert "x" * 300 in html and "white-space: normal" in html
    assert 'class="row_heading' not in html  # the index is hidden


# --- curves.png -----------------------------------------------------------------------------------
def test_curves_title_ticks_iteration_zero_and_epochs_on_hours(tmp_path):
    lab = load_runs(make_sweep(tmp_path / "ind", "independent"))
    assert (lab.evals["tokens"] == 0).any()  # every run evaluated at iteration 0
    fig = R.plot_curves(lab, log_x=True, baseline=None)
    ax_tok, ax_hours = fig.axes
    assert fig.get_suptitle().startswith("Validation loss of every budget")
    for ax in (ax_tok, ax_hours):
        assert type(ax.xaxis.get_minor_formatter()).__name__ == "NullFormatter"
        for ln in ax.get_lines():
            xs = np.asarray(ln.get_xdata(), dtype=float)
            assert not len(xs) or xs.min() > 0 or ln.get_linestyle() == ":"
    assert [t.get_text() for t in ax_tok.get_xticklabels() if t.get_text()]  # plain labels
    # epoch lines on the hours panel too: where the longest run reached each epoch's tokens
    vl = sorted(ln.get_xdata()[0] for ln in ax_hours.get_lines() if ln.get_linestyle() == ":")
    assert len(vl) == 3 and np.all(np.diff(vl) > 0)
    ev = lab.evals[lab.evals["run"] == "b150"]
    assert vl[0] == pytest.approx(float(np.interp(TPE, ev["tokens"], ev["hours"])), rel=0.05)
    # the smoothed training curves stay inside the axes over the range shown
    lo, hi = ax_tok.get_ylim()
    tr = lab.train[lab.train["tokens"] >= ax_tok.get_xlim()[0]]
    assert tr.groupby("run")["train_loss"].min().min() >= lo


def test_unigram_baseline_from_the_prepared_data(tmp_path, tiny_data):
    sw = make_sweep(tmp_path / "wsd", "wsd")
    for cfg in sw.glob("runs/*/config.json"):
        cfg.write_text(json.dumps(dict(json.loads(cfg.read_text()), data=str(tiny_data))))
    lab = load_runs(sw)
    uni = R.unigram_loss(lab)
    assert uni["data"] == str(tiny_data) and uni["val_tokens"] > 5000
    from fwlab.data import open_split
    tr = np.concatenate(open_split(tiny_data, "train"))
    va = np.concatenate(open_split(tiny_data, "val"))
    c = np.bincount(tr, minlength=50257) + 0.5
    assert uni["loss"] == pytest.approx(float(-np.log(c[va] / c.sum()).mean()), rel=1e-9)
    assert 6.5 < uni["loss"] < 9.5
    fig = R.plot_curves(lab, baseline={"loss": 4.0})  # near the curves: drawn
    assert any(l.get_label().startswith("unigram baseline 4.00") for l in fig.axes[0].get_lines())
    assert R.unigram_loss(load_runs(make_sweep(tmp_path / "x", "wsd"))) is None  # /nowhere/data


REFS = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "reference-curves").resolve()
needs_refs = pytest.mark.skipif(not (REFS / "runs").is_dir(), reason=f"no reference curves at {REFS}")


@needs_refs
def test_reference_overlay_in_a_third_panel(tmp_path):
    lab = load_runs(make_sweep(tmp_path / "wsd", "wsd"))
    refs, note = R.resolve_references("auto")
    assert [r["name"] for r in refs] == ["llmc_124M_adamw_cosine_19560",
                                         "nanogpt_edu_124M_adamw_cosine10_19073_allenporter"]
    assert "default selection" in note
    assert R.resolve_references(str(REFS))[0][0]["name"] == refs[0]["name"]
    one, _ = R.resolve_references(["mng_124M_muon_wsd_6200"])
    assert len(one) == 1
    assert R.resolve_references(None) == ([], "no published curves asked for")
    fig = R.plot_curves(lab, reference=refs)
    assert len(fig.axes) == 3
    ax = fig.axes[2]
    grey = [l for l in ax.get_lines() if l.get_label().startswith("124M")]
    assert len(grey) == 2 and all(l.get_linewidth() < 1 for l in grey)
    assert "FineWeb-Edu" in grey[1].get_label() and "val: its own" in grey[1].get_label()
    assert "(allenporter/nano-gpt)" in grey[1].get_label()
    assert min(ax.get_xlim()) > 0 and ax.get_xscale() == "log"
    # a training-loss curve is labelled as such
    luo = R.resolve_references(["mpl25m_constant_72000"])[0]
    assert luo[0]["kind"] == "train" and "[training loss]" in R._ref_label(luo[0])
    fig2, what = R.reference_figure(lab)
    assert fig2 is not None and "default selection" in what
    with pytest.raises(FwlabError, match="no_such_run"):
        R.resolve_references(["no_such_run"])


@needs_refs
def test_report_of_an_imported_124m_sweep_with_an_overlay(tmp_path):
    from fwlab.importers import import_reference_group
    sw = tmp_path / "s"
    import_reference_group(REFS, "schaipp2025-124m-lr0.001", sw, budgets_only=True, progress=False)
    with pytest.raises(FwlabError, match="no_such_run"):  # checked before any kernel starts
        R.make_report(sw, reference=["no_such_run"])
    out = R.make_report(sw, reference=str(REFS))
    rows = list(csv.DictReader((out / "summary.csv").read_text().splitlines()))
    assert [int(r["max_iters"]) for r in rows] == [15000, 25000, 35000, 50000]
    html = (out / "report.html").read_text()
    assert "train 50,000 iterations" in html
    assert "published curves: llmc_124M_adamw_cosine_19560" in html
    assert "hours unknown" in html


@needs_refs
def test_the_training_notebook_shows_its_run_among_published_curves(tiny_data, tmp_path):
    out = run_training_notebook(tiny_data, tmp_path, max_iters=4, eval_interval=2)
    last = [c for c in out["cells"] if c["cell_type"] == "code"][-1]
    pngs = [o for o in last["outputs"] if "image/png" in o.get("data", {})]
    assert len(pngs) == 2  # its own curves, then the same run among the published ones
    text = "".join("".join(o.get("text", "")) for o in last["outputs"])
    assert "published curves: the default selection" in text
