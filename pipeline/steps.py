"""Small datatrove steps of the pipeline's own: adapt raw records, normalise text, report progress."""

from __future__ import annotations

import json
import os
import re
import time
import unicodedata

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from reasonpipe.filters.base import CountingFilter
from reasonpipe.filters.problem_dedup import problem_hash
from reasonpipe.pipeline.adapters import AdaptError, adapt, upstream_id
from reasonpipe.sample import problem_text, render_text


class Adapt(CountingFilter):
    """Raw record -> canonical sample, per the input's schema; unadaptable records are rejected with a reason.

    The record's own id becomes `metadata["upstream_id"]` (also on rejected records); an input whose `fields.id`
    names a key a record lacks counts it as `missing_upstream_id`. A rejection's message is `filter_detail`."""

    name = "🔀 adapt"

    def __init__(self, schemas: dict[str, tuple[str, dict[str, str]]], exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.schemas = schemas  # input name -> (schema, field mapping)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        schema, fields = self.schemas[doc.metadata["source"]]
        record = doc.metadata["record"]
        if (uid := upstream_id(record, fields)) is not None:
            doc.metadata["upstream_id"] = uid
        elif "id" in fields:
            self.stat_update("missing_upstream_id")
        try:
            text, meta = adapt(record, schema, fields)
        except AdaptError as err:
            doc.metadata["filter_detail"] = str(err)
            return False, err.reason
        del doc.metadata["record"]
        doc.text = text
        doc.metadata.update(meta)
        return True


_CONTROL = {c: None for c in range(32) if chr(c) not in "\n\t"} | {0x7F: None}
_HAS_CONTROL = re.compile("[" + re.escape("".join(map(chr, _CONTROL))) + "]")


def normalize_text(text: str) -> str:
    """NFC, unix newlines, no control characters except newline and tab, no trailing whitespace at the end."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    if _HAS_CONTROL.search(text):  # str.translate is a dict lookup per character: only texts that need it
        text = text.translate(_CONTROL)
    return text.rstrip()


class Normalize(CountingFilter):
    """Unicode/whitespace normalisation of text and turns; documents left empty are rejected as `empty_text`.

    Chat samples also get their problem key (`metadata["problem_key"]`, see `problem_hash`)."""

    name = "🧹 normalize"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if doc.metadata.get("kind") == "chat":
            for turn in doc.metadata["turns"]:
                turn["content"] = normalize_text(turn["content"])
                if turn.get("reasoning"):
                    turn["reasoning"] = normalize_text(turn["reasoning"])
            doc.text = render_text(doc.metadata["turns"])
            last = doc.metadata["turns"][-1]
            if not last["content"]:
                return False, "empty_answer"
            doc.metadata["problem_key"] = problem_hash(problem_text(doc))
        else:
            doc.text = normalize_text(doc.text)
        return True if doc.text.strip() else (False, "empty_text")


class Progress(PipelineStep):
    """Counts documents passing by and, every `interval` seconds, writes them to `folder/<rank>.json` and the log.

    The driver reads those files to draw progress bars (a terminal) or print periodic lines (CI logs), for any
    executor, while tasks run.
    """

    name = "⏱ progress"
    type = "📊 - STATS"

    def __init__(self, run_name: str, interval: float = 5.0, folder: str = ""):
        super().__init__()
        self.run_name, self.interval, self.folder = run_name, interval, folder  # folder: set by RunSpec.build

    def _write(self, rank: int, docs: int, chars: int, start: float, done: bool) -> None:
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, f"{rank:05d}.json")
        state = {"docs": docs, "chars": chars, "seconds": round(time.monotonic() - start, 2), "done": done}
        with open(path + ".tmp", "w") as f:
            json.dump(state, f)
        os.replace(path + ".tmp", path)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from datatrove.utils.logging import logger

        start = last = time.monotonic()
        docs = chars = 0
        for doc in data:
            docs += 1
            chars += len(doc.text)
            if (now := time.monotonic()) - last >= self.interval:
                last = now
                self._write(rank, docs, chars, start, False)
                logger.info(f"{self.run_name} task {rank}: {docs} docs, {chars / (now - start) / 1e6:.2f} M chars/s")
            yield doc
        self._write(rank, docs, chars, start, True)
