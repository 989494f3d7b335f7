"""What reasonpipe's filters share: datatrove's filter loop with cheaper bookkeeping (`CountingFilter`) and domain
gating (`DomainFilter`: documents outside the selected domains pass untouched)."""

from __future__ import annotations

import contextlib
import time
from abc import abstractmethod
from collections.abc import Iterable

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter, get_filter_result
from datatrove.pipeline.writers.disk_base import DiskWriter
from datatrove.utils.batching import batched
from datatrove.utils.stats import MetricStats


def extend_stats(stats: MetricStats, values: list[float], unit: str | None = None) -> None:
    """`stats.update(x, unit)` for every x of `values`, in order: datatrove's arithmetic (Welford), so the same
    figures, without a method call per value."""
    if unit:
        stats.unit = unit
    total, n, mean, lo, hi, var = stats.total, stats.n, stats.mean, stats.min, stats.max, stats._running_variance
    for x in values:
        total += x
        n += 1
        lo, hi = min(lo, x), max(hi, x)
        delta = x - mean
        mean += delta / n
        if n > 1:
            var += delta * (x - mean)
    stats.total, stats.n, stats.mean, stats.min, stats.max, stats._running_variance = total, n, mean, lo, hi, var
    if getattr(stats, "n_tasks", 0) == 1:  # TimingStats: a task's global figures are its total
        stats.global_mean = stats.global_min = stats.global_max = total


class CountingFilter(BaseFilter):
    """datatrove's `BaseFilter` loop (same verdicts, exclusions and stats) with its bookkeeping kept local.

    datatrove updates a `MetricStats` three or four times per document (total, forwarded or dropped, doc_len) and
    times each call of the filter through a context manager: ~10 us a document per filter. Here every update waits
    in `_pending` (a count, or the values of a valued update, per label in order of first use) and the call times
    in a list; all go into the stats every `FLUSH_EVERY` filter calls and when the stream ends (or its consumer
    stops), with datatrove's arithmetic (`extend_stats`; k plain counts are one `MetricStats` of k ones), so the
    figures and their order are the same.
    """

    FLUSH_EVERY = 4096  # filter calls between flushes: bounds what waits (memory independent of the task's size)
    _pending: dict[str, int | list] | None = None  # label -> count of plain updates, or the values, in order

    def stat_update(self, *labels, value: int = 1, unit: str | None = None):
        pending = self._pending
        if pending is None:
            return super().stat_update(*labels, value=value, unit=unit)
        for label in labels:
            seen = pending.get(label, 0)
            if value == 1 and unit is None and isinstance(seen, int):
                pending[label] = seen + 1
            else:  # a valued update: from here on this label keeps its values, in order
                pending[label] = values = [1] * seen if isinstance(seen, int) else seen
                values.append(value)
                if unit:
                    self._units[label] = unit

    def _flush(self, times: list[float]) -> None:
        extend_stats(self.stats.time_stats, times, "batch" if self.batch_size > 1 else None)
        for label, seen in self._pending.items():
            if isinstance(seen, int):
                self.stats[label] = self.stats[label] + MetricStats(total=seen, n=seen, mean=1.0, min=1, max=1)
            else:
                extend_stats(self.stats[label], seen, self._units.get(label))
        self._pending = {}
        times.clear()

    def run(self, data, rank: int = 0, world_size: int = 1):
        self._pending, self._units, times = {}, {}, []
        clock, size = time.perf_counter, self.batch_size
        try:
            with self.exclusion_writer if self.exclusion_writer else contextlib.nullcontext() as writer:
                for batch in batched(data, size) if size > 1 else ((doc,) for doc in data):
                    if size > 1:
                        self.stat_update("batches")
                    start = clock()
                    results = self.filter_batch(batch) if size > 1 else (self.filter(batch[0]),)
                    times.append(clock() - start)
                    pending = self._pending
                    for doc, result in zip(batch, results):
                        keep, reason = get_filter_result(result)
                        pending["total"] = pending.get("total", 0) + 1
                        if keep:
                            pending["forwarded"] = pending.get("forwarded", 0) + 1
                            self.update_doc_stats(doc)  # doc_len (and doc_len_tokens): values, through stat_update
                            yield doc
                            continue
                        pending["dropped"] = pending.get("dropped", 0) + 1
                        if reason:
                            self.stat_update(f"dropped_{reason}")
                        if self.exclusion_writer:
                            if reason:
                                doc.metadata["filter_reason"] = reason
                            writer.write(doc, rank)
                    if len(times) >= self.FLUSH_EVERY:
                        self._flush(times)
        finally:
            self._flush(times)
            self._pending = None


class DomainFilter(CountingFilter):
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

    The inner filter's own counters (e.g. C4's per-line stats) are recorded in this step's stats, in order.
    """

    def __init__(
        self, inner: BaseFilter, domains: Iterable[str] | None = None, exclusion_writer: DiskWriter | None = None
    ):
        self.name = inner.name  # before super().__init__, which names the stats after the step
        super().__init__(domains, exclusion_writer)
        self.inner = inner
        inner.stats, inner.stat_update = self.stats, self.stat_update  # its counts wait with ours (same order)

    def keep(self, doc: Document) -> bool | tuple[bool, str]:
        return self.inner.filter(doc)
