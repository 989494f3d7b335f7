"""Corpora for the dedup/decontamination tests and bench/dedup.py: real paragraphs when available, generated otherwise.

Perturbation model: a copy of a document (>= 60 words) with a fraction of its words replaced by random common words.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from datatrove.data import Document

from reasonpipe.sample import render_text

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"

COMMON = (
    "the of and to in is was for that with as on by at from this be are or it an which not have has had were but "
    "all can one also their more other its into than only some these two new time first many may would such most "
    "when used then there been after over where between same each both under while about during through well"
).split()


def real_texts(min_words: int = 60, prose_only: bool = False) -> list[str]:
    """Distinct real paragraphs/problems with >= `min_words` words (prose, LaTeX math prose, GSM8K, code problems;
    `prose_only`: the PEP and LaTeX paragraphs only)."""
    files = {
        "prose/python_peps_paragraphs_6k.jsonl": ["text"],
        "math_prose/stacks_project_paragraphs_5k.jsonl": ["text"],
        "math_prose/hott_book_paragraphs.jsonl": ["text"],
        "math/gsm8k_train.jsonl": ["question", "answer"],
        "code/leetcode_train.jsonl": ["problem"],
    }
    seen, texts = set(), []
    for name, fields in files.items():
        if prose_only and not name.startswith(("prose/", "math_prose/")):
            continue
        path = REAL / name
        if not path.exists():
            continue
        with open(path, encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                text = "\n".join(str(record[k]) for k in fields if isinstance(record.get(k), str))
                key = " ".join(text.lower().split())
                if len(text.split()) >= min_words and key not in seen:
                    seen.add(key)
                    texts.append(text)
    return texts


def generated_texts(n: int, seed: int = 0, words: tuple[int, int] = (60, 250)) -> list[str]:
    """`n` distinct documents of Zipf-distributed pseudo-words, with numbers and formulas sprinkled in."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qui", "dor", "len", "tas"]
    vocab = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(6000)]
    weights = [1 / (i + 1) for i in range(len(vocab))]
    texts = []
    for _ in range(n):
        count = rng.randint(*words)
        tokens = rng.choices(vocab + COMMON, weights=weights + [3 / len(COMMON)] * len(COMMON), k=count)
        for _ in range(count // 40):
            tokens[rng.randrange(count)] = f"{rng.randint(0, 99)}{rng.choice('+-*/=')}{rng.randint(0, 99)}"
        texts.append(" ".join(tokens).capitalize() + ".")
    return texts


def perturb(text: str, fraction: float, rng: random.Random) -> str:
    """Replace `fraction` of the words of `text` (at least one) by random different common words."""
    words = text.split()
    for i in rng.sample(range(len(words)), max(1, round(fraction * len(words)))):
        words[i] = rng.choice([w for w in COMMON if w != words[i].lower()])
    return " ".join(words)


def planted_corpus(
    texts: list[str], fractions: list[float], per_fraction: int, seed: int = 0
) -> tuple[list[Document], dict[str, float]]:
    """All `texts` as documents, then for each fraction `per_fraction` perturbed copies of distinct originals.

    Returns the documents and {copy id: fraction}. Originals come first, so the copies are the ones dedup removes.
    """
    rng = random.Random(seed)
    docs = [Document(text=t, id=f"orig-{i:05d}", metadata={"domain": "web"}) for i, t in enumerate(texts)]
    sources = rng.sample(range(len(texts)), per_fraction * len(fractions))
    copies: dict[str, float] = {}
    for j, fraction in enumerate(fractions):
        for i in sources[j * per_fraction : (j + 1) * per_fraction]:
            doc_id = f"copy-{fraction:.2f}-{i:05d}"
            docs.append(Document(text=perturb(texts[i], fraction, rng), id=doc_id, metadata={"domain": "web"}))
            copies[doc_id] = fraction
    return docs, copies


def chat_sample(doc_id: str, problem: str, reasoning: str, answer: str) -> Document:
    """A canonical chat sample (domain reasoning): the problem as user turn, reasoning + answer as assistant turn."""
    turns = [
        {"role": "user", "content": problem, "reasoning": None},
        {"role": "assistant", "content": answer, "reasoning": reasoning},
    ]
    return Document(
        text=render_text(turns), id=doc_id, metadata={"kind": "chat", "domain": "reasoning", "turns": turns}
    )


def problem_variant(problem: str, rng: random.Random) -> str:
    """A variant of a problem: whitespace, punctuation, casing or a one-word edit (numbers untouched)."""
    kind = rng.randrange(4)
    if kind == 0:
        return "  ".join(problem.split()) + "\n"
    if kind == 1:
        return problem.replace(",", "").replace("?", " ?")
    if kind == 2:
        return problem.upper()
    words = problem.split()
    words[rng.choice([i for i, w in enumerate(words) if not any(c.isdigit() for c in w)])] = "the"
    return " ".join(words)
