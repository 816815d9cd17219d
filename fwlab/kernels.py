"""The Jupyter kernel provisioner of fwlab's kernelspec: kernels whose sockets are encrypted.

A kernel started over TCP without CurveZMQ keys warns "Kernel is running over TCP without
encryption" on every start: in JupyterLab's log, and in every `papermill notebooks/02_train.ipynb
...` a person types (papermill's command reads no Jupyter config, so only the kernelspec can change
what its kernel manager does). jupyter_client provisions the keys when the manager's
`transport_encryption` is "auto" and the kernelspec declares `supported_encryption: ["curve"]`
(ipykernel's does); its default is "disabled". This provisioner is jupyter_client's local one with
"auto" as the default, for every client that starts the kernel: papermill, JupyterLab, nbconvert.

`make` registers the venv's "python3" kernelspec with it (kernel_provisioner in kernel.json; the
entry point `fwlab-local` is in pyproject.toml). fwlab's own papermill runs (sweep, report) pass
utils.kernel_config() as well, so they are quiet with any kernelspec.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import zmq
from jupyter_client.provisioning import LocalProvisioner

from fwlab.utils import atomic_write_text, read_json

NAME = "fwlab-local"  # the entry point's name (pyproject.toml), which kernel.json names


class EncryptedLocalProvisioner(LocalProvisioner):
    """jupyter_client's LocalProvisioner with transport_encryption "auto" where the manager has
    jupyter_client's default, "disabled" ("required" stays required)."""

    async def pre_launch(self, **kwargs):
        if zmq.has("curve") and getattr(self.parent, "transport_encryption", "disabled") == "disabled":
            kwargs.setdefault("transport_encryption", "auto")
        return await super().pre_launch(**kwargs)


def register_kernelspec(kernel_json: str) -> None:
    """Name this provisioner in an installed kernelspec's kernel.json (what `make` runs after
    `ipykernel install`: python -m fwlab.kernels KERNEL_JSON)."""
    p = Path(kernel_json)
    spec = read_json(p)
    spec.setdefault("metadata", {})["kernel_provisioner"] = {"provisioner_name": NAME, "config": {}}
    atomic_write_text(p, json.dumps(spec, indent=1) + "\n")


if __name__ == "__main__":
    register_kernelspec(sys.argv[1])
