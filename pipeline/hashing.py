"""Content and code hashes for work keys (pipeline/workkeys.py).

File contents: `HashCache.file(path)` is the xxh3-128 digest of a file's bytes (fast and collision-safe enough to
notice edits; not a security hash). Hashing hundreds of GB on every `plan` would be too slow, so digests are memoised
by the file's (path, size, mtime_ns, inode) in `WORK/.hashes.json`: a file is read again only when that stat tuple
changes (an edit in place, a replacement at the same path, a touch). A file modified less than `RACY_SECONDS` before
it was hashed is not memoised: an edit within the filesystem's timestamp granularity could keep its stat tuple. Files
behind fsspec URLs are not read: their digest is their size and ETag / modification time as the store reports them.

Code versions: `code_version(*modules)` hashes the source of the given modules and of every reasonpipe module they
import (transitively, imports inside functions included), plus reasonpipe's version and the versions of the
libraries whose behaviour shapes the data (datatrove, tokenizers). Any edit to the code a stage runs therefore
re-runs that stage, with nothing to remember to bump. Modules of `reasonpipe.pipeline` are wiring (manifest schema,
DAG, CLI), so imports are not followed into them: a pipeline module counts only when it is itself named.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import time
from functools import cache
from pathlib import Path

import xxhash

HASH_CACHE = ".hashes.json"
RACY_SECONDS = 2.0
CHUNK = 1 << 22


def _read_digest(path: str) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


class HashCache:
    """Content digests of files and folders, memoised in `folder/.hashes.json` (see the module docstring).

    `folder=None` (or a folder that does not exist yet) keeps the memo in memory; `save()` writes it atomically.
    """

    def __init__(self, folder: str | None = None):
        self.path = os.path.join(folder, HASH_CACHE) if folder else None
        self.entries: dict[str, list] = {}
        self.hashed = 0  # files read this time (not memoised)
        if self.path and os.path.isfile(self.path):
            try:
                with open(self.path, encoding="utf-8") as f:
                    self.entries = json.load(f)
            except (OSError, ValueError):
                self.entries = {}  # a damaged memo is only a slower plan

    def file(self, path: str) -> str:
        """Digest of one file's content (a URL: of its size and ETag / mtime)."""
        if "://" in path and not path.startswith("file://"):
            return _remote_digest(path)
        path = os.path.abspath(path)
        st = os.stat(path)
        stat = [st.st_size, st.st_mtime_ns, st.st_ino]
        entry = self.entries.get(path)
        if entry and entry[:3] == stat:
            return entry[3]
        digest = _read_digest(path)
        self.hashed += 1
        if time.time() - st.st_mtime_ns / 1e9 >= RACY_SECONDS:
            self.entries[path] = stat + [digest]
        else:
            self.entries.pop(path, None)
        return digest

    def tree(self, path: str) -> dict[str, str]:
        """{relative path: digest} of every file under a folder (or {name: digest} of a single file)."""
        if not os.path.isdir(path):
            return {os.path.basename(path): self.file(path)}
        out = {}
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                out[os.path.relpath(full, path)] = self.file(full)
        return out

    def save(self) -> None:
        """Write the memo (entries of files that no longer exist are dropped)."""
        if not self.path or not os.path.isdir(os.path.dirname(self.path)):
            return
        entries = {p: e for p, e in self.entries.items() if os.path.exists(p)}
        tmp = f"{self.path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(entries, f)
        os.replace(tmp, self.path)


def _remote_digest(url: str) -> str:
    import fsspec

    fs, _, (path,) = fsspec.get_fs_token_paths(url)
    info = fs.info(path)
    tag = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or ""
    return f"remote:{info.get('size')}:{tag}"


# code versions ---------------------------------------------------------------------------------------------------
LIBRARIES = ("datatrove", "tokenizers")


def _origin(module: str) -> str | None:
    """The source file of `module`; reasonpipe's own modules are found by path, without importing their packages."""
    if module == "reasonpipe" or module.startswith("reasonpipe."):
        import reasonpipe

        base = Path(reasonpipe.__file__).parent.joinpath(*module.split(".")[1:])
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return str(candidate)
        return None
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec and spec.origin and spec.origin.endswith(".py") else None


def _imports(source: str) -> set[str]:
    """reasonpipe modules a source file imports (anywhere in it); `from pkg import name` counts pkg.name if it is a
    module, else pkg."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("reasonpipe")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("reasonpipe"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if _origin(sub) else node.module)
    return found


@cache
def _module(name: str) -> tuple[str, frozenset[str]]:
    """(source digest, reasonpipe modules it imports) of one module; sources do not change within a process."""
    origin = _origin(name)
    if origin is None:
        raise ValueError(f"code_version: cannot find the source of module {name!r}")
    source = Path(origin).read_bytes()
    return hashlib.sha256(source).hexdigest(), frozenset(_imports(source.decode("utf-8")))


@cache
def _closure(roots: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(module, source digest) of `roots` and the reasonpipe modules they import, sorted."""
    seen: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen[name], deps = _module(name)
        for dep in deps:
            if dep.startswith("reasonpipe.pipeline.") and dep not in roots:
                continue  # wiring, see the module docstring
            todo.append(dep)
    return tuple(sorted(seen.items()))


def library_versions() -> dict[str, str]:
    from reasonpipe import __version__

    versions = {"reasonpipe": __version__}
    for lib in LIBRARIES:
        try:
            versions[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            versions[lib] = "absent"
    return versions


def code_version(*modules: str) -> str:
    """A digest of the code `modules` run (see the module docstring)."""
    return hashlib.sha256(json.dumps(_closure(tuple(sorted(modules)))).encode()).hexdigest()[:16]
