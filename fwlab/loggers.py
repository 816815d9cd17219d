"""Optional experiment loggers: `fwlab train --log-to tensorboard,wandb` (TrainConfig.log_to).

Each logger receives exactly the records metrics.jsonl gets (one dict per line, with "kind" and
"iter") and writes every numeric field of it as a scalar named KIND/FIELD (train/train_loss,
train/lr, eval/val_loss, ...) at step `iter`. metrics.jsonl stays the record everything downstream
reads; these are views of it for people used to their dashboards. Only rank 0 logs.

  tensorboard  event files in RUN/tensorboard/ (torch.utils.tensorboard; `pip install
               'fwlab[tensorboard]'`), viewed with `tensorboard --logdir RUN/tensorboard`. A
               resumed run purges the events past its checkpoint, as metrics.jsonl drops its lines.
  wandb        a Weights & Biases run in RUN/wandb/ (`pip install 'fwlab[wandb]'`), offline unless
               WANDB_MODE says otherwise, so nothing leaves the machine: `wandb sync
               RUN/wandb/offline-run-*` uploads it later. Project: WANDB_PROJECT, default fwlab; name:
               the run directory's; id: fixed by the run directory's path, so sessions of one run
               share it.

Neither package is a dependency of fwlab: asking for a logger whose package is missing is a
FwlabError naming the extra to install, raised before the run directory is written to.
"""
from __future__ import annotations

import hashlib
import importlib
import math
import numbers
import os
from pathlib import Path

from fwlab.errors import FwlabError

# logger name -> (the module it imports, the pip package, the fwlab extra that installs it)
LOGGERS = {"tensorboard": ("torch.utils.tensorboard", "tensorboard", "tensorboard"),
           "wandb": ("wandb", "wandb", "wandb")}


def parse_log_to(spec: str) -> list[str]:
    """'tensorboard, wandb' -> ['tensorboard', 'wandb'] (each once); FwlabError for another name."""
    names: list[str] = []
    for part in str(spec or "").split(","):
        name = part.strip().lower()
        if not name:
            continue
        if name not in LOGGERS:
            raise FwlabError(f"log_to={spec!r}: unknown logger {name!r}; choose from "
                             f"{', '.join(LOGGERS)} (comma-separated)")
        if name not in names:
            names.append(name)
    return names


def require(name: str):
    """The module logger `name` writes with; FwlabError naming the extra when it is missing."""
    module, package, extra = LOGGERS[name]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise FwlabError(f"--log-to {name}: the {package} package is not installed; install it "
                         f"with pip install 'fwlab[{extra}]' (or pip install {package}), or drop "
                         f"{name} from --log-to") from None


def scalars(record: dict) -> dict[str, float]:
    """A metrics.jsonl record's numeric fields as {KIND/FIELD: value} (iter is the step; text,
    booleans, nulls and non-finite values are left out)."""
    kind = record.get("kind", "metrics")
    return {f"{kind}/{k}": float(v) for k, v in record.items()
            if k not in ("kind", "iter") and isinstance(v, numbers.Real)
            and not isinstance(v, bool) and math.isfinite(v)}


class _TensorBoard:
    def __init__(self, run: Path, conf: dict, start: int):
        tb = require("tensorboard")
        # purge_step: events at steps >= it, left by a session killed after its last checkpoint,
        # are dropped, so the curves show what metrics.jsonl keeps
        self.writer = tb.SummaryWriter(log_dir=str(run / "tensorboard"),
                                       purge_step=start + 1 if start else None)
        if not start:
            self.writer.add_text("config", "\n".join(f"    {k}: {v!r}" for k, v in conf.items()), 0)

    def log(self, record: dict) -> None:
        for key, value in scalars(record).items():
            self.writer.add_scalar(key, value, int(record["iter"]))

    def close(self) -> None:
        self.writer.close()


class _Wandb:
    def __init__(self, run: Path, conf: dict, start: int):
        wandb = require("wandb")
        run_id = hashlib.sha256(str(run.resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "fwlab"), name=run.name,
                              id=run_id, dir=str(run), config=conf, resume="allow",
                              mode=os.environ.get("WANDB_MODE", "offline"))

    def log(self, record: dict) -> None:
        self.run.log(scalars(record), step=int(record["iter"]))

    def close(self) -> None:
        self.run.finish()


_CLASSES = {"tensorboard": _TensorBoard, "wandb": _Wandb}


class Loggers:
    """The loggers of TrainConfig.log_to for one training session of RUN (none for an empty
    spec). `check` (before anything is written) imports their packages; `open` starts them."""

    def __init__(self, spec: str):
        self.names = parse_log_to(spec)
        self._open: list = []

    def check(self) -> "Loggers":
        for name in self.names:
            require(name)
        return self

    def open(self, run: Path, conf: dict, start: int) -> "Loggers":
        """Start every logger for RUN, whose session begins after iteration `start`."""
        self._open = [_CLASSES[name](Path(run), conf, start) for name in self.names]
        return self

    def log(self, record: dict) -> None:
        for logger in self._open:
            logger.log(record)

    def close(self) -> None:
        for logger in self._open:
            logger.close()
        self._open = []
