"""What reasonpipe's steps share: counters kept per run (`DeferredCounters`) and domain gating (`DomainFilter`:
documents outside the selected domains pass untouched)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter
from datatrove.utils.stats import MetricStats


class DeferredCounters:
    """A mixin for datatrove steps (put it first among the bases): plain counts (`stat_update(label)`, value 1, no
    unit) are summed in a dict while the step runs and added to its stats once at the end, the same figures as one
    `MetricStats.update(1)` per call (total = n = k, mean = min = max = 1, no variance) for ~0.1 us instead of ~3 us;
    a datatrove filter makes three such calls per document (total, forwarded, ...). Valued updates (`doc_len`...)
    are recorded as they come."""

    _counts: dict[str, int] | None = None

    def stat_update(self, *labels, value: int = 1, unit: str | None = None):
        counts = self._counts
        if counts is None or value != 1 or unit is not None:
            return super().stat_update(*labels, value=value, unit=unit)
        for label in labels:
            counts[label] = counts.get(label, 0) + 1

    def run(self, data, rank: int = 0, world_size: int = 1):
        self._counts = {}
        try:
            yield from super().run(data, rank, world_size)
        finally:
            counts, self._counts = self._counts, None
            for label, k in counts.items():
                self.stats[label] = self.stats[label] + MetricStats(total=k, n=k, mean=1.0, min=1, max=1)


class DomainFilter(DeferredCounters, BaseFilter):
    """A `BaseFilter` that judges only documents whose `metadata["domain"]` is selected.

    Subclasses implement `keep(doc)` (True, or `(False, reason)` to drop); `filter` calls it for selected documents
    and passes the others through, counting them as `other_domain`.

    Args:
        domains: domains subject to the filter; None = every document.
        exclusion_writer: where dropped documents go (their reason in `metadata["filter_reason"]`).
    """

    def __init__(self, domains: Iterable[str] | None = None, exclusion_writer: DiskWriter | None = None):
        super().__init__(exclusion_writer)
        self.domains = None if domains is None else frozenset(domains)

    def selected(self, doc: Document) -> bool:
        return self.domains is None or doc.metadata.get("domain") in self.domains

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if not self.selected(doc):
            self.stat_update("other_domain")
            return True
        return self.keep(doc)

    @abstractmethod
    def keep(self, doc: Document) -> bool | tuple[bool, str]:
        """Decide on a selected document: True keeps it, `(False, reason)` drops it."""


class WrappedFilter(DomainFilter):
    """Domain gating around an existing datatrove filter (Gopher, C4, FineWeb...).

    The inner filter's own counters (e.g. C4's per-line stats) are recorded in this step's stats.
    """

    def __init__(
        self, inner: BaseFilter, domains: Iterable[str] | None = None, exclusion_writer: DiskWriter | None = None
    ):
        self.name = inner.name  # before super().__init__, which names the stats after the step
        super().__init__(domains, exclusion_writer)
        self.inner = inner
        inner.stats = self.stats

    def keep(self, doc: Document) -> bool | tuple[bool, str]:
        return self.inner.filter(doc)
