"""Corpora for the dedup/decontamination tests and bench/dedup.py: real paragraphs when available, generated otherwise.

Perturbation model: a copy of a document (>= 60 words) with a fraction of its words replaced by random common words.
"""

from __future__ import annotations

import json
import random
import re
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


# LaTeX commands and a sibling that changes the statement (\\otimes -> \\oplus, \\leq -> \\geq, \\sin -> \\cos)
SWAPS = dict(
    pair
    for a, b in [
        ("sin", "cos"), ("tan", "cot"), ("log", "ln"), ("otimes", "oplus"), ("cap", "cup"), ("subset", "supset"),
        ("leq", "geq"), ("to", "mapsto"), ("alpha", "beta"), ("sum", "prod"), ("lim", "sup"), ("Spec", "Proj"),
        ("mathcal", "mathbf"), ("times", "div"), ("pi", "tau"), ("infty", "emptyset"), ("int", "oint"),
    ]
    for pair in ((f"\\{a}", f"\\{b}"), (f"\\{b}", f"\\{a}"))
)  # fmt: skip
_NUMBER_VALUE = re.compile(r"(?<![\d.])\d+(?!\d)")
_COMMAND = re.compile(r"\\[A-Za-z]+")


def template_variant(text: str, rng: random.Random) -> str | None:
    """The same words with one number value, or one LaTeX command, changed wherever it occurs: a different problem
    that shares most shingles ("x^2+bx+48" vs "x^2+bx+18", "\\tan 330" vs "\\cot 330"); None when there is neither."""
    choices = sorted(set(_NUMBER_VALUE.findall(text))) + sorted({c for c in _COMMAND.findall(text) if c in SWAPS})
    if not choices:
        return None
    old = rng.choice(choices)
    if old.startswith("\\"):
        return re.sub(re.escape(old) + r"(?![A-Za-z])", lambda _: SWAPS[old], text)
    new = str(int(old) + rng.randint(1, 9))
    return re.sub(rf"(?<![\d.]){old}(?!\d)", new, text)


def math_eval_corpus(
    n_gsm: int, n_latex: int, n_variants: int, n_copies: int, seed: int = 0
) -> tuple[list[Document], dict[str, str]]:
    """Distinct math documents (GSM8K question + answer, LaTeX paragraphs of >= 60 words), template variants of some
    of them (distinct problems too) and near-copies of others (5% of words replaced), all of domain "math".

    Returns the documents (originals, then variants, then copies) and {id: "original" | "variant" | "copy"}.
    Needs ../shared/data/real.
    """
    rng = random.Random(seed)
    gsm = [json.loads(line) for line in (REAL / "math/gsm8k_train.jsonl").read_text().splitlines()]
    latex = [t for t in real_texts(min_words=60, prose_only=True) if "\\" in t]
    texts = [f"{r['question']}\n{r['answer']}" for r in rng.sample(gsm, n_gsm)] + rng.sample(latex, n_latex)
    docs = [Document(text=t, id=f"orig-{i:05d}", metadata={"domain": "math"}) for i, t in enumerate(texts)]
    roles = {d.id: "original" for d in docs}
    order = rng.sample(range(len(texts)), len(texts))
    variants = [(i, v) for i in order if (v := template_variant(texts[i], rng)) is not None][:n_variants]
    for i, variant in variants:
        docs.append(Document(text=variant, id=f"variant-{i:05d}", metadata={"domain": "math"}))
        roles[docs[-1].id] = "variant"
    for i in rng.sample(range(len(texts)), n_copies):
        docs.append(Document(text=perturb(texts[i], 0.05, rng), id=f"copy-{i:05d}", metadata={"domain": "math"}))
        roles[docs[-1].id] = "copy"
    return docs, roles
