"""Atomic file writes, and the checks that tell before any work whether an output can be written.

Every file pdasgd writes goes to a temporary name in the same folder first and is then renamed over the
target, so an interrupted run never leaves a half-written trace, scenario or report behind, and a file that
was there before survives a failed write. Temporary names carry the writing process's id,
`.<name>.<pid>.<random>.tmp`: a write removes the temporaries of its target that a process no longer
alive left (a run killed with `kill -9` in the middle of a write), so they do not pile up. Files are created
with the permissions the umask allows (0666 minus the umask), as `open` would, not mkstemp's 0600.

`writable_folder(path)` says whether files can be created in a folder or, if it does not exist yet, in
the nearest folder above it that does: it tries, with a temporary file it removes at once (`os.access`
says yes to root even where nothing can be created, e.g. under /proc).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()  # read once, at import, while no other thread creates files
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.tmp$")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file and a rename; return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o666 & ~UMASK)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically; return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove the temporaries of `target` whose writing process is gone; return what was removed."""
    removed = []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = TEMPORARY.match(entry.name)
        if match and match["name"] == target.name and not _alive(int(match["pid"])):
            try:
                entry.unlink()
                removed.append(entry)
            except OSError:
                pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid < 2**22  # another user's process (or a pid no process can have)
    return True


def nearest_existing(path: Path) -> Path:
    """`path` itself if it exists, else the nearest folder above it that does."""
    current = path
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def writable_folder(folder: Path) -> str | None:
    """None when files can be created in `folder` (or where it would be created), else why not."""
    existing = nearest_existing(folder.absolute())
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=".pdasgd-probe.", dir=existing)
    except OSError as error:
        return f"cannot create files in {existing} ({error.strerror or error})"
    os.close(fd)
    os.unlink(probe)
    return None
