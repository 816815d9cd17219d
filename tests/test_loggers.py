"""`--log-to tensorboard,wandb`: the same metrics as metrics.jsonl, optional packages, clear errors.

The packages are optional extras (not in requirements.txt): the tests that read what they wrote
skip when they are absent; the missing-package error is tested by hiding the module.
"""
import glob
import json
import sys
from pathlib import Path

import pytest

import fwlab.train as T
from fwlab.config import TrainConfig
from fwlab.errors import FwlabError
from fwlab.loggers import Loggers, parse_log_to, scalars
from fwlab.utils import iter_jsonl


def cfg_for(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), preset="tiny", max_iters=3, tokens_per_iter=512,
                eval_interval=2, eval_tokens=1024, ckpt_interval=100, dtype="float32",
                compile=False, device="cpu", progress=False)
    return TrainConfig(**(base | kw))


def test_log_to_names_are_checked():
    assert parse_log_to("") == [] and parse_log_to(" TensorBoard , wandb,tensorboard") == [
        "tensorboard", "wandb"]
    with pytest.raises(FwlabError, match="unknown logger 'tensorbord'; choose from tensorboard, wandb"):
        parse_log_to("tensorbord")
    with pytest.raises(FwlabError, match="log_to='mlflow'"):
        cfg_for("d", "r", log_to="mlflow").validate()


def test_scalars_are_the_numeric_fields_of_a_record():
    rec = {"kind": "train", "iter": 5, "tokens": 2560, "lr": 6e-4, "train_loss": 3.5, "mfu": None,
           "flag": True, "text": "x", "bad": float("nan")}
    assert scalars(rec) == {"train/tokens": 2560.0, "train/lr": 6e-4, "train/train_loss": 3.5}


@pytest.mark.parametrize("name,module", [("tensorboard", "torch.utils.tensorboard"),
                                         ("wandb", "wandb")])
def test_a_missing_package_names_its_extra_before_anything_is_written(tiny_data, tmp_path,
                                                                      monkeypatch, name, module):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(FwlabError) as e:
        Loggers(name).check()
    assert f"pip install 'fwlab[{name}]'" in str(e.value) and f"--log-to {name}" in str(e.value)
    run = tmp_path / "run"
    with pytest.raises(FwlabError, match=rf"fwlab\[{name}\]"):
        T.train(cfg_for(tiny_data, run, log_to=name))
    assert not run.exists()  # no config.json, no empty run directory left behind


def _records(run) -> list[dict]:
    return list(iter_jsonl(Path(run) / "metrics.jsonl"))


def test_tensorboard_gets_every_metric_of_metrics_jsonl(tiny_data, tmp_path):
    pytest.importorskip("tensorboard", reason="optional extra: pip install 'fwlab[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run = tmp_path / "tb"
    T.train(cfg_for(tiny_data, run, log_to="tensorboard"))
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    want: dict[str, dict[int, float]] = {}
    for rec in _records(run):
        for key, v in scalars(rec).items():
            want.setdefault(key, {})[rec["iter"]] = v
    assert {"train/train_loss", "train/lr", "eval/val_loss", "eval/val_loss_stderr"} <= set(want)
    assert set(acc.Tags()["scalars"]) == set(want)
    for key, by_iter in want.items():
        got = {e.step: e.value for e in acc.Scalars(key)}
        assert got == pytest.approx(by_iter, rel=1e-6), key  # stored as float32
    assert sorted(want["eval/val_loss"]) == [0, 2, 3]


def test_wandb_logs_offline_into_the_run_directory(tiny_data, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="optional extra: pip install 'fwlab[wandb]'")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline is fwlab's default
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "wb"
    T.train(cfg_for(tiny_data, run, log_to="wandb"))
    files = glob.glob(str(run / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(files) == 1
    blob = Path(files[0]).read_bytes()
    # the run's records hold every metric's name and value as JSON text
    for rec in _records(run):
        for key, v in scalars(rec).items():
            if isinstance(rec[key.split("/", 1)[1]], float):
                assert key.encode() in blob and json.dumps(v).encode() in blob, key
