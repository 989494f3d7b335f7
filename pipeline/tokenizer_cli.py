"""`reasonpipe tokenizer train`: a byte-level BPE with reasonpipe's special tokens, trained apart from a run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from reasonpipe.pipeline.manifest import infer_format
from reasonpipe.pipeline.readers import BadRecord, InputSource, iter_records


def iter_texts(paths: list[str], field: str) -> Iterator[str]:
    """Texts of jsonl/parquet/arrow/csv records (`field`), or whole .txt/.md files; unreadable records are skipped."""
    for path in paths:
        fmt = infer_format(path)
        if fmt is None:
            yield Path(path).read_text(encoding="utf-8", errors="replace")
            continue
        source = InputSource("cli", fmt, (path,), str(Path(path).parent), "text", "web")
        for record in iter_records(source, path):
            if not isinstance(record, BadRecord) and isinstance(record, dict) and isinstance(record.get(field), str):
                yield record[field]


def train_from_files(paths: list[str], out: str, vocab_size: int, field: str, sample_docs: int | None) -> Path:
    from itertools import islice

    from reasonpipe.tokenizer.vocab import save_tokenizer, train_tokenizer

    texts = iter_texts(paths, field)
    tok = train_tokenizer(islice(texts, sample_docs) if sample_docs else texts, vocab_size)
    path = save_tokenizer(tok, out)
    print(f"wrote {path}: vocabulary {tok.get_vocab_size()} (special tokens included)")
    return path
