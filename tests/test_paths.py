"""The path rule in notebooks and commands, and what a mistyped notebook parameter prints.

One rule (fwlab.utils.resolve_path): a relative path is from the repository root, or from the
current directory when that is not inside a repository; an error names the absolute path tried.
JupyterLab runs a notebook in notebooks/, so that is where these run it. Each test builds a small
repository of its own in tmp_path (a `.git` folder and a copy of the notebook) and never writes into
the checkout.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fwlab.utils import repository_root, resolve_path

REPO = Path(__file__).resolve().parents[1]
TRAIN_NB = REPO / "notebooks" / "02_train.ipynb"
SMALL = dict(max_iters=4, preset="tiny", tokens_per_iter=512, eval_interval=2, eval_tokens=1024,
             device="cpu", dtype="float32", compile=False, extra={"progress": False})


def _env() -> dict:
    # the kernels and commands import fwlab from this checkout
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.fixture
def repo(tmp_path, tiny_data) -> Path:
    """A repository with the training notebook in notebooks/ and a prepared data folder that
    results/data points at."""
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    (root / "notebooks").mkdir()
    shutil.copy(TRAIN_NB, root / "notebooks" / TRAIN_NB.name)
    (root / "results").mkdir()
    (root / "results" / "data").symlink_to(tiny_data, target_is_directory=True)
    return root


def _papermill(nb: Path, out: Path, cwd: Path, **params):
    import papermill as pm

    from fwlab.utils import kernel_config
    return pm.execute_notebook(str(nb), str(out), kernel_name="python3", cwd=str(cwd),
                               progress_bar=False, parameters=params, config=kernel_config())


def test_the_rule(tmp_path, monkeypatch, repo):
    monkeypatch.chdir(repo / "notebooks")
    assert repository_root() == repo.resolve()
    assert resolve_path("results/x") == repo.resolve() / "results" / "x"
    assert resolve_path("~/x") == Path.home() / "x"
    assert resolve_path("/a/../b") == Path("/b")
    assert resolve_path("../shared/x") == repo.resolve().parent / "shared" / "x"
    outside = tmp_path / "outside" / "sub"
    outside.mkdir(parents=True)
    monkeypatch.chdir(outside)  # no .git above it: from the current directory
    assert repository_root() is None
    assert resolve_path("results/x") == outside.resolve() / "results" / "x"


def test_training_notebook_in_notebooks_reads_paths_from_the_repository_root(repo, tmp_path):
    """Notebook 02 run as JupyterLab runs it (cwd notebooks/) with data_dir="results/data"."""
    _papermill(repo / "notebooks" / TRAIN_NB.name, tmp_path / "out.ipynb", repo / "notebooks",
               data_dir="results/data", run_dir="results/run", **SMALL)
    final = json.loads((repo / "results" / "run" / "final.json").read_text())
    assert final["status"] == "completed" and final["iters"] == 4
    config = json.loads((repo / "results" / "run" / "config.json").read_text())
    assert (config["data"], config["out"]) == (str(repo / "results" / "data"),
                                               str(repo / "results" / "run"))
    assert not (repo / "notebooks" / "results").exists()  # nothing beside the notebook


def test_a_missing_data_folder_names_the_absolute_path_tried(repo, tmp_path):
    import papermill as pm
    with pytest.raises(pm.PapermillExecutionError) as e:
        _papermill(repo / "notebooks" / TRAIN_NB.name, tmp_path / "out.ipynb", repo / "notebooks",
                   data_dir="results/no-such-data", run_dir="results/run", **SMALL)
    tried = repo / "results" / "no-such-data"
    assert len(e.value.traceback) == 1  # the one line, no traceback
    assert e.value.traceback[0].startswith(f"{tried}: no prepared data there (no such directory)")
    assert "notebooks/results" not in str(e.value)
    assert not (repo / "results" / "run").exists()


def test_commands_from_a_subdirectory_use_the_repository_root(repo, tmp_path):
    """`fwlab train` and `fwlab report` given relative paths in notebooks/: the root's, named."""
    cmd = [sys.executable, "-m", "fwlab.cli"]
    r = subprocess.run(cmd + ["train", "--data", "results/no-such-data", "--out", "results/r",
                              "--preset", "tiny"], cwd=repo / "notebooks", env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"fwlab train: error: {repo / 'results' / 'no-such-data'}: "), r.stderr
    r = subprocess.run(cmd + ["report", "results/no-such-sweep"], cwd=repo / "notebooks",
                       env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and str(repo / "results" / "no-such-sweep") in r.stderr, r.stderr
    r = subprocess.run(cmd + ["import", "csv", "results/no-such.csv", "--out", "results/imp"],
                       cwd=repo / "notebooks", env=_env(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and str(repo / "results" / "no-such.csv") in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_papermill_command_with_a_mistyped_parameter_ends_with_the_suggestion(repo, tmp_path):
    """`papermill notebooks/02_train.ipynb out.ipynb -p max_iter 40`, the command a person types:
    its last line is fwlab's one-line message (papermill's own traceback comes before it)."""
    r = subprocess.run([sys.executable, "-m", "papermill", "notebooks/02_train.ipynb",
                        str(tmp_path / "out.ipynb"), "-p", "max_iter", "40"], cwd=repo,
                       env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert lines[-1] == "unknown parameter 'max_iter'; did you mean 'max_iters'?", r.stderr[-2000:]
    # the kernel's part is that one line: no traceback of fwlab's code in between
    assert "fwlab/config.py" not in r.stderr and "FwlabError" not in r.stderr
