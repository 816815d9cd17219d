"""Test setup: offline hub, the shared tokenizer cache, and real-data fixtures.

The HF_* variables must be set before anything imports `datasets` (else it retries the network).
"""
import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
if (SHARED / "tiktoken_cache").is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken_cache"))
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

SAMPLE_DIR = SHARED / "data" / "fineweb-edu-sample"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"missing shared test data: {path} (../shared must sit beside the checkout)")
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _need(SHARED)


@pytest.fixture(scope="session")
def edu_sample() -> Path:
    return _need(SAMPLE_DIR / "fineweb_edu.jsonl.gz")


@pytest.fixture(scope="session")
def fineweb_sample() -> Path:
    return _need(SAMPLE_DIR / "fineweb.jsonl.gz")


@pytest.fixture(scope="session")
def hellaswag_path() -> Path:
    return _need(SHARED / "data" / "hellaswag" / "hellaswag_val.jsonl.gz")


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return _need(SHARED / "reference")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, edu_sample) -> Path:
    """The real FineWeb-Edu sample prepared once per session: ~10k val tokens, the rest train."""
    from fwlab.prepare import prepare

    out = tmp_path_factory.mktemp("data") / "edu"
    prepare(str(edu_sample), str(out), val_tokens=10_000, shard_tokens=40_000, progress=False)
    return out


def run_training_notebook(data_dir, tmp_path: Path, max_iters: int, eval_interval: int) -> dict:
    """notebooks/02_train.ipynb run by papermill in tmp_path (run_dir "nbrun"): a tiny fp32 CPU
    run; the executed notebook's JSON."""
    import papermill as pm
    nb = Path(__file__).resolve().parents[1] / "notebooks" / "02_train.ipynb"
    pm.execute_notebook(str(nb), str(tmp_path / "out.ipynb"), kernel_name="python3",
                        cwd=str(tmp_path), progress_bar=False,
                        parameters=dict(max_iters=max_iters, preset="tiny", data_dir=str(data_dir),
                                        run_dir="nbrun", tokens_per_iter=512,
                                        eval_interval=eval_interval, eval_tokens=1024,
                                        device="cpu", dtype="float32", compile=False,
                                        extra={"progress": False}))
    return json.loads((tmp_path / "out.ipynb").read_text())
