"""Folders reasonpipe owns: a marker file in every output and work folder, and one run at a time per folder.

- `claim(folder, kind)` creates a folder (or takes an empty one) and writes the marker `.reasonpipe` into it; a
  non-empty folder without the marker is refused: reasonpipe never writes into, cleans or deletes a folder it did
  not create (an output left by an older reasonpipe, holding only its own files, is recognised and marked).
- `remove_owned(path, owner)` is the only way reasonpipe deletes: `path` must lie inside `owner`, a marked folder.
- `RunLock(folders)` holds an exclusive `flock` on `FOLDER/.reasonpipe.lock` for each folder for the whole run; the
  file names the holder (pid, host, start time), so a second run says who is busy there. A lock file left by a run
  that died (SIGKILL, a lost node) is free for `flock` and is taken over with a message naming the dead run.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

MARKER = ".reasonpipe"
LOCK = ".reasonpipe.lock"
# what a run writes into an output folder (older outputs without a marker are recognised by these names)
OUTPUT_NAMES = {"index.json", "tokenizer.json", "shards", "shards-val", "samples", "exclusions", ".work", MARKER, LOCK}


class FolderError(Exception):
    """A folder reasonpipe must not use (not its own, a file, ...); names the folder and what to do."""


class LockBusy(Exception):
    """Another run holds the lock of a folder this run needs."""


def is_ours(folder: str | Path) -> bool:
    return Path(folder, MARKER).is_file()


def _older_output(folder: Path) -> bool:
    """An output of a reasonpipe without markers: only reasonpipe's names, and an index.json that says so."""
    if not set(os.listdir(folder)) <= OUTPUT_NAMES:
        return False
    try:
        return "run_fingerprint" in json.loads((folder / "index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def _older_work(folder: Path) -> bool:
    return all(n.startswith(("prep-", "pack-")) or n in (MARKER, LOCK) for n in os.listdir(folder))


def refusal(folder: str | Path, kind: str) -> str | None:
    """Why `folder` cannot become (or be used as) a reasonpipe `kind` ("output" | "work") folder; None if it can."""
    folder = Path(folder)
    if not os.path.lexists(folder):
        return None
    if not folder.is_dir():
        return f"{folder} exists and is not a folder; choose a folder path"
    if is_ours(folder) or not os.listdir(folder):
        return None
    if (_older_output if kind == "output" else _older_work)(folder):
        return None
    return (
        f"{folder} is not empty and was not created by reasonpipe (no {MARKER} marker): reasonpipe never writes "
        "into or deletes such a folder; choose a new or empty folder"
    )


def claim(folder: str | Path, kind: str) -> None:
    """Create `folder` if needed and mark it as reasonpipe's `kind` folder; refuse one that is not ours."""
    if why := refusal(folder, kind):
        raise FolderError(why)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / MARKER
    if not marker.exists():
        info = {"kind": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "by": "reasonpipe"}
        tmp = folder / f"{MARKER}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(info) + "\n", encoding="utf-8")
        os.replace(tmp, marker)


def remove_owned(path: str | Path, owner: str | Path) -> None:
    """Delete `path` (a file or a folder) if it exists; it must lie strictly inside `owner`, a marked folder."""
    path, owner = Path(path), Path(owner)
    if not is_ours(owner):
        raise FolderError(f"refusing to delete {path}: {owner} has no {MARKER} marker (not created by reasonpipe)")
    if os.path.commonpath([os.path.abspath(path), os.path.abspath(owner)]) != os.path.abspath(owner) or path == owner:
        raise FolderError(f"refusing to delete {path}: it is not inside {owner}")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError):  # another user's process, or a lock file we cannot read
        return True
    return True


def _describe(holder: dict) -> str:
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"


class RunLock:
    """Exclusive locks on `folders` for one run (a context manager); `notes` says which stale locks it took over."""

    def __init__(self, folders: list[str | Path]):
        self.folders = sorted({str(Path(f)) for f in folders})
        self.fds: list[int] = []
        self.notes: list[str] = []

    def __enter__(self) -> RunLock:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        me["command"] = " ".join(sys.argv)
        try:
            for folder in self.folders:
                self._lock(os.path.join(folder, LOCK), me)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _lock(self, path: str, me: dict) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read(fd)
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            folder = os.path.dirname(path)
            who = _describe(holder) if holder else "another process"
            gone = holder and holder.get("host") == socket.gethostname() and not _alive(holder.get("pid"))
            extra = " (that run is gone, but its worker processes still hold the lock: stop them)" if gone else ""
            raise LockBusy(
                f"another reasonpipe run is using {folder}: {who}{extra}. Wait for it to finish (or stop it), "
                "then run again; two runs at once would corrupt the folder"
            ) from None
        previous = _read(fd)
        if previous:  # released locks are emptied: this one was held by a run that died
            folder = os.path.dirname(path)
            self.notes.append(f"took over the lock of {folder} left by a run that died ({_describe(previous)})")
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        self.fds.append(fd)

    def __exit__(self, *exc) -> None:
        for fd in self.fds:
            try:
                os.ftruncate(fd, 0)  # an empty lock file: released cleanly
            finally:
                os.close(fd)  # closing releases the flock
        self.fds = []


def _read(fd: int) -> dict | None:
    try:
        data = os.pread(fd, 4096, 0)
        return json.loads(data) if data.strip() else None
    except (OSError, ValueError):
        return {"pid": "?", "host": "?", "started": "?"}
