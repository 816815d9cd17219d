"""Records: which code made a result. Every run's config.json and every sweep.json carry
`code_record()`, so a number can be traced to the source that produced it (as modded-nanogpt's
records embed theirs).

    fwlab_version  the package version
    git_commit     HEAD of the checkout fwlab was imported from (None for an installed package)
    git_dirty      whether that checkout had changes against HEAD (tracked or untracked files)
    git_diff_sha256  sha256 of those changes (`git diff HEAD --binary` plus each untracked file's
                   name and bytes): two runs with the same commit and hash ran the same code
"""
from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path

from fwlab import __version__

_ROOT = Path(__file__).resolve().parents[1]  # the checkout, when fwlab is not installed


def _git(*args: str) -> bytes | None:
    try:
        r = subprocess.run(["git", "-C", str(_ROOT), *args], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def code_record() -> dict:
    """dict(fwlab_version, git_commit, git_dirty, git_diff_sha256) (module docstring); computed
    once per process. Outside a git checkout of fwlab the git fields are None."""
    out = dict(fwlab_version=__version__, git_commit=None, git_dirty=None, git_diff_sha256=None)
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top.decode().strip()).resolve() != _ROOT:
        return out  # an installed package (or a checkout of something else around it)
    head = _git("rev-parse", "HEAD")
    if head is None:
        return out
    diff = _git("diff", "HEAD", "--binary") or b""
    untracked = (_git("ls-files", "--others", "--exclude-standard", "-z") or b"").split(b"\0")
    h = hashlib.sha256(diff)
    for name in sorted(n for n in untracked if n):
        h.update(b"\0" + name + b"\0")
        try:
            h.update((_ROOT / name.decode()).read_bytes())
        except OSError:
            pass
    dirty = bool(diff) or any(untracked)
    out.update(git_commit=head.decode().strip(), git_dirty=dirty,
               git_diff_sha256=h.hexdigest() if dirty else None)
    return out
