"""Setup and kernels are quiet: no unencrypted-TCP warning from a kernel that `papermill` (the
command a person types, which reads no Jupyter config) starts with fwlab's kernelspec, an SPDX
licence string, fwlab installed once by make."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat

from fwlab import kernels

REPO = Path(__file__).resolve().parents[1]
WARNING = "without encryption"


def _kernelspec(root: Path, provisioner: bool) -> Path:
    """A "python3" kernelspec as `make` registers it (ipykernel's, then fwlab.kernels), in a
    JUPYTER_PATH folder, and an entry point for the provisioner as pyproject.toml declares it."""
    spec = root / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-Xfrozen_modules=off", "-m", "ipykernel_launcher", "-f",
                 "{connection_file}"],
        "display_name": "Python 3 (fwlab)", "language": "python",
        "metadata": {"debugger": True, "supported_encryption": ["curve"]}}))
    if provisioner:
        kernels.register_kernelspec(str(spec / "kernel.json"))
        ep = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
        group = "jupyter_client.kernel_provisioners"
        dist = root / "site" / "fwlab_test_entry_points-0.dist-info"
        dist.mkdir(parents=True)
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fwlab-test-entry-points\n"
                                       "Version: 0\n")
        (dist / "entry_points.txt").write_text(
            f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in ep[group].items()))
    return root


def _papermill_cli(root: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "one.ipynb")
    env = dict(os.environ, JUPYTER_PATH=str(root / "jupyter"),
               PYTHONPATH=os.pathsep.join([str(REPO), str(root / "site")]))
    return subprocess.run([sys.executable, "-m", "papermill", str(tmp_path / "one.ipynb"),
                           str(tmp_path / "out.ipynb")], env=env, capture_output=True, text=True,
                          timeout=180)


def test_the_papermill_command_starts_fwlabs_kernel_without_the_tcp_warning(tmp_path):
    plain = _papermill_cli(_kernelspec(tmp_path / "plain", provisioner=False), tmp_path)
    assert plain.returncode == 0 and WARNING in plain.stderr  # what it was before
    spec = json.loads((_kernelspec(tmp_path / "fwlab", provisioner=True) / "jupyter" / "kernels"
                       / "python3" / "kernel.json").read_text())
    assert spec["metadata"]["kernel_provisioner"]["provisioner_name"] == kernels.NAME
    quiet = _papermill_cli(tmp_path / "fwlab", tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert WARNING not in quiet.stderr, quiet.stderr


def test_make_registers_the_provisioner_and_installs_fwlab_once():
    make = (REPO / "Makefile").read_text()
    assert "-m fwlab.kernels $(KERNEL_JSON)" in make
    assert "kernels/python3/kernel.json" in make
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    group = pyproject["project"]["entry-points"]["jupyter_client.kernel_provisioners"]
    assert group == {kernels.NAME: "fwlab.kernels:EncryptedLocalProvisioner"}
    # fwlab is installed by requirements.txt's one `-e .` line, and by nothing else in the Makefile
    reqs = [ln.strip() for ln in (REPO / "requirements.txt").read_text().splitlines()]
    assert sum(bool(re.match(r"-e\s+\.", ln)) for ln in reqs) == 1
    assert not re.search(r"pip install[^\n]*(\s-e)?\s+\.(\[|\s|$)", make)


def test_the_licence_is_an_spdx_string():
    """project.license as a table is deprecated by setuptools >= 77 (a warning on every build)."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "MIT"
    req = pyproject["build-system"]["requires"]
    assert any(re.fullmatch(r"setuptools>=(\d+)", r) and int(r.split(">=")[1]) >= 77 for r in req)
