"""Small shared helpers: atomic file writes, JSON lines, environment defaults, parsing counts."""
from __future__ import annotations

import contextlib
import json
import numbers
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

from fwlab.errors import FwlabError


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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_for(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
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


def kernel_config():
    """The traitlets config under which fwlab's papermill runs start their Jupyter kernels: over
    local IPC sockets (POSIX), or with the CurveZMQ keys jupyter_client provisions for kernelspecs
    that declare support, so the kernel never warns that it runs over TCP without encryption."""
    from traitlets.config import Config
    if os.name == "posix":
        return Config({"KernelManager": {"transport": "ipc"}})
    import zmq
    return Config({"KernelManager": {"transport_encryption": "auto"}}) if zmq.has("curve") else Config()
