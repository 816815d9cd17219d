"""Bad inputs and faults, one case each: what an unlucky or careless user can do to fwlab, and the
one-line answer (or the refusal that keeps their files) that fwlab gives instead of silent wrong
results, lost files or a traceback.

Each case is a function registered with @case("what the user did"); `test_bad_input` runs them
all, so the list grows by adding a function. Everything runs the tiny preset on a few thousand
tokens of the real FineWeb-Edu sample, prepared once into a temporary folder.
"""
import dataclasses
import errno
import json
import math
import os
import shutil
import types
from pathlib import Path

import numpy as np
import pytest

from fwlab import cli
from fwlab.config import TrainConfig
from fwlab.errors import FwlabError

CASES: dict = {}


def case(name):
    def deco(fn):
        assert name not in CASES, name
        CASES[name] = fn
        return fn
    return deco


def tiny_cfg(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), preset="tiny", max_iters=4, tokens_per_iter=256,
                eval_interval=2, eval_tokens=256, ckpt_interval=2, keep_ckpts=2, dtype="float32",
                compile=False, device="cpu", progress=False, seed=1337)
    return TrainConfig(**(base | kw))


class Lab:
    """Shared, read-only ingredients: a prepared data folder and a finished tiny run. A case that
    changes them works on a copy (`copy_data`, `copy_run`)."""

    def __init__(self, root: Path, source: Path):
        self.root, self.source = root, source
        self._data = self._run = None

    @property
    def data(self) -> Path:
        if self._data is None:
            from fwlab.prepare import prepare
            self._data = self.root / "data"
            prepare(str(self.source), str(self._data), max_tokens=24_000, val_tokens=3_000,
                    shard_tokens=8_000, workers=1, progress=False)
        return self._data

    @property
    def run(self) -> Path:
        if self._run is None:
            from fwlab.train import train
            self._run = self.root / "run"
            train(tiny_cfg(self.data, self._run))
        return self._run

    def copy_data(self, dest: Path) -> Path:
        shutil.copytree(self.data, dest)
        return dest

    def copy_run(self, dest: Path) -> Path:
        shutil.copytree(self.run, dest)
        return dest


@pytest.fixture(scope="module")
def lab(tmp_path_factory, edu_sample):
    return Lab(tmp_path_factory.mktemp("lab"), edu_sample)


def fwlab(ctx, *argv) -> tuple[int, str]:
    """Run the fwlab CLI in this process: (exit status, stdout + stderr)."""
    ctx.capsys.readouterr()
    rc = cli.main([str(a) for a in argv])
    out = ctx.capsys.readouterr()
    return rc, out.out + out.err


def tree(path: Path) -> dict:
    """{relative path: bytes} of every file below `path`."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# --- 1. data loss: --overwrite ------------------------------------------------------------------
@case("export --run RUN --out RUN --overwrite")
def _(ctx):
    pytest.importorskip("transformers")
    run = ctx.lab.copy_run(ctx.tmp / "run")
    before = tree(run)
    rc, out = fwlab(ctx, "export", "--run", run, "--out", run, "--overwrite", "--no-verify")
    assert rc == 2 and "holds the run" in out and not out.startswith("exported")
    assert tree(run) == before


@case("export --out a folder that contains RUN --overwrite")
def _(ctx):
    pytest.importorskip("transformers")
    parent = ctx.tmp / "work"
    run = ctx.lab.copy_run(parent / "run")
    before = tree(parent)
    rc, out = fwlab(ctx, "export", "--run", run, "--out", parent, "--overwrite", "--no-verify")
    assert rc == 2 and "holds the run" in out
    assert tree(parent) == before


@case("export --out a sweep / a data folder --overwrite")
def _(ctx):
    pytest.importorskip("transformers")
    sweep = ctx.tmp / "sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_text("{}")
    data = ctx.lab.copy_data(ctx.tmp / "data")
    for out_dir, kind in ((sweep, "a sweep"), (data, "a data folder")):
        before = tree(out_dir)
        rc, out = fwlab(ctx, "export", "--run", ctx.lab.run, "--out", out_dir, "--overwrite",
                        "--no-verify")
        assert rc == 2 and kind in out, out
        assert tree(out_dir) == before


@case("export --overwrite onto an earlier export with a user's file in it")
def _(ctx):
    pytest.importorskip("transformers")
    out_dir = ctx.tmp / "hf"
    assert fwlab(ctx, "export", "--run", ctx.lab.run, "--out", out_dir, "--no-verify")[0] == 0
    (out_dir / "notes.txt").write_text("mine")
    rc, out = fwlab(ctx, "export", "--run", ctx.lab.run, "--out", out_dir, "--overwrite",
                    "--no-verify")
    assert rc == 2 and "notes.txt" in out
    assert (out_dir / "notes.txt").read_text() == "mine"
    (out_dir / "notes.txt").unlink()  # an export and nothing else: replaced
    rc, out = fwlab(ctx, "export", "--run", ctx.lab.run, "--out", out_dir, "--overwrite",
                    "--no-verify")
    assert rc == 0 and "exported" in out


@case("prepare --overwrite --out RUN")
def _(ctx):
    run = ctx.lab.copy_run(ctx.tmp / "run")
    before = tree(run)
    rc, out = fwlab(ctx, "prepare", "--source", ctx.lab.source, "--out", run, "--overwrite",
                    "--max-tokens", "5000", "--val-tokens", "500", "--workers", "1")
    assert rc == 2 and "a run" in out
    assert tree(run) == before


# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, lab, tmp_path, capsys, monkeypatch):
    CASES[name](types.SimpleNamespace(lab=lab, tmp=tmp_path, capsys=capsys, monkeypatch=monkeypatch))
