"""Where rejected documents go: gzipped JSONL per rank, the reason in `metadata.filter_reason`."""

from __future__ import annotations

import os
import posixpath

from datatrove.pipeline.writers import JsonlWriter


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


def exclusion_writer(folder: str):
    """A datatrove writer for a stage's rejected documents (pass it to `BaseFilter(exclusion_writer=...)`)."""
    return AtomicJsonlWriter(folder, output_filename="${rank}.jsonl.gz")
