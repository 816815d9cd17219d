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
import re
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


def curve_csv(ctx) -> Path:
    src = ctx.tmp / "curve.csv"
    src.write_text("step,val_loss\n0,10.9\n100,6.5\n200,5.2\n")
    return src


@case("import --out RUN --overwrite (a run fwlab trained)")
def _(ctx):
    run = ctx.lab.copy_run(ctx.tmp / "run")
    before = tree(run)
    rc, out = fwlab(ctx, "import", "csv", curve_csv(ctx), "--out", run, "--overwrite")
    assert rc == 2 and "holds a run that fwlab import did not write" in out, out
    assert tree(run) == before


@case("import --out a folder holding a data folder / a sweep --overwrite")
def _(ctx):
    parent = ctx.tmp / "results"
    ctx.lab.copy_data(parent / "data")
    (parent / "sweep").mkdir()
    (parent / "sweep" / "sweep.json").write_text('{"runs": []}')
    before = tree(parent)
    for out_dir, why in ((parent, "is not an earlier import"), (parent / "data", "holds a data folder"),
                         (parent / "sweep", "holds a sweep that fwlab import did not write")):
        rc, out = fwlab(ctx, "import", "csv", curve_csv(ctx), "--out", out_dir, "--overwrite")
        assert rc == 2 and why in out, out
    assert tree(parent) == before


@case("import --overwrite onto an earlier import with a user's file in it")
def _(ctx):
    out_dir = ctx.tmp / "imp"
    assert fwlab(ctx, "import", "csv", curve_csv(ctx), "--out", out_dir)[0] == 0
    (out_dir / "notes.txt").write_text("mine")
    rc, out = fwlab(ctx, "import", "csv", curve_csv(ctx), "--out", out_dir, "--overwrite")
    assert rc == 2 and "notes.txt" in out and (out_dir / "notes.txt").read_text() == "mine"
    (out_dir / "notes.txt").unlink()  # an import and nothing else: replaced
    assert fwlab(ctx, "import", "csv", curve_csv(ctx), "--out", out_dir, "--overwrite")[0] == 0


# --- 2. silent wrong results: settings out of range ---------------------------------------------
def train_flags(data, out, **kw):
    cfg = tiny_cfg(data, out, **kw)
    args = []
    for k, v in cfg.to_dict().items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            args.append(flag if v else "--no-" + flag[2:])
        elif v is not None and v != "":
            args += [flag, str(v)]
    return args


@pytest.mark.parametrize("flag", ["--grad-clip=-1", "--weight-decay=-5", "--lr=inf", "--beta1=2",
                                  "--beta2=nan", "--early-stop-delta=-1", "--dropout=nan"])
def test_train_refuses_a_setting_out_of_range(flag, lab, tmp_path, capsys):
    ctx = types.SimpleNamespace(capsys=capsys)
    name = flag[2:].split("=")[0].replace("-", "_")
    rc, out = fwlab(ctx, "train", *train_flags(lab.data, tmp_path / "r"), flag)
    assert rc == 2 and f"{name}=" in out and "Traceback" not in out, out
    assert not (tmp_path / "r").exists()


@case("train --grad-clip -1 / --weight-decay -5 / --lr inf / --beta1 2")
def _(ctx):
    for kw, name in ((dict(grad_clip=-1.0), "grad_clip"), (dict(weight_decay=-5.0), "weight_decay"),
                     (dict(lr=math.inf), "lr"), (dict(beta1=2.0), "beta1")):
        with pytest.raises(FwlabError, match=f"^{name}="):
            tiny_cfg("d", "o", **kw).validate()


@case("notebook parameters lr='inf', beta2=1.5, max_iters=30.7")
def _(ctx):
    from fwlab.config import config_from_params
    base = dict(data_dir="d", run_dir="o", preset="tiny", tokens_per_iter=256)
    for kw, name in ((dict(lr="inf"), "lr"), (dict(beta2=1.5), "beta2"),
                     (dict(extra={"grad_clip": -1}), "grad_clip")):
        with pytest.raises(FwlabError, match=name):
            config_from_params(base | kw)
    with pytest.raises(FwlabError, match="max_iters.*whole number"):
        config_from_params(base | dict(max_iters=30.7))


@case("TrainConfig from config.json with max_iters 30.7 or lr 'fast'")
def _(ctx):
    with pytest.raises(FwlabError, match="max_iters=30.7: must be a whole number"):
        TrainConfig.from_dict(tiny_cfg("d", "o").to_dict() | {"max_iters": 30.7}).validate()
    with pytest.raises(FwlabError, match="lr='fast': must be a finite number"):
        TrainConfig.from_dict(tiny_cfg("d", "o").to_dict() | {"lr": "fast"}).validate()


# --- 3. a checkpoint of another run ---------------------------------------------------------------
def resumable(ctx, name="r", **kw) -> Path:
    """A run killed after its iteration-2 checkpoint: final.json removed, resumable."""
    from fwlab.train import train
    run = ctx.tmp / name
    train(tiny_cfg(ctx.lab.data, run, max_iters=4, **kw))
    (run / "final.json").unlink()
    (run / "ckpt" / "ckpt_0000004.pt").unlink()
    return run


@case("resume with a checkpoint of another run (same seed, other lr and schedule)")
def _(ctx):
    from fwlab.train import train
    mine = resumable(ctx, "mine")
    other = resumable(ctx, "other", lr=3e-3, schedule="constant")
    shutil.copy(other / "ckpt" / "ckpt_0000002.pt", mine / "ckpt" / "ckpt_0000002.pt")
    with pytest.raises(FwlabError, match=r"made by another run \(lr: 0.003 in the checkpoint, "
                                         r"0.0006 in this run; schedule: 'constant'"):
        train(tiny_cfg(ctx.lab.data, mine, max_iters=4))


@case("resume with a checkpoint of another model shape")
def _(ctx):
    from fwlab.train import train
    mine = resumable(ctx, "mine")
    other = resumable(ctx, "other", n_embd=32)
    shutil.copy(other / "ckpt" / "ckpt_0000002.pt", mine / "ckpt" / "ckpt_0000002.pt")
    with pytest.raises(FwlabError, match=r"made by another run \(model: .*'n_embd': 32"):
        train(tiny_cfg(ctx.lab.data, mine, max_iters=4))


# --- 4. / 8. / 12. the data folder is not trusted blindly -------------------------------------------
def edit_manifest(data: Path, fn) -> None:
    m = json.loads((data / "manifest.json").read_text())
    fn(m)
    (data / "manifest.json").write_text(json.dumps(m))


@case("a shard altered at the same size")
def _(ctx):
    from fwlab.train import train
    data = ctx.lab.copy_data(ctx.tmp / "data")
    with open(data / "train_000000.bin", "r+b") as f:
        f.seek(2000)
        f.write(b"\x01\x02\x03\x04")
    with pytest.raises(FwlabError, match=r"train_000000.bin: its sha256 .* differs from the manifest"):
        train(tiny_cfg(data, ctx.tmp / "r"))
    assert not (ctx.tmp / "r").exists()


@case("a shard altered after it was verified, same size and mtime: --verify finds it")
def _(ctx):
    from fwlab.data import verify_data, _VERIFIED
    data = ctx.lab.copy_data(ctx.tmp / "data")
    verify_data(data)
    assert json.loads((data / ".fwlab_verified.json").read_text())  # the record on disk
    shard = data / "train_000001.bin"
    st = shard.stat()
    with open(shard, "r+b") as f:
        f.seek(3000)
        f.write(b"\x05\x06")
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    _VERIFIED.clear()
    verify_data(data)  # size and mtime as verified: not read again
    with pytest.raises(FwlabError, match="train_000001.bin: its sha256"):
        verify_data(data, force=True)
    rc, out = fwlab(ctx, "train", *train_flags(data, ctx.tmp / "r"), "--verify")
    assert rc == 2 and "train_000001.bin: its sha256" in out


@pytest.mark.parametrize("name", ["../outside/x.bin", "/etc/passwd", "../../../../etc/passwd"])
def test_manifest_path_outside_the_data_folder(name, lab, tmp_path):
    from fwlab.train import train
    data = lab.copy_data(tmp_path / "data")
    (tmp_path / "outside").mkdir()
    shutil.copy(data / "train_000000.bin", tmp_path / "outside" / "x.bin")
    edit_manifest(data, lambda m: m["train"]["shards"][0].update(file=name))
    with pytest.raises(FwlabError, match="lies outside the data folder") as e:
        train(tiny_cfg(data, tmp_path / "r"))
    assert "magic" not in str(e.value)  # /etc/passwd is never opened


@case("manifest shard paths ../outside/x.bin, /abs/x.bin, a symlink out")
def _(ctx):
    from fwlab.data import TrainLoader
    data = ctx.lab.copy_data(ctx.tmp / "data")
    (ctx.tmp / "outside").mkdir()
    shutil.copy(data / "train_000000.bin", ctx.tmp / "outside" / "x.bin")
    for name in ("../outside/x.bin", str(ctx.tmp / "outside" / "x.bin")):
        edit_manifest(data, lambda m: m["train"]["shards"][0].update(file=name))
        with pytest.raises(FwlabError, match="lies outside the data folder"):
            TrainLoader(data, 64)
    (data / "link.bin").symlink_to(ctx.tmp / "outside" / "x.bin")
    edit_manifest(data, lambda m: m["train"]["shards"][0].update(file="link.bin"))
    with pytest.raises(FwlabError, match="lies outside the data folder"):
        TrainLoader(data, 64)


@case("a FIFO as a manifest shard")
def _(ctx):
    from fwlab.data import TrainLoader
    data = ctx.lab.copy_data(ctx.tmp / "data")
    os.unlink(data / "train_000000.bin")
    os.mkfifo(data / "train_000000.bin")  # reading it would block forever
    with pytest.raises(FwlabError, match="train_000000.bin: is a FIFO"):
        TrainLoader(data, 64)


@case('"file": 5 in a manifest')
def _(ctx):
    data = ctx.lab.copy_data(ctx.tmp / "data")
    edit_manifest(data, lambda m: m["train"]["shards"][0].update(file=5))
    rc, out = fwlab(ctx, "train", *train_flags(data, ctx.tmp / "r"))
    assert rc == 2 and "train shard 0: {'file': 5" in out and "no file name" in out
    assert not (ctx.tmp / "r").exists()


@case("a token id >= the vocabulary in a shard")
def _(ctx):
    from fwlab.data import write_shard
    data = ctx.lab.copy_data(ctx.tmp / "data")
    tokens = np.fromfile(data / "train_000001.bin", dtype="<u2", offset=1024)
    tokens[100] = 60000
    sha = write_shard(data / "train_000001.bin", tokens)
    edit_manifest(data, lambda m: m["train"]["shards"][1].update(sha256=sha))
    rc, out = fwlab(ctx, "train", *train_flags(data, ctx.tmp / "r"))
    assert rc == 2 and "token id 60000 (first bad one at position 100)" in out, out
    assert not (ctx.tmp / "r").exists()  # no stray config.json


@pytest.mark.parametrize("edit, why", [
    (lambda m: m["train"]["shards"][0].update(file=5), "train shard 0: {'file': 5"),
    (lambda m: m.clear() or m.update(config=5, train={"shards": []}, val={"shards": []}),
     "was prepared with other settings"),
])
def test_prepare_onto_a_folder_with_a_malformed_manifest(edit, why, lab, tmp_path):
    from fwlab.prepare import prepare
    data = lab.copy_data(tmp_path / "data")
    m = json.loads((data / "manifest.json").read_text())
    edit(m)
    (data / "manifest.json").write_text(json.dumps(m))
    before = tree(data)
    with pytest.raises(FwlabError, match=re.escape(why)):
        prepare(str(lab.source), str(data), max_tokens=24_000, val_tokens=3_000,
                shard_tokens=8_000, workers=1, progress=False)
    assert tree(data) == before
    (data / "manifest.json").write_text("[1]")
    with pytest.raises(FwlabError, match="not a manifest"):
        prepare(str(lab.source), str(data), max_tokens=24_000, val_tokens=3_000,
                shard_tokens=8_000, workers=1, progress=False)


# --- 12. run and sweep files with values of the wrong type --------------------------------------------
def edit_json(path: Path, fn) -> None:
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("what, edit, why", [
    ("sweep.json {'runs': 5}", lambda d: d.update(runs=5), "key 'runs' must be a list"),
    ("sweep.json run name '../../x'", lambda d: d["runs"][0].update(name="../../x"),
     "runs[0] name '../../x' is not a folder name"),
    ("sweep.json max_iters 30.7", lambda d: d["runs"][0].update(max_iters=30.7),
     "max_iters=30.7 must be a whole number"),
])
def test_sweep_json_with_a_wrong_value(what, edit, why, lab, tmp_path, capsys):
    sweep = tmp_path / "sw"
    shutil.copytree(lab.run, sweep / "runs" / "b4", ignore=shutil.ignore_patterns("ckpt"))
    (sweep / "sweep.json").write_text(json.dumps(dict(
        mode="independent", budgets=[4], runs=[dict(name="b4", budget=4, role="run", max_iters=4,
                                                    status="completed")])))
    edit_json(sweep / "sweep.json", edit)
    ctx = types.SimpleNamespace(capsys=capsys)
    for cmd in (["plan", "--from", sweep, "--tok-per-s", "100"],
                ["check-claims", EXAMPLE_CLAIMS, "--from", sweep]):
        rc, out = fwlab(ctx, *cmd)
        assert rc == 2 and why in out and "Traceback" not in out, (cmd, out)


@pytest.mark.parametrize("file, edit, why", [
    ("config.json", lambda d: d.update(tokens_per_iter="x"), "tokens_per_iter='x' must be a whole"),
    ("final.json", lambda d: d.update(iters=6.5), "iters=6.5 must be a whole number"),
    ("final.json", lambda d: d.update(final_val_loss=[3]), "final_val_loss=[3] must be a number"),
])
def test_run_files_with_a_wrong_value(file, edit, why, lab, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(lab.run, run, ignore=shutil.ignore_patterns("ckpt"))
    edit_json(run / file, edit)
    rc, out = fwlab(types.SimpleNamespace(capsys=capsys), "plan", "--from", run, "--tok-per-s", "100")
    assert rc == 2 and f"{run / file}: {why}" in out and "Traceback" not in out, out


@case("metrics.jsonl with a val_loss that is text")
def _(ctx):
    run = ctx.tmp / "run"
    shutil.copytree(ctx.lab.run, run, ignore=shutil.ignore_patterns("ckpt"))
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"iter": 7, "val_loss": "low"}\n{}\n')
    rc, out = fwlab(ctx, "plan", "--from", run, "--tok-per-s", "100")
    assert rc == 2 and "the line of iteration 7 has val_loss='low', not a number" in out, out


# --- 9. a random-bytes checkpoint -------------------------------------------------------------------
@case("a random-bytes checkpoint")
def _(ctx):
    run = ctx.lab.copy_run(ctx.tmp / "run")
    ck = sorted((run / "ckpt").glob("*.pt"))[-1]
    ck.write_bytes(np.random.default_rng(0).bytes(5000))
    rc, out = fwlab(ctx, "sample", "--run", run, "--tokens", "2")
    assert rc == 2 and "not a readable fwlab checkpoint" in out
    assert "weights_only" not in out and "Traceback" not in out


# --- 10. two trainers on one run directory --------------------------------------------------------
@case("two fwlab train on the same --out")
def _(ctx):
    import fcntl
    from fwlab.train import train
    run = ctx.tmp / "r"
    run.mkdir()
    with open(run / ".lock", "w") as f:  # what a running trainer holds
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        f.write("4242\n")
        f.flush()
        with pytest.raises(FwlabError, match=f"another fwlab train is running in {run}, pid 4242"):
            train(tiny_cfg(ctx.lab.data, run))
    assert os.listdir(run) == [".lock"]


@case("a stale run lock (its trainer was killed)")
def _(ctx):
    from fwlab.train import train
    run = ctx.tmp / "r"
    run.mkdir()
    (run / ".lock").write_text("999999999\n")  # no lock held on it: its process has ended
    assert train(tiny_cfg(ctx.lab.data, run, max_iters=2))["status"] == "completed"
    assert (run / ".lock").read_text() == f"{os.getpid()}\n"
    assert "taking over the lock of pid 999999999" in ctx.capsys.readouterr().out


@case("train --out a data folder / a sweep")
def _(ctx):
    data = ctx.lab.copy_data(ctx.tmp / "data")
    before = tree(data)
    rc, out = fwlab(ctx, "train", *train_flags(ctx.lab.data, data))
    assert rc == 2 and "holds a data folder, not a run" in out
    assert tree(data) == before


# --- 11. files that cannot be written ----------------------------------------------------------------
@case("train --out under a file")
def _(ctx):
    (ctx.tmp / "f").write_text("x")
    rc, out = fwlab(ctx, "train", *train_flags(ctx.lab.data, ctx.tmp / "f" / "run"))
    assert rc == 2 and "cannot create the run directory" in out and "Traceback" not in out


def fail_writes(ctx, match: str, err: int = errno.ENOSPC):
    """Writes to a temporary file whose name holds `match` go to /dev/full (a real ENOSPC from
    the kernel) or fail with `err`: a full disk or a refused permission, on any filesystem."""
    import builtins
    import fwlab.utils as U
    real = builtins.open

    def fake(file, mode="r", *a, **kw):
        if match in os.path.basename(str(file)) and "w" in mode:
            if err == errno.ENOSPC:
                return real("/dev/full", mode, *a, **kw)
            raise OSError(err, os.strerror(err), str(file))
        return real(file, mode, *a, **kw)
    ctx.monkeypatch.setattr(U, "open", fake, raising=False)


@case("disk full while saving a checkpoint")
def _(ctx):
    from fwlab.train import train
    run = ctx.tmp / "r"
    fail_writes(ctx, ".ckpt_0000004.pt")
    with pytest.raises(FwlabError, match=r"cannot write checkpoint .*ckpt_0000004.pt: .*(disk|space)"
                                         r".*earlier checkpoints .* are intact") as e:
        train(tiny_cfg(ctx.lab.data, run))
    assert "inline_container" not in str(e.value)
    assert sorted(p.name for p in (run / "ckpt").iterdir()) == ["ckpt_0000002.pt"]
    ctx.monkeypatch.undo()
    assert train(tiny_cfg(ctx.lab.data, run))["iters"] == 4  # resumes once there is room


@case("no permission to write config.json")
def _(ctx):
    from fwlab.train import train
    fail_writes(ctx, ".config.json", errno.EACCES)
    with pytest.raises(FwlabError, match=r"cannot write .*config.json: Permission denied"):
        train(tiny_cfg(ctx.lab.data, ctx.tmp / "r"))


@pytest.mark.parametrize("cmd", ["export", "import", "sweep", "report", "plan", "check-claims --csv"])
def test_out_under_a_file(cmd, lab, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    out_dir = tmp_path / "f" / "sub" / "out"
    sweep_flags = train_flags(lab.data, out_dir, schedule="wsd")
    i = sweep_flags.index("--max-iters")
    del sweep_flags[i:i + 2]
    plan_json = tmp_path / "plan.json"
    plan_json.write_text(json.dumps({"rows": [], "tokens_per_iter": 524288, "preset": "40m"}))
    argv = {"export": ["export", "--run", lab.run, "--out", out_dir, "--no-verify"],
            "import": ["import", "csv", curve_csv(types.SimpleNamespace(tmp=tmp_path)), "--out",
                       out_dir],
            "sweep": ["sweep", *sweep_flags, "--budgets", "4,8", "--mode", "wsd"],
            "report": ["report", lab.run, "--out", out_dir],
            "plan": [*PLAN, "--tok-per-s", "1000", "--out", out_dir],
            "check-claims --csv": ["check-claims", EXAMPLE_CLAIMS, "--from", plan_json, "--csv",
                                   out_dir]}[cmd]
    if cmd == "export":
        pytest.importorskip("transformers")
    rc, out = fwlab(types.SimpleNamespace(capsys=capsys), *argv)
    if cmd.startswith("check-claims"):  # the verdicts are printed before the CSV is written
        out = out.splitlines(keepends=True)[-1]
    assert rc == 2 and out.count("\n") == 1 and "Traceback" not in out, out
    assert f"{tmp_path / 'f'} is a file" in out or f"{tmp_path / 'f'}: is a file" in out, out
    assert "nothing was written" in out or "are as they were" in out, out
    assert (tmp_path / "f").read_text() == "x"


@pytest.mark.parametrize("cmd", ["export", "import", "sweep", "report"])
def test_read_only_filesystem(cmd, lab, tmp_path, capsys, monkeypatch):
    """What a read-only filesystem (EROFS) gives wherever the command first creates a file or
    folder beside --out, simulated (mounting one needs root)."""
    import tempfile
    real_mkdtemp, real_mkdir = tempfile.mkdtemp, Path.mkdir
    ro = tmp_path / "ro"
    real_mkdir(ro)

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, dir=None, **kw: refuse(dir) if str(dir).startswith(str(ro)) else real_mkdtemp(*a, dir=dir, **kw))
    monkeypatch.setattr(Path, "mkdir", lambda self, *a, **kw: refuse(self) if str(self).startswith(str(ro)) else real_mkdir(self, *a, **kw))
    out_dir = ro / "out"
    sweep_flags = train_flags(lab.data, out_dir, schedule="wsd")
    i = sweep_flags.index("--max-iters")
    del sweep_flags[i:i + 2]
    argv = {"export": ["export", "--run", lab.run, "--out", out_dir, "--no-verify"],
            "import": ["import", "csv", curve_csv(types.SimpleNamespace(tmp=tmp_path)), "--out",
                       out_dir],
            "sweep": ["sweep", *sweep_flags, "--budgets", "4,8", "--mode", "wsd"],
            "report": ["report", lab.run, "--out", out_dir]}[cmd]
    if cmd == "export":
        pytest.importorskip("transformers")
    rc, out = fwlab(types.SimpleNamespace(capsys=capsys), *argv)
    assert rc == 2 and out.count("\n") == 1 and f"{out_dir}: cannot write" in out, out
    assert "Read-only file system" in out and ("nothing was written" in out or "untouched" in out)
    assert os.listdir(ro) == []


@case("train resumed in a run folder that cannot be written")
def _(ctx):
    import builtins
    import fwlab.train as T
    run = ctx.lab.copy_run(ctx.tmp / "run")
    before = tree(run)
    real = builtins.open
    ctx.monkeypatch.setattr(T, "open", lambda f, *a, **kw: (_ for _ in ()).throw(
        OSError(errno.EROFS, os.strerror(errno.EROFS), str(f))) if str(f).endswith(".lock")
        else real(f, *a, **kw), raising=False)
    rc, out = fwlab(ctx, "train", *train_flags(ctx.lab.data, run, max_iters=6))
    assert rc == 2 and "cannot write in the run directory" in out and "Read-only" in out, out
    assert "its files are as they were" in out and tree(run) == before


@case("report on a full disk")
def _(ctx):
    import fwlab.report as R

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), kw.get("cwd"))
    ctx.monkeypatch.setattr(R.pm, "execute_notebook", full)
    out_dir = ctx.tmp / "rep"
    rc, out = fwlab(ctx, "report", ctx.lab.run, "--out", out_dir)
    assert rc == 2 and f"report folder {out_dir}: cannot write the report" in out, out
    assert "No space left on device" in out and "untouched" in out
    assert os.listdir(out_dir) == []


# --- 13. a diverged run --------------------------------------------------------------------------
@case("fwlab train that diverges exits non-zero")
def _(ctx):
    out_dir = ctx.tmp / "r"
    rc, out = fwlab(ctx, "train", *train_flags(ctx.lab.data, out_dir, lr=1e30, warmup_iters=0))
    assert rc == 3 and "diverged" in out
    assert json.loads((out_dir / "final.json").read_text())["status"] == "diverged"
    from fwlab.train import main
    assert main(train_flags(ctx.lab.data, out_dir, lr=1e30, warmup_iters=0)) == 3  # done: same answer


# --- 7. / 12. claims files, plan JSONs and the numeric flags of plan and sample ----------------------
EXAMPLE_CLAIMS = Path(__file__).resolve().parents[1] / "examples" / "claims_40m_fineweb_edu.yaml"


@pytest.mark.parametrize("old, new, why", [
    ("iters: 6000 ", "iters: 30.7 ", "claim 1 iters 30.7: must be a whole number"),
    ("per_iters: 10000", "per_iters: 1e4.5", "claim 5 per_iters '1e4.5': not a number"),
    ("preset: 40m", "preset: [tiny]", "preset ['tiny']: give one preset name"),
    ("gpu: RTX 4070", "gpu: [RTX 4070]", "claim 5: gpu ['RTX 4070']: give one GPU name"),
    ("tokens_per_iter: 524288 ", "tokens_per_iter: 524288.5 ", "tokens_per_iter 524288.5: must be "
                                                               "a whole number"),
])
def test_claims_file_with_a_wrong_value(old, new, why, tmp_path, capsys):
    text = EXAMPLE_CLAIMS.read_text()
    assert old in text
    (tmp_path / "c.yaml").write_text(text.replace(old, new, 1))
    ctx = types.SimpleNamespace(capsys=capsys)
    rc, out = fwlab(ctx, "check-claims", tmp_path / "c.yaml", "--from", tmp_path / "none.json")
    assert rc == 2 and why in out and "Traceback" not in out, out


@pytest.mark.parametrize("doc, why", [
    ({"rows": 5, "tokens_per_iter": 1}, "'rows' must be a list"),
    ({"rows": [5], "tokens_per_iter": 524288}, "rows[0]: budget, val_loss"),
    ({"rows": [{"budget": "x", "val_loss": 3, "val_loss_low": 2, "val_loss_high": 4}],
      "tokens_per_iter": 524288}, "rows[0]: budget must be numbers"),
    ({"rows": [], "tokens_per_iter": "lots"}, "'tokens_per_iter' must be a number"),
])
def test_check_claims_from_a_malformed_plan_json(doc, why, tmp_path, capsys):
    (tmp_path / "plan.json").write_text(json.dumps(doc))
    ctx = types.SimpleNamespace(capsys=capsys)
    rc, out = fwlab(ctx, "check-claims", EXAMPLE_CLAIMS, "--from", tmp_path / "plan.json")
    assert rc == 2 and why in out and "Traceback" not in out, out


PLAN = ["plan", "--preset", "tiny", "--data-tokens", "34802", "--tokens-per-iter", "256",
        "--budgets", "4,8", "--json"]


@pytest.mark.parametrize("flag, value, why", [
    ("--min-gain-per-hour", "nan", "--min-gain-per-hour nan: must be a finite number"),
    ("--min-gain-per-hour", "inf", "--min-gain-per-hour inf: must be a finite number"),
    ("--min-gain-per-hour", "-1", "--min-gain-per-hour -1: must be >= 0"),
    ("--tok-per-s", "inf", "--tok-per-s inf: must be a finite number"),
    ("--tok-per-s", "nan", "--tok-per-s nan: must be a finite number"),
])
def test_plan_refuses_a_number_out_of_range(flag, value, why, tmp_path, capsys):
    ctx = types.SimpleNamespace(capsys=capsys)
    args = PLAN + ([] if flag == "--tok-per-s" else ["--tok-per-s", "1000"])
    rc, out = fwlab(ctx, *args, flag, value, "--out", tmp_path / "plan.json")
    assert rc == 2 and why in out and "Traceback" not in out, out
    assert not (tmp_path / "plan.json").exists()


@pytest.mark.parametrize("flags, why", [
    (["--temperature", "nan"], "--temperature nan: must be a finite number"),
    (["--temperature", "inf"], "--temperature inf: must be a finite number"),
])
def test_sample_refuses_a_number_out_of_range(flags, why, lab, capsys):
    ctx = types.SimpleNamespace(capsys=capsys)
    rc, out = fwlab(ctx, "sample", "--run", lab.run, "--tokens", "2", "--device", "cpu", *flags)
    assert rc == 2 and why in out and "Traceback" not in out, out


@case("eval hellaswag --batch-size 0")
def _(ctx, hellaswag=Path(__file__).resolve().parents[2] / "shared" / "data" / "hellaswag"):
    rc, out = fwlab(ctx, "eval", "hellaswag", "--run", ctx.lab.run, "--device", "cpu", "--data",
                    hellaswag / "hellaswag_val.jsonl.gz", "--limit", "2", "--batch-size", "0")
    assert rc == 2 and "--batch-size 0: must be positive" in out, out
    assert not (ctx.lab.run / "eval_hellaswag.json").exists()


@pytest.mark.parametrize("value, why", [("nan", "must be a finite number"),
                                        ("inf", "must be a finite number"), ("-1", "must be >= 0")])
def test_demo_refuses_a_target_out_of_range(value, why, edu_sample, tmp_path, capsys):
    rc, out = fwlab(types.SimpleNamespace(capsys=capsys), "demo", "--source", edu_sample, "--out",
                    tmp_path / "demo", "--target-min", value)
    assert rc == 2 and f"--target-min {value}: {why}" in out, out  # before a minute of timing
    assert not (tmp_path / "demo").exists()


@case("import --cooldown-frac inf")
def _(ctx):
    rc, out = fwlab(ctx, "import", "csv", curve_csv(ctx), "--out", ctx.tmp / "imp", "--lr", "1e-3",
                    "--schedule", "wsd", "--warmup-iters", "5", "--max-iters", "200",
                    "--cooldown-frac", "inf")
    assert rc == 2 and "cooldown_frac=inf: must be in (0, 1]" in out, out
    assert not (ctx.tmp / "imp").exists()


# --- 14. a wsd sweep of too small budgets, said in the user's terms -------------------------------
@pytest.mark.parametrize("budgets, bad", [("1", 1), ("2,8", 2), ("1,10", 1)])
def test_wsd_sweep_of_too_small_budgets(budgets, bad, lab, tmp_path, capsys):
    ctx = types.SimpleNamespace(capsys=capsys)
    flags = train_flags(lab.data, tmp_path / "sw", schedule="wsd")
    i = flags.index("--max-iters")
    del flags[i:i + 2]  # a sweep sets it per run
    rc, out = fwlab(ctx, "sweep", *flags, "--budgets", budgets, "--mode", "wsd")
    assert rc == 2 and f"budget {bad}: too small for a wsd sweep" in out, out
    assert "give budgets of at least 3" in out and "warmup_iters" not in out and "init_iter" not in out
    assert not (tmp_path / "sw").exists()


def test_exit_codes_are_documented(capsys):
    """Scripts and sweeps tell the outcomes apart by the exit status: fwlab --help and the README
    list every code the CLI returns (cli.main: 0, 2, 3, 1, 130)."""
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    for doc in (text, readme):
        assert "exit status" in doc.lower()
        for code, what in (("0", "done"), ("2", "error"), ("3", "diverged"), ("1", "sweep"),
                           ("130", "interrupted")):
            assert re.search(rf"`?{code}`? [^;]*{what}", doc), (code, doc[:300])


@case("sweep --epochs 0.5,inf")
def _(ctx):
    flags = train_flags(ctx.lab.data, ctx.tmp / "sw")
    i = flags.index("--max-iters")
    del flags[i:i + 2]
    rc, out = fwlab(ctx, "sweep", *flags, "--epochs", "0.5,inf")
    assert rc == 2 and "--epochs: inf is not a finite, positive number" in out, out
    assert not (ctx.tmp / "sw").exists()


# --- 5. / 6. / 8. / 11. / 14. prepare's sources and output -----------------------------------------
def sample_lines(ctx, start: int, n: int) -> bytes:
    import gzip
    with gzip.open(ctx.lab.source, "rb") as f:
        lines = [line for _, line in zip(range(start + n), f)]
    return b"".join(lines[start:])


def source_dir(ctx, files: int = 2, per_file: int = 6) -> Path:
    src = ctx.tmp / "src"
    src.mkdir()
    for i in range(files):
        (src / f"part{i}.jsonl").write_bytes(sample_lines(ctx, i * per_file, per_file))
    return src


def prep(src, out, **kw):
    from fwlab.prepare import prepare
    return prepare(str(src), str(out), **(dict(val_tokens=1000, shard_tokens=2000, workers=1,
                                               progress=False) | kw))


@case("prepare resumed after its source changed")
def _(ctx):
    import fwlab.prepare as P
    src, out = source_dir(ctx), ctx.tmp / "data"
    flush, calls = P._TrainShards.flush, []

    def killed_on_the_second_shard(self):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        flush(self)
    ctx.monkeypatch.setattr(P._TrainShards, "flush", killed_on_the_second_shard)
    with pytest.raises(KeyboardInterrupt):
        prep(src, out)
    ctx.monkeypatch.undo()
    assert (out / P.STATE).is_file() and not (out / "manifest.json").exists()
    with open(src / "part1.jsonl", "ab") as f:  # the source gains documents meanwhile
        f.write(sample_lines(ctx, 40, 3))
    with pytest.raises(FwlabError, match=r"the source changed since it was begun \(changed .*part1.jsonl\)"):
        prep(src, out)
    assert prep(src, out, overwrite=True)["docs"] == 15  # --overwrite starts over


@case("prepare on a complete folder whose source folder gained a file")
def _(ctx):
    src, out = source_dir(ctx), ctx.tmp / "data"
    prep(src, out)
    (src / "part9.jsonl").write_bytes(sample_lines(ctx, 30, 4))
    with pytest.raises(FwlabError, match=r"the source changed since it was prepared \(added .*part9.jsonl\)"):
        prep(src, out)
    ctx.capsys.readouterr()
    assert "already complete" not in ctx.capsys.readouterr().out


@case("unsupported files and a sub-folder inside a source folder")
def _(ctx):
    src, out = source_dir(ctx), ctx.tmp / "data"
    (src / "table.csv").write_text("a,b\n")
    (src / "more.txt.gz").write_bytes(b"\x1f\x8b")
    (src / "sub").mkdir()
    (src / "sub" / "x.jsonl").write_bytes(sample_lines(ctx, 30, 2))
    os.mkfifo(src / "pipe")
    ctx.capsys.readouterr()
    m = prep(src, out)
    err = ctx.capsys.readouterr().err
    assert "skipped 4 entries" in err
    for name, why in (("table.csv", "unsupported type"), ("more.txt.gz", "unsupported type"),
                      ("sub", "a folder"), ("pipe", "not a regular file")):
        assert f"{name} ({why}" in err, err
    assert sorted(os.path.basename(s["path"]) for s in m["skipped"]) == ["more.txt.gz", "pipe", "sub", "table.csv"]


@case("a FIFO as the prepare source")
def _(ctx):
    os.mkfifo(ctx.tmp / "docs.jsonl")
    with pytest.raises(FwlabError, match="not a regular file"):
        prep(ctx.tmp / "docs.jsonl", ctx.tmp / "data")


@case("prepare of a single huge document")
def _(ctx):
    (ctx.tmp / "book.txt").write_text("A long book about nothing much. " * 2000)
    with pytest.raises(FwlabError, match="single document") as e:
        prep(ctx.tmp / "book.txt", ctx.tmp / "data")
    assert "--val-tokens" not in str(e.value)


@case("prepare with too large --val-tokens names the value that works")
def _(ctx):
    src = source_dir(ctx, files=1, per_file=3)
    with pytest.raises(FwlabError, match=r"lower --val-tokens to at most [\d,]+"):
        prep(src, ctx.tmp / "data", val_tokens=10**7)


@case("disk full while prepare writes a shard")
def _(ctx):
    from fwlab.prepare import STATE
    src, out = source_dir(ctx), ctx.tmp / "data"
    fail_writes(ctx, ".train_000001.bin")
    with pytest.raises(FwlabError, match=r"cannot write .*train_000001.bin: (No space left on device|"
                                         r"short write).*checkpoint in .* is kept"):
        prep(src, out)
    assert (out / STATE).is_file()
    ctx.monkeypatch.undo()
    again = prep(src, out)  # resumes once there is room
    assert again == prep(src, ctx.tmp / "fresh") | {"source_fingerprint": again["source_fingerprint"]}


@case("prepare --out under a file")
def _(ctx):
    (ctx.tmp / "f").write_text("x")
    rc, out = fwlab(ctx, "prepare", "--source", ctx.lab.source, "--out", ctx.tmp / "f" / "data",
                    "--max-tokens", "5000", "--val-tokens", "500", "--workers", "1")
    assert rc == 2 and "cannot create it" in out and "Traceback" not in out


# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, lab, tmp_path, capsys, monkeypatch):
    CASES[name](types.SimpleNamespace(lab=lab, tmp=tmp_path, capsys=capsys, monkeypatch=monkeypatch))
