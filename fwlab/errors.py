"""The one exception type for mistakes a user can make (bad input, bad flag, missing file).

The CLI prints these as a single line without a traceback; anything else is a bug and keeps its
traceback.
"""

import errno


class FwlabError(Exception):
    """A problem the user can fix; the message names the file, line or value and says what to do."""


class WriteError(FwlabError):
    """A file could not be written (disk full, no permission, a read-only filesystem, a parent
    that is a file): the message names the path and the problem, and what was already written
    stays as it was, so the same command can be re-run once the problem is fixed. `problem`: the
    cause alone ('No space left on device')."""

    def __init__(self, message: str, problem: str = ""):
        super().__init__(message)
        self.problem = problem or message


def os_problem(e: BaseException) -> str:
    """What went wrong in an OSError, in words ('No space left on device', ...)."""
    if isinstance(e, OSError) and e.errno in (errno.EEXIST, errno.ENOTDIR) and e.filename:
        # mkdir under a file says "File exists" / "Not a directory": name the file in the way
        from pathlib import Path
        p = Path(e.filename)
        blocker = next((d for d in (p, *p.parents) if d.exists()), None)
        if blocker is not None and not blocker.is_dir():
            return f"not a folder: {blocker} is a file"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "requested and" in text and "written" in text:  # numpy's short write
        return f"short write, the disk is probably full ({text})"
    if "inline_container" in text or "file write failed" in text:  # torch.save's short write
        return "the write failed, the disk is probably full"
    return text


def os_where(e: OSError, out) -> str:
    """The path an OSError names while writing `out` through a temporary file beside it (named
    `.OUTNAME.*`): that file's folder, which is what the user knows, else the path itself."""
    from pathlib import Path
    out = Path(out)
    if not e.filename:
        return str(out.parent)
    p = Path(e.filename)
    return str(p.parent) if p.name.startswith(f".{out.name}.") else str(p)
