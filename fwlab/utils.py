"""Small shared helpers: atomic file writes, JSON lines, the path rule, parsing counts and numbers,
formatting token counts."""
from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

from fwlab.errors import FwlabError, WriteError, os_problem


UMASK = os.umask(0)  # read once at import: setting it to read it is not thread-safe
os.umask(UMASK)


def _tmp_for(path: Path) -> Path:
    # same directory so os.replace is an atomic rename on the same filesystem; mkstemp makes the
    # file 0600, so give it the permissions a plain open() would have
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~UMASK)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike):
    """Open a temporary file beside `path` for binary writing; when the block ends without an
    error it is flushed, fsynced and renamed to `path`, so readers never see half a file. On an
    error (or a kill) the final name is untouched and the temporary file is removed where possible."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_for(path)
    except OSError as e:
        where, problem = e.filename or path.parent, os_problem(e)
        blocker = next((d for d in path.parents if d.exists() or d.is_symlink()), None)
        if blocker is not None and not blocker.is_dir():  # mkdir's "File exists" says too little
            where, problem = blocker, "is a file, not a folder"
        raise WriteError(f"cannot write {path}: {where}: {problem}; nothing was written",
                         f"{where}: {problem}") from None
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):  # disk full, quota, I/O error while writing the temporary file
            raise WriteError(f"cannot write {path}: {os_problem(e)}; "
                             + ("the file there is unchanged" if path.exists() else
                                "no partial file was left"), os_problem(e)) from None
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` via a temporary file + rename: readers never see half a file."""
    with atomic_open(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Pretty, key-sorted JSON so the same object always gives the same bytes."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FwlabError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise FwlabError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None


def iter_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Yield the JSON objects of a .jsonl file; a torn last line (a crash mid-write) is skipped."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for i, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines):  # only the very last line may be torn by a kill
                return
            raise FwlabError(f"{path}:{i}: not valid JSON") from None


def parse_count(value, name: str = "value") -> int:
    """A whole number >= 0 from an int or from text such as "3680000000", "3.68e9", "100_000_000",
    " 42 " or "200.0" (a float that is whole counts too). Anything else raises FwlabError naming
    `name` and the value: text that is no number, a fraction, inf or nan, a negative number, a bool.

    The one parser behind every count fwlab reads from a user (token counts, iteration lists,
    integer flags and notebook parameters), so they all accept and refuse the same things."""
    where = f"{name}: " if name else ""  # argparse names the flag itself
    if isinstance(value, bool):  # True is an int to Python, but never a count
        raise FwlabError(f"{where}{value!r} is not a number")
    if isinstance(value, numbers.Integral):  # int and numpy integers
        n = int(value)
    else:
        text = str(value).strip()
        try:
            n = int(text)  # exact however large; "100_000" too
        except ValueError:
            try:
                f = float(text)  # "3.68e9", "1e6", "200.0"
            except ValueError:
                raise FwlabError(f"{where}{value!r} is not a number (e.g. 10000000, 1e7 or "
                                 f"10_000_000)") from None
            if not f.is_integer():  # false for fractions, inf and nan alike
                raise FwlabError(f"{where}{value!r} is not a whole number")
            n = int(f)
    if n < 0:
        raise FwlabError(f"{where}{value!r} must not be negative")
    return n


def strip_ansi(s: str) -> str:
    """Text without terminal colour codes (tracebacks from a Jupyter kernel carry them)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", s)


def jsonl_line(obj: dict) -> str:
    """One JSON object as a metrics.jsonl line (sorted keys, newline-terminated)."""
    return json.dumps(obj, sort_keys=True) + "\n"


def append_jsonl(f, obj: dict) -> None:
    """Append one JSON object as a line to an open text file and flush it to disk."""
    f.write(jsonl_line(obj))
    f.flush()


# --- the path rule -------------------------------------------------------------------------------
def repository_root(start: str | os.PathLike | None = None) -> Path | None:
    """The git repository the directory `start` (default: the current one) lies in: the nearest
    ancestor holding `.git` (a folder, or a file in a worktree); None outside any repository."""
    here = Path(start or os.getcwd()).resolve()
    for d in (here, *here.parents):
        if (d / ".git").exists():
            return d
    return None


def resolve_path(path: str | os.PathLike) -> Path:
    """fwlab's one rule for a path a user gives, in every command and notebook: an absolute path
    as it is; a relative one from the repository root (so `results/demo/data` means the same from
    a notebook that JupyterLab runs in notebooks/ as from a shell at the root), or from the current
    directory when that is not inside a repository. Returns the absolute path, which is what error
    messages then name."""
    p = Path(os.path.expanduser(str(path)))
    if not p.is_absolute():
        p = (repository_root() or Path.cwd().resolve()) / p
    return Path(os.path.normpath(p))  # "../shared/x" is named as the folder it means


def asset(*parts: str) -> Path:
    """A file fwlab ships beside its code: notebooks/…, examples/…. Inside an installed package
    they are package data (fwlab/notebooks/, fwlab/examples/; see pyproject.toml); in a checkout
    they sit at the repository root, beside fwlab/."""
    here = Path(__file__).resolve().parent
    for base in (here, here.parent):
        if base.joinpath(*parts).exists():
            return base.joinpath(*parts)
    return here.parent.joinpath(*parts)  # where a checkout has it: what an error then names


# --- numbers from users --------------------------------------------------------------------------
def parse_number(value, name: str = "value", positive: bool = False) -> float:
    """A finite number from a flag, a notebook parameter or a YAML value ("3.68e9", "524_288",
    "524,288", 0.3); `positive`: it must be > 0. FwlabError naming `name` and the value otherwise.
    The one parser behind plan's and check-claims' numbers (counts: parse_count)."""
    if isinstance(value, bool):
        raise FwlabError(f"{name} {value!r}: not a number (e.g. 3.68e9)")
    try:
        v = float(str(value).replace("_", "").replace(",", ""))  # YAML reads 3.68e9 as a string
    except (TypeError, ValueError):
        raise FwlabError(f"{name} {value!r}: not a number (e.g. 3.68e9)") from None
    if not math.isfinite(v):
        raise FwlabError(f"{name} {value!r}: must be a finite number")
    if positive and not v > 0:
        raise FwlabError(f"{name} {value!r}: must be positive")
    return v


def fmt_tokens(n) -> str:
    """A token count for reading: 3.68B, 524k, 42; "–" when there is none."""
    try:
        if n is None or n != n:  # None and NaN
            return "–"
    except TypeError:  # pandas' NA has no truth value
        return "–"
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


# What an fwlab folder is, told by the file that only that kind of folder holds. Commands that
# write into or replace a folder (--out, --overwrite) read this so that they never replace, or
# write into, a folder of another kind: a run, a sweep or a data folder is never deleted.
_KINDS = (("sweep.json", "a sweep"), ("manifest.json", "a data folder"),
          (".prepare_state.npz", "a data folder being prepared"), ("final.json", "a run"),
          ("metrics.jsonl", "a run"), ("ckpt", "a run"), ("fwlab_export.json", "an export"))


def folder_kind(path: str | os.PathLike) -> str | None:
    """'a run', 'a sweep', 'a data folder', 'a data folder being prepared', 'an export' or None."""
    p = Path(path)
    if not p.is_dir():
        return None
    for name, kind in _KINDS:
        if (p / name).exists():
            return kind
    return None


def fwlab_inside(path: str | os.PathLike) -> tuple[Path, str] | None:
    """(folder, kind) of the first run, sweep, data folder or export at or below `path`
    (symlinks are not followed), else None."""
    for root, dirs, _ in os.walk(path):
        kind = folder_kind(root)
        if kind:
            return Path(root), kind
        dirs.sort()
    return None


def kernel_config():
    """The traitlets config under which fwlab's papermill runs start their Jupyter kernels: over
    local IPC sockets (POSIX), or with the CurveZMQ keys jupyter_client provisions for kernelspecs
    that declare support, so the kernel never warns that it runs over TCP without encryption."""
    from traitlets.config import Config
    if os.name == "posix":
        return Config({"KernelManager": {"transport": "ipc"}})
    import zmq
    return Config({"KernelManager": {"transport_encryption": "auto"}}) if zmq.has("curve") else Config()
