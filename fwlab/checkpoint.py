"""Checkpoints: one file per saved iteration, RUN/ckpt/ckpt_0001000.pt.

A checkpoint holds only tensors and plain containers (so `torch.load(weights_only=True)` reads it,
and a checkpoint from anywhere cannot run code): model and optimizer state, the loader position,
every RNG state, the iteration, and the run's config. Written to a temporary name and renamed, so a
kill mid-save leaves the previous checkpoints intact and no torn file under a final name.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import torch

from fwlab.errors import FwlabError, WriteError, os_problem
from fwlab.model import GPT, GPTConfig
from fwlab.utils import atomic_open

FORMAT = "fwlab-ckpt-1"
_NAME = re.compile(r"^ckpt_(\d+)\.pt$")


def ckpt_dir(run_dir) -> Path:
    return Path(run_dir) / "ckpt"


def ckpt_path(run_dir, it: int) -> Path:
    return ckpt_dir(run_dir) / f"ckpt_{it:07d}.pt"


def list_checkpoints(run_dir) -> dict[int, Path]:
    """{iteration: path} of the complete checkpoints of a run, oldest first."""
    d = ckpt_dir(run_dir)
    if not d.is_dir():
        return {}
    found = {int(m.group(1)): d / n for n in os.listdir(d) if (m := _NAME.match(n))}
    return dict(sorted(found.items()))


def save_checkpoint(run_dir, it: int, state: dict) -> Path:
    """Atomically write `state` (must include model/optimizer/iter) as the checkpoint of `it`."""
    path = ckpt_path(run_dir, it)
    try:
        with atomic_open(path) as f:
            torch.save({"format": FORMAT, "iter": it, **state}, f)
    except (RuntimeError, WriteError) as e:  # torch: "enforce fail at inline_container.cc"
        problem = e.problem if isinstance(e, WriteError) else os_problem(e)
        raise WriteError(f"cannot write checkpoint {path}: {problem}; the earlier checkpoints "
                         f"in {path.parent} are intact", problem) from None
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a checkpoint with weights_only=True; FwlabError if it is missing, truncated, or not
    fwlab's."""
    path = Path(path)
    if not path.is_file():
        raise FwlabError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():  # torch's warnings about foreign pickles, not ours
            warnings.simplefilter("ignore")
            ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickle with code in it, random bytes...
        raise FwlabError(f"{path}: not a readable fwlab checkpoint ({_reason(e)}); it is corrupt "
                         "or was not written by fwlab; do not unpickle it by other means, which "
                         "could run code it holds") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT or "model" not in ck:
        raise FwlabError(f"{path}: not an fwlab checkpoint (expected format {FORMAT!r})")
    return ck


def _reason(e: Exception) -> str:
    """Why torch.load refused a file, without torch's advice to retry with weights_only=False
    (which runs arbitrary code): the line naming the cause, else the exception type."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    advice = ("weights_only", "torch.load", "pytorch", "please file an issue", "check the documentation")
    useful = [ln for ln in lines if not any(a in ln.lower() for a in advice)]
    return f"{type(e).__name__}: {useful[0]}" if useful else type(e).__name__


def resolve_checkpoint(run_dir, it: int | None = None) -> Path:
    """The checkpoint of iteration `it` of a run, or its newest one."""
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise FwlabError(f"{run_dir}: no checkpoints in {ckpt_dir(run_dir)}")
    if it is None:
        return ckpts[max(ckpts)]
    if it not in ckpts:
        raise FwlabError(f"{run_dir}: no checkpoint at iteration {it}; "
                         f"available: {', '.join(map(str, ckpts))}")
    return ckpts[it]


def load_model(run_dir, it: int | None = None, device="cpu") -> tuple[GPT, dict]:
    """The run's GPT with the weights of checkpoint `it` (default: newest), in eval mode, and the
    checkpoint dict (minus the model and optimizer states) with `path`: the file the weights came
    from (resolved once, so a checkpoint saved meanwhile by a running run cannot be named instead)."""
    path = resolve_checkpoint(run_dir, it)
    ck = load_checkpoint(path, map_location=device)
    model = GPT(GPTConfig(**ck["model_config"]))
    sd = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in ck["model"].items()}
    model.load_state_dict(sd)
    model.to(device).eval()
    meta = {k: v for k, v in ck.items() if k not in ("model", "optimizer")}
    meta["path"] = str(path)
    return model, meta
