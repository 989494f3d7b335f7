"""Where rejected documents go: gzipped JSONL per rank, the reason in `metadata.filter_reason`.

A rejected record may hold anything its reader produced (a parquet binary column, a decimal, a timestamp, an integer
beyond 64 bits, a lone surrogate from invalid UTF-8): the writer stores a JSON-safe copy, so writing an exclusion never
fails. Bytes become `{"$base64": "<base64>"}`, dates and times ISO 8601 strings, decimals, durations and other values
their `str()`, non-string keys strings, invalid Unicode is replaced.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import os
import posixpath
from typing import Any

from datatrove.data import Document
from datatrove.pipeline.writers import JsonlWriter

_INT_RANGE = (-(1 << 63), 1 << 64)  # what orjson writes as a number


def _safe_str(text: str) -> str:
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:  # lone surrogates (text decoded with surrogateescape)
        return text.encode("utf-8", "replace").decode("utf-8")


def json_safe(value: Any) -> Any:
    """A copy of `value` that orjson can always write (see the module docstring)."""
    if value is None or isinstance(value, bool):
        return bool(value) if value is not None else None
    if isinstance(value, str):
        return _safe_str(str(value))
    if isinstance(value, int):
        return int(value) if _INT_RANGE[0] <= value < _INT_RANGE[1] else str(value)
    if isinstance(value, float):
        return float(value)  # orjson writes NaN and infinities as null
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {_safe_str(k) if isinstance(k, str) else str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return _safe_str(str(value))


class AtomicJsonlWriter(JsonlWriter):
    """datatrove's JsonlWriter, but each file is written under a temporary name (`.NAME.tmp-PID`) and renamed when
    the task closes it: a task killed mid-write leaves no partial file under the final name, and two attempts at
    one task (a dask retry beside a straggler) never write into the same file."""

    def _get_output_file_with_retry(self, output_filename: str):
        self._pending = getattr(self, "_pending", {})
        if output_filename not in self._pending:
            head, name = posixpath.split(output_filename)
            self._pending[output_filename] = posixpath.join(head, f".{name}.tmp-{os.getpid()}")
        return self.output_mg.get_file(self._pending[output_filename])

    def close(self):
        super().close()
        for final, tmp in getattr(self, "_pending", {}).items():
            self.output_folder.mv(tmp, final)
        self._pending = {}


class ExclusionWriter(AtomicJsonlWriter):
    """datatrove's JsonlWriter over JSON-safe copies of the rejected documents, gzipped at level 1 (fsspec's gzip
    takes level 9, ~4% of a filter run's time when dedup drops a third of the documents)."""

    name = "🗑 exclusions"

    def __init__(self, output_folder, output_filename: str):
        super().__init__(output_folder, output_filename=output_filename, compression=None)
        self._gzipped: dict[str, gzip.GzipFile] = {}

    def _get_output_file_with_retry(self, output_filename: str):
        if output_filename not in self._gzipped:
            raw = super()._get_output_file_with_retry(output_filename)
            self._gzipped[output_filename] = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1)
        return self._gzipped[output_filename]

    def close(self):
        for f in self._gzipped.values():  # the gzip trailer, before the files themselves close
            f.close()
        self._gzipped = {}
        super().close()

    def _default_adapter(self, document: Document) -> dict:
        if document.media:  # datatrove's adapter turns media dataclasses into dicts
            return json_safe(super()._default_adapter(document))
        # what that adapter gives for a document without media, with no deep copy first (json_safe copies)
        fields = {"text": document.text, "id": document.id, "metadata": document.metadata}
        return json_safe({key: value for key, value in fields.items() if value})


def exclusion_writer(folder: str) -> ExclusionWriter:
    """A datatrove writer for a stage's rejected documents (pass it to `BaseFilter(exclusion_writer=...)`)."""
    return ExclusionWriter(folder, output_filename="${rank}.jsonl.gz")
