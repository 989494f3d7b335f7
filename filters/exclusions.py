"""Where rejected documents go: gzipped JSONL per rank, the reason in `metadata.filter_reason`."""

from __future__ import annotations


def exclusion_writer(folder: str):
    """A datatrove writer for a stage's rejected documents (pass it to `BaseFilter(exclusion_writer=...)`)."""
    from datatrove.pipeline.writers import JsonlWriter

    return JsonlWriter(folder, output_filename="${rank}.jsonl.gz")
