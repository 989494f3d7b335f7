"""Datatrove step applying AP trimming to tokenised samples (thin adapter over `trimming.core.trim`)."""

import numpy as np
from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter

from reasonpipe.trimming.core import POLICIES, TrimRecord, trim


class APTrim(BaseFilter):
    """Trims chat samples to `budget` tokens; drops (and counts) those whose answers cannot fit.

    Input documents carry `metadata["segments"]` (list[Segment]) and `metadata["kind"]` ("chat" | "text").
    Chat samples get their segments replaced by the trimmed ones; plain "text" samples pass untouched. Every sample
    gets `metadata["trim"]`: the `TrimRecord` as a dict (status "plain" for plain text). Dropped samples lose their
    segments (so exclusion writers can serialise them) and are counted as `dropped_answer_exceeds_context`.
    """

    name = "✂️ AP trim"

    def __init__(
        self,
        budget: int,
        policy: str = "tail",
        marker_ids: list[int] | None = None,
        snap: int = 0,
        newline_ids: list[int] | None = None,
        exclusion_writer: DiskWriter | None = None,
    ) -> None:
        super().__init__(exclusion_writer)
        if budget <= 0:
            raise ValueError(f"APTrim budget: got {budget}, must be > 0")
        if policy not in POLICIES:
            raise ValueError(f"APTrim policy: got {policy!r}, allowed: {', '.join(POLICIES)}")
        if snap < 0:
            raise ValueError(f"APTrim snap: got {snap}, must be >= 0")
        self.budget, self.policy, self.snap = budget, policy, snap
        self.marker = np.asarray(marker_ids, dtype=np.uint32) if marker_ids else None
        self.newline_ids = np.asarray(newline_ids, dtype=np.uint32) if newline_ids else None

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        segments, kind = doc.metadata.get("segments"), doc.metadata.get("kind")
        if segments is None:
            raise ValueError(f"APTrim: document {doc.id!r} has no metadata['segments']; tokenise before trimming")
        if kind == "text":
            n = sum(len(s.ids) for s in segments)
            doc.metadata["trim"] = TrimRecord("plain", n, n, 0, 0, 0, None).as_dict()
            self.stat_update("plain")
            return True
        if kind != "chat":
            raise ValueError(f"APTrim: document {doc.id!r} has metadata kind {kind!r}; allowed: 'chat', 'text'")
        out, record = trim(segments, self.budget, self.policy, self.marker, self.snap, self.newline_ids)
        doc.metadata["trim"] = record.as_dict()
        if out is None:
            del doc.metadata["segments"]  # numpy arrays do not serialise; the record keeps the counts
            return False, record.reason
        doc.metadata["segments"] = out
        self.stat_update(record.status)  # "fit" | "trimmed" | "truncated"
        if record.answer_lost:
            self.stat_update("answer_lost")
        if record.status == "trimmed":
            self.stat_update("reasoning_tokens_cut", value=record.reasoning_before - record.reasoning_kept)
            self.stat_update("thinks_removed", value=record.dropped_thinks)
        return True
