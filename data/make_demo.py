"""Generate the bundled demo corpus in data/demo/ (deterministic: same seed, same bytes).

    python data/make_demo.py                 # writes data/demo/
    python data/make_demo.py --huge          # also writes bad/text/huge_50mb.jsonl (~50 MB, never committed)

Everything is synthetic: math word problems and algebra with correct worked steps (long traces > 20,000 characters
of reasoning included), a pool of problems with several traces each (some wrong) and their gold answers, LaTeX math
prose, code in six languages, web-like prose, planted exact/near/problem-level duplicates, benchmark items leaked with
light perturbations, answers without reasoning, and malformed records. Public
datasets are imitated in schema only. The generator functions are importable (tests/corpus.py builds the small CI
corpus from them); the record writers keep every file byte-identical across runs (gzip mtime 0, fixed fingerprints,
sorted keys).

Realism: unrelated documents are different texts, so that dedup and decontamination find only what was planted.
Every family draws from many phrasings, topics, snippets and identifiers; math/code/web documents too similar to an
earlier one of their family are regenerated (`Distinct`), topic/snippet combinations avoid reusing pairs (`_combo`,
state reset by `build`), no short problem is drawn twice (`ProblemSource`), and the decontamination benchmark uses
scenarios and wording of its own (`BENCH_FAMILIES`, `render_gsm_bench`). See data/demo/README.md.
"""

from __future__ import annotations

import argparse
import ast
import csv
import gzip
import io
import itertools
import json
import math
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent

# ---------------------------------------------------------------------------------------------------------- word banks
NAMES = [
    "Ava", "Ben", "Carla", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Imani", "Jonas", "Keiko", "Liam", "Maya",
    "Nikhil", "Olga", "Pedro", "Quinn", "Rosa", "Samir", "Tara", "Umar", "Vera", "Wes", "Ximena", "Yusuf", "Zoe",
]  # fmt: skip
GOODS = [
    "notebooks", "pencils", "apples", "oranges", "muffins", "stickers", "markers", "candles", "mugs", "socks",
    "postcards", "batteries", "light bulbs", "flower pots", "tennis balls", "paintbrushes", "jars of honey",
]  # fmt: skip
PRODUCTS = [
    "hammers", "screwdrivers", "tape measures", "paint rollers", "wrenches", "drill bits", "extension cords",
    "garden hoses", "work gloves", "ladders", "padlocks", "wood screws", "saw blades", "sandpaper packs", "levels",
    "utility knives", "clamps", "flashlights", "caulk tubes", "pliers", "door hinges", "toolboxes", "zip ties",
    "dust masks", "paint trays", "chisels", "rakes", "shovels", "wheelbarrows", "hose nozzles", "mallets",
    "spirit levels", "staple guns", "pruning shears", "paint brushes", "step stools", "bolt cutters", "hacksaws",
    "wire strippers", "smoke detectors",
]  # fmt: skip
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def fmt(n: int) -> str:
    """An integer as it appears inside an arithmetic expression (negatives in parentheses)."""
    return str(n) if n >= 0 else f"({n})"


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]


# ------------------------------------------------------------------------------------------ short problem families
@dataclass
class Step:
    desc: str  # what is computed, e.g. "the cost of the pencils"
    expr: str  # python arithmetic with ' * ', ' / ', ' + ', ' - '
    value: int


@dataclass
class Problem:
    family: str
    question: str
    steps: list[Step]
    answer: int
    unit: str = ""  # "$" for money, else a noun used in the final sentence
    params: dict = field(default_factory=dict)


def _check_steps(p: Problem) -> Problem:
    for s in p.steps:
        assert eval(s.expr) == s.value, (p.family, s)  # noqa: S307 - our own arithmetic strings
    assert p.steps[-1].value == p.answer, p.family
    return p


def _ask(
    rng: random.Random, facts: list[str], questions: list[str], lead: list[str] | None = None, swap: int = 0
) -> str:
    """A word problem from its facts and one of several questions; the first `swap` facts are independent and
    appear in random order."""
    if swap > 1 and rng.random() < 0.5:
        facts = rng.sample(facts[:swap], swap) + facts[swap:]
    text = " ".join(cap(f) for f in facts)
    if lead and rng.random() < 0.5:
        first = text.split(" ", 1)[0].split("'")[0]
        text = rng.choice(lead) + " " + (text if first in NAMES else text[:1].lower() + text[1:])
    return text + " " + rng.choice(questions)


def fam_shopping(rng: random.Random) -> Problem:
    n = rng.choice(NAMES)
    g1, g2 = rng.sample(GOODS, 2)
    a, p, b, q = rng.randint(2, 12), rng.randint(2, 25), rng.randint(2, 12), rng.randint(3, 30)
    total = a * p + b * q
    bill = next(x for x in (20, 50, 100, 200, 500, 1000) if x > total)  # total <= 660
    item1 = rng.choice(
        [f"{n} buys {a} {g1} at ${p} each.", f"{n} picks up {a} {g1}, which cost ${p} apiece.",
         f"{a} {g1} priced at ${p} each go into {n}'s basket.", f"{n} orders {a} {g1} for ${p} a piece."]
    )  # fmt: skip
    item2 = rng.choice(
        [f"{n} also takes {b} {g2} at ${q} each.", f"On top of that come {b} {g2} at ${q} per item.",
         f"The {g2} are ${q} each, and {n} wants {b} of them.", f"{n} adds {b} {g2} that sell for ${q} each."]
    )  # fmt: skip
    pay = rng.choice(
        [f"{n} pays with a ${bill} bill.", f"At the register {n} hands over ${bill}.",
         f"The cashier receives ${bill} from {n}.", f"{n} has only a ${bill} note to pay with."]
    )  # fmt: skip
    question = _ask(
        rng,
        [item1, item2, pay],
        [f"How much change does {n} get?", "How many dollars should come back as change?",
         f"What change is {n} owed?", f"How much money does {n} receive back?"],
        ["At the market,", "On Saturday morning,", "For a school project,", "Before the holidays,"],
    )  # fmt: skip
    steps = [
        Step(rng.choice([f"the cost of the {g1}", f"what the {g1} cost", f"the price of {a} {g1}"]), f"{a} * {p}",
             a * p),
        Step(rng.choice([f"the cost of the {g2}", f"what the {g2} cost", f"the price of {b} {g2}"]), f"{b} * {q}",
             b * q),
        Step(rng.choice(["the total cost", "the whole bill", "the amount due"]), f"{a * p} + {b * q}", total),
        Step(rng.choice(["the change", "the money returned", "what comes back"]), f"{bill} - {total}", bill - total),
    ]  # fmt: skip
    return _check_steps(Problem("shopping", question, steps, bill - total, "$", dict(n=n, a=a, p=p, b=b, q=q)))


def fam_wages(rng: random.Random) -> Problem:
    n = rng.choice(NAMES)
    h, r, d, k = rng.randint(2, 10), rng.randint(8, 45), rng.randint(2, 7), rng.choice([2, 4, 5, 10])
    while (h * r * d) % k:
        r += 1
    week = h * r * d
    job = rng.choice(
        ["tutoring", "at a bakery", "walking dogs", "at the library", "delivering groceries", "at a bike shop",
         "as a lifeguard", "at the farmers' market", "mowing lawns", "at a call center"]
    )  # fmt: skip
    frac = {2: "half", 4: "a quarter", 5: "one fifth", 10: "a tenth"}[k]
    use = rng.choice(["rent", "savings", "a new phone", "bus fares", "groceries", "a music course"])
    facts = [
        rng.choice([f"{n} works {job} and earns ${r} per hour.", f"Working {job}, {n} makes ${r} an hour.",
                    f"{n}'s job {job} pays ${r} for every hour."]),
        rng.choice([f"This week {n} works {h} hours on each of {d} days.",
                    f"{n} puts in {h} hours a day for {d} days.",
                    f"The schedule has {n} working {d} days, {h} hours each day."]),
        rng.choice([f"{cap(frac)} of the week's pay goes to {use}.", f"{n} sets aside {frac} of the earnings for "
                                                                     f"{use}.",
                    f"Of the money earned, {frac} is spent on {use}."]),
    ]  # fmt: skip
    question = _ask(
        rng, facts, [f"How much money does {n} keep?", "How many dollars are left after that?",
                     f"What amount remains for {n} to spend freely?", "How much is left over?"], swap=2
    )  # fmt: skip
    steps = [
        Step(rng.choice(["the pay for one day", "one day's earnings", "the daily pay"]), f"{h} * {r}", h * r),
        Step(rng.choice(["the pay for the week", "the weekly earnings", "the week's total pay"]), f"{h * r} * {d}",
             week),
        Step(f"{frac} of that", f"{week} / {k}", week // k),
        Step(rng.choice(["what remains", "the amount kept", "what is left"]), f"{week} - {week // k}",
             week - week // k),
    ]  # fmt: skip
    return _check_steps(Problem("wages", question, steps, week - week // k, "$", dict(n=n, h=h, r=r, d=d, k=k)))


def fam_fractions(rng: random.Random) -> Problem:
    n, a, b = rng.sample(NAMES, 3)
    total = 12 * rng.randint(3, 60)
    thing = rng.choice(
        ["marbles", "stickers", "trading cards", "seashells", "stamps", "beads", "comic books", "guitar picks",
         "postcards", "coins"]
    )  # fmt: skip
    facts = [
        rng.choice([f"{n} has {total} {thing}.", f"{n}'s collection holds {total} {thing}.",
                    f"A box on {n}'s shelf contains {total} {thing}."]),
        rng.choice([f"{n} gives a quarter of them to {a}.", f"{a} receives one fourth of them as a gift.",
                    f"First, 1/4 of the {thing} go to {a}."]),
        rng.choice([f"Then a third of the rest goes to {b}.", f"After that {b} gets 1/3 of what is left.",
                    f"{b} is then given one third of the remaining {thing}."]),
    ]  # fmt: skip
    question = _ask(
        rng, facts, [f"How many {thing} does {n} have left?", f"How many {thing} remain?",
                     f"What number of {thing} is still in the box?", f"How many {thing} does {n} keep?"]
    )  # fmt: skip
    q1 = total // 4
    rest = total - q1
    q2 = rest // 3
    steps = [
        Step(f"the {thing} that go to {a}", f"{total} / 4", q1),
        Step(rng.choice(["the number remaining after that", "what is left after the first gift"]), f"{total} - {q1}",
             rest),
        Step(f"the {thing} that go to {b}", f"{rest} / 3", q2),
        Step(rng.choice(["the number left", "the final count"]), f"{rest} - {q2}", rest - q2),
    ]  # fmt: skip
    return _check_steps(Problem("fractions", question, steps, rest - q2, thing, dict(total=total)))


def fam_ages(rng: random.Random) -> Problem:
    x, y = rng.sample(NAMES, 2)
    ya, k, n = rng.randint(3, 40), rng.randint(2, 30), rng.randint(2, 25)
    facts = [
        rng.choice([f"{y} is {ya} years old.", f"{y} turned {ya} this year.", f"{y}'s age today is {ya}."]),
        rng.choice([f"{x} is {k} years older than {y}.", f"{x} was born {k} years before {y}.",
                    f"The age gap between {x} and the younger {y} is {k} years."]),
    ]  # fmt: skip
    question = _ask(
        rng, facts, [f"What will the sum of their ages be in {n} years?", f"In {n} years, what will their ages add "
                                                                          "up to?",
                     f"How old will the two be together {n} years from now?"], swap=2
    )  # fmt: skip
    steps = [
        Step(f"{x}'s age now", f"{ya} + {k}", ya + k),
        Step(f"{y}'s age in {n} years", f"{ya} + {n}", ya + n),
        Step(f"{x}'s age in {n} years", f"{ya + k} + {n}", ya + k + n),
        Step(rng.choice(["the sum of the ages", "their combined age"]), f"{ya + n} + {ya + k + n}",
             2 * ya + k + 2 * n),
    ]  # fmt: skip
    return _check_steps(Problem("ages", question, steps, 2 * ya + k + 2 * n, "years", dict(ya=ya, k=k, n=n)))


def fam_distance(rng: random.Random) -> Problem:
    n = rng.choice(NAMES)
    s1, t1, s2, t2 = rng.randint(30, 110), rng.randint(2, 6), rng.randint(15, 90), rng.randint(1, 5)
    veh = rng.choice(["drives", "rides a train", "cycles", "travels by bus", "rides a motorbike", "sails"])
    facts = [
        rng.choice([f"{n} {veh} at {s1} km per hour for {t1} hours.", f"For the first {t1} hours {n} {veh} at "
                    f"{s1} km/h.", f"The first leg: {n} {veh} for {t1} hours at an average of {s1} km/h."]),
        rng.choice([f"Then the speed drops to {s2} km per hour for {t2} more hours.", f"After a break, {n} "
                    f"continues at {s2} km/h for {t2} hours.", f"The second leg lasts {t2} hours at {s2} km/h."]),
    ]  # fmt: skip
    question = _ask(
        rng, facts, [f"How many kilometers does {n} cover in total?", "What is the total distance?",
                     "How far is the whole trip in kilometers?"],
        ["On a trip,", "Last weekend,", "During the holiday,"],
    )  # fmt: skip
    steps = [
        Step(rng.choice(["the first leg", "the distance of the first part"]), f"{s1} * {t1}", s1 * t1),
        Step(rng.choice(["the second leg", "the distance of the second part"]), f"{s2} * {t2}", s2 * t2),
        Step("the total distance", f"{s1 * t1} + {s2 * t2}", s1 * t1 + s2 * t2),
    ]
    return _check_steps(Problem("distance", question, steps, s1 * t1 + s2 * t2, "kilometers", dict(s1=s1, t1=t1)))


def fam_discount(rng: random.Random) -> Problem:
    n = rng.choice(NAMES)
    price, pct, k = 20 * rng.randint(2, 60), rng.choice([10, 15, 20, 25, 30, 40, 50]), rng.randint(2, 9)
    item = rng.choice(
        ["jacket", "lamp", "backpack", "pair of boots", "chair", "board game", "printer", "tent", "blender",
         "desk", "camera bag", "rug"]
    )  # fmt: skip
    off = price * pct // 100
    facts = [
        rng.choice([f"A {item} normally costs ${price}.", f"The regular price of a {item} is ${price}.",
                    f"A shop sells a {item} for ${price}."]),
        rng.choice([f"During a sale it is {pct}% off.", f"This week everything is marked down by {pct} percent.",
                    f"A coupon takes {pct}% off the price."]),
        rng.choice([f"{n} buys {k} of them.", f"{n} needs {k} for the office.", f"{n} orders {k} at the sale price."]),
    ]  # fmt: skip
    question = _ask(rng, facts, [f"How much does {n} spend?", "What is the total cost?", f"How much does {n} pay?"])
    steps = [
        Step("the discount", f"{price} * {pct} / 100", off),
        Step("the sale price", f"{price} - {off}", price - off),
        Step(f"the cost of {k}", f"{price - off} * {k}", (price - off) * k),
    ]
    return _check_steps(Problem("discount", question, steps, (price - off) * k, "$", dict(price=price, pct=pct)))


def fam_linear(rng: random.Random) -> Problem:
    a, x, b = rng.randint(2, 19), rng.randint(-15, 25), rng.randint(-40, 60)
    c = a * x + b
    sb = f"+ {b}" if b >= 0 else f"- {-b}"
    question = rng.choice(
        [f"Solve for $x$: ${a}x {sb} = {c}$.", f"Find the value of $x$ that satisfies ${a}x {sb} = {c}$.",
         f"What number $x$ makes the equation ${a}x {sb} = {c}$ true?",
         f"If ${a}x {sb} = {c}$, what is $x$? Show your steps.",
         f"Determine the solution of the linear equation ${a}x {sb} = {c}$ and check it."]
    )  # fmt: skip
    steps = [
        Step(f"the value of ${a}x$ after moving the constant to the right-hand side", f"{c} - {fmt(b)}", c - b),
        Step("$x$, dividing both sides by the coefficient", f"{c - b} / {a}", x),
        Step(f"the left-hand side with this $x$ substituted, as a check ({c} is expected)", f"{a} * {fmt(x)} + "
                                                                                            f"{fmt(b)}",
             c),
        Step("$x$", f"{fmt(x)}", x),
    ]  # fmt: skip
    return _check_steps(Problem("linear", question, steps, x, "", dict(a=a, b=b, c=c)))


def fam_rectangle(rng: random.Random) -> Problem:
    n = rng.choice(NAMES)
    w, extra, cost = rng.randint(3, 40), rng.randint(2, 30), rng.randint(2, 25)
    length = w + extra
    thing = rng.choice(["garden", "patio", "playground", "vegetable bed", "parking lot", "paddock", "courtyard"])
    facts = [
        rng.choice([f"{n}'s rectangular {thing} is {w} m wide.", f"A rectangular {thing} has a width of {w} meters.",
                    f"The {thing} behind {n}'s house is a rectangle {w} meters across."]),
        rng.choice([f"Its length is {extra} m more than its width.", f"It is {extra} meters longer than it is wide.",
                    f"The long side exceeds the short side by {extra} m."]),
        rng.choice([f"Fencing costs ${cost} per meter.", f"A meter of fence sells for ${cost}.",
                    f"The fence {n} likes is priced at ${cost} a meter."]),
    ]  # fmt: skip
    question = _ask(
        rng, facts, [f"How much does it cost to fence the whole {thing}?", "What does fencing the perimeter cost?",
                     f"How many dollars will {n} spend on fencing all four sides?"]
    )  # fmt: skip
    steps = [
        Step("the length", f"{w} + {extra}", length),
        Step("the length plus the width", f"{length} + {w}", length + w),
        Step("the perimeter", f"2 * {length + w}", 2 * (length + w)),
        Step("the cost of the fence", f"{2 * (length + w)} * {cost}", 2 * (length + w) * cost),
    ]
    return _check_steps(Problem("rectangle", question, steps, 2 * (length + w) * cost, "$", dict(w=w)))


def fam_series(rng: random.Random) -> Problem:
    a, d, n = rng.randint(1, 40), rng.randint(2, 15), rng.randint(8, 60)
    last = a + (n - 1) * d
    question = rng.choice(
        [f"What is the sum of the first {n} terms of the arithmetic sequence $a, a+d, a+2d, \\dots$ with "
         f"$a = {a}$ and $d = {d}$?",
         f"An arithmetic progression starts at {a} and each term is {d} more than the one before. Find the sum "
         f"of its first {n} terms.",
         f"A stack of cans has {a} cans in the top row, and every row below holds {d} more cans than the row above "
         f"it. If there are {n} rows, how many cans are there altogether?",
         f"Compute $\\sum_{{k=0}}^{{{n - 1}}} ({a} + {d}k)$."]
    )  # fmt: skip
    steps = [
        Step("the number of steps after the first term", f"{n} - 1", n - 1),
        Step("the total increase", f"{n - 1} * {d}", (n - 1) * d),
        Step("the last term", f"{a} + {(n - 1) * d}", last),
        Step("the first plus the last term", f"{a} + {last}", a + last),
        Step("the sum", f"{n} * {a + last} / 2", n * (a + last) // 2),
    ]
    return _check_steps(Problem("series", question, steps, n * (a + last) // 2, "", dict(a=a, d=d, n=n)))


def fam_average(rng: random.Random) -> Problem:
    n = rng.choice(NAMES)
    k = rng.randint(3, 6)
    while True:
        scores = [rng.randint(55, 99) for _ in range(k)]
        target = rng.randint(70, 93)
        need = target * (k + 1) - sum(scores)
        if 40 <= need <= 100:
            break
    listed = ", ".join(map(str, scores[:-1])) + f" and {scores[-1]}"
    what = rng.choice(["tests", "quizzes", "essays", "lab reports", "exams"])
    facts = [
        rng.choice([f"{n} scored {listed} on the first {k} {what}.", f"After {k} {what}, {n}'s scores are {listed}.",
                    f"The grade book shows {listed} for {n}'s first {k} {what}."]),
        rng.choice([f"{n} wants an average of exactly {target} after the next one.",
                    f"The goal is a mean of {target} over {k + 1} {what}."]),
    ]  # fmt: skip
    question = _ask(
        rng, facts, [f"What score does {n} need next?", "What must the next score be?",
                     f"Which score on the next one gets {n} there?"]
    )  # fmt: skip
    steps = [
        Step("the points needed in total", f"{target} * {k + 1}", target * (k + 1)),
        Step("the points so far", " + ".join(map(str, scores)), sum(scores)),
        Step("the score needed", f"{target * (k + 1)} - {sum(scores)}", need),
    ]
    return _check_steps(Problem("average", question, steps, need, "points", dict(scores=scores)))


def fam_gcd(rng: random.Random) -> Problem:
    g = rng.randint(2, 60)
    m, n = rng.sample(range(3, 90), 2)
    while math.gcd(m, n) != 1:
        n += 1
    a, b = max(m, n) * g, min(m, n) * g
    question = rng.choice(
        [f"Use the Euclidean algorithm to find $\\gcd({a}, {b})$.",
         f"What is the greatest common divisor of {a} and {b}?",
         f"A florist has {a} roses and {b} tulips and wants identical bouquets using every flower. What is the "
         f"largest number of bouquets possible?",
         f"Find the largest integer that divides both {a} and {b} exactly."]
    )  # fmt: skip
    steps = []
    x, y = a, b
    while y:
        q, r = divmod(x, y)
        steps.append(Step(f"the remainder of {x} divided by {y}", f"{x} - {q} * {y}", r))
        x, y = y, r
    steps.append(Step("the last nonzero remainder", f"{x}", x))
    return _check_steps(Problem("gcd", question, steps, x, "", dict(a=a, b=b)))


def fam_quadratic(rng: random.Random) -> Problem:
    r1, r2 = rng.sample([v for v in range(-15, 19) if v], 2)
    s, p = r1 + r2, r1 * r2
    bx = f"- {s}x" if s > 0 else (f"+ {-s}x" if s < 0 else "")
    cx = f"+ {p}" if p >= 0 else f"- {-p}"
    eq = f"$x^2 {bx} {cx} = 0$".replace("  ", " ")
    question = rng.choice(
        [f"Find the larger root of {eq}.", f"The equation {eq} has two integer solutions. What is the larger one?",
         f"Factor {eq} and report its greatest root.", f"Which is the bigger of the two real solutions of {eq}?"]
    )  # fmt: skip
    hi, lo = max(r1, r2), min(r1, r2)
    steps = [
        Step("the sum of the roots", f"{fmt(hi)} + {fmt(lo)}", s),
        Step("the product of the roots", f"{fmt(hi)} * {fmt(lo)}", p),
        Step("the larger root squared, minus the sum times it, plus the product (zero for a root)",
             f"{fmt(hi)} * {fmt(hi)} - {fmt(s)} * {fmt(hi)} + {fmt(p)}", 0),
        Step("the larger root", f"{fmt(hi)}", hi),
    ]  # fmt: skip
    return _check_steps(Problem("quadratic", question, steps, hi, "", dict(r1=r1, r2=r2)))


FAMILIES: list[Callable[[random.Random], Problem]] = [
    fam_shopping, fam_wages, fam_fractions, fam_ages, fam_distance, fam_discount, fam_linear, fam_rectangle,
    fam_series, fam_average, fam_gcd, fam_quadratic,
]  # fmt: skip


class ProblemSource:
    """Draws short problems; a problem whose family and numbers were already drawn is drawn again, so no two
    generated problems are accidentally the same (planted duplicates are made on purpose)."""

    def __init__(self, families: list[Callable[[random.Random], Problem]] = FAMILIES):
        self.families, self.seen = families, set()

    def __call__(self, rng: random.Random) -> Problem:
        while True:
            p = rng.choice(self.families)(rng)
            key = (p.family, tuple(re.findall(r"\d+", p.question)))
            if key not in self.seen:
                self.seen.add(key)
                return p


def make_problem(rng: random.Random) -> Problem:
    return rng.choice(FAMILIES)(rng)


# ------------------------------------------------------------------------------------ benchmark-only families
# The decontamination benchmark (benchmarks/mini_gsm.jsonl) uses its own scenarios, phrasings and answer style,
# disjoint from the corpus families above: only the deliberately leaked items share n-grams with the corpus.
def bench_bake_sale(rng: random.Random) -> Problem:
    n = rng.choice(BENCH_NAMES)
    trays, per, bag, price = rng.randint(3, 9), rng.choice([12, 16, 18, 24]), rng.choice([3, 4, 6]), rng.randint(2, 7)
    while (trays * per) % bag:
        trays += 1
    made, bags = trays * per, trays * per // bag
    question = rng.choice(
        [f"For the school fundraiser {n} baked {trays} trays of oatmeal cookies with {per} cookies on every tray. "
         f"She packed the cookies into paper bags of {bag} and sold every bag for {price} dollars. How many dollars "
         f"did she raise for the fundraiser?",
         f"{n} is helping with a bake sale. She makes {trays} trays of brownies, and each tray is cut into {per} "
         f"squares. The squares are wrapped {bag} to a package, and a package sells for {price} dollars. If "
         f"everything sells, how much money does the bake sale collect?"]
    )  # fmt: skip
    steps = [
        Step("cookies baked", f"{trays} * {per}", made),
        Step("bags filled", f"{made} / {bag}", bags),
        Step("dollars raised", f"{bags} * {price}", bags * price),
    ]
    return _check_steps(Problem("bake_sale", question, steps, bags * price, "$", dict(n=n)))


def bench_reading(rng: random.Random) -> Problem:
    n = rng.choice(BENCH_NAMES)
    first, per, days = rng.randint(10, 40), rng.randint(8, 30), rng.randint(3, 12)
    pages = first + per * days
    question = rng.choice(
        [f"{n} borrowed a novel with {pages} pages from the town library. On Sunday he read {first} pages, and "
         f"after that he reads {per} pages every evening before bed. How many evenings will it take him to reach "
         f"the last page?",
         f"There are {pages} pages in the mystery book that {n} got for his birthday. He reads {first} pages on "
         f"the first day and then keeps a steady pace of {per} pages per day. How many more days does he need to "
         f"finish the whole book?"]
    )  # fmt: skip
    steps = [
        Step("pages still unread", f"{pages} - {first}", pages - first),
        Step("evenings needed", f"{pages - first} / {per}", days),
    ]
    return _check_steps(Problem("reading", question, steps, days, "days", dict(n=n)))


def bench_tank(rng: random.Random) -> Problem:
    fill, leak, minutes = rng.randint(9, 30), rng.randint(1, 8), rng.randint(10, 60)
    cap_l = (fill - leak) * minutes
    question = rng.choice(
        [f"An empty rain barrel can hold {cap_l} liters of water. A garden hose pours in {fill} liters each "
         f"minute, but a crack near the bottom lets {leak} liters escape every minute. How many minutes pass "
         f"before the barrel is completely full?",
         f"A fish tank holds {cap_l} liters when full. Dad fills it with a pump that adds {fill} liters per "
         f"minute while a loose valve drips out {leak} liters per minute. Starting from empty, how long in minutes "
         f"does it take to fill the tank?"]
    )  # fmt: skip
    steps = [
        Step("net liters gained per minute", f"{fill} - {leak}", fill - leak),
        Step("minutes to fill", f"{cap_l} / {fill - leak}", minutes),
    ]
    return _check_steps(Problem("tank", question, steps, minutes, "minutes", {}))


def bench_bus(rng: random.Random) -> Problem:
    start, off1, on1 = rng.randint(20, 50), rng.randint(3, 15), rng.randint(2, 20)
    mid = start - off1 + on1
    if mid % 2:
        on1 += 1
        mid += 1
    question = rng.choice(
        [f"A city bus leaves the depot carrying {start} riders. At the first stop {off1} riders step off and "
         f"{on1} new riders climb aboard. At the second stop exactly half of the riders get off and nobody gets "
         f"on. How many riders are left on the bus?",
         f"The morning shuttle starts its loop with {start} passengers. {off1} of them leave at the hospital "
         f"while {on1} board there, and at the train station half of everyone on the shuttle gets out. How many "
         f"passengers stay on the shuttle after the train station?"]
    )  # fmt: skip
    steps = [
        Step("riders after the first stop", f"{start} - {off1} + {on1}", mid),
        Step("riders after the second stop", f"{mid} / 2", mid // 2),
    ]
    return _check_steps(Problem("bus", question, steps, mid // 2, "passengers", {}))


def bench_pencils(rng: random.Random) -> Problem:
    n = rng.choice(BENCH_NAMES)
    packs, per, kids = rng.randint(3, 12), rng.choice([10, 12, 20, 24]), rng.randint(4, 30)
    while (packs * per) % kids:
        kids += 1
    total = packs * per
    question = rng.choice(
        [f"Ms. {n} buys {packs} boxes of colored pencils for her art class, and every box holds {per} pencils. "
         f"She hands them out so that each of her {kids} students ends up with the same number of pencils. How "
         f"many pencils does every student receive?",
         f"Coach {n} brought {packs} bags of tennis balls to practice with {per} balls inside each bag. The balls "
         f"are split evenly among the {kids} players on the team. How many tennis balls does each player get?"]
    )  # fmt: skip
    steps = [
        Step("items in all", f"{packs} * {per}", total),
        Step("items per person", f"{total} / {kids}", total // kids),
    ]
    return _check_steps(Problem("pencils", question, steps, total // kids, "", {}))


def bench_tickets(rng: random.Random) -> Problem:
    adult, child, na, nc = rng.randint(8, 25), rng.randint(3, 12), rng.randint(20, 150), rng.randint(10, 120)
    question = rng.choice(
        [f"The community theater sold {na} adult tickets at {adult} dollars apiece and {nc} children's tickets "
         f"at {child} dollars apiece for Friday night's show. How many dollars did the theater take in from "
         f"ticket sales that night?",
         f"Admission to the county fair costs {adult} dollars for grown-ups and {child} dollars for kids. On "
         f"opening day {na} grown-ups and {nc} kids came through the gate. What was the total amount collected at "
         f"the gate?"]
    )  # fmt: skip
    steps = [
        Step("adult sales", f"{na} * {adult}", na * adult),
        Step("child sales", f"{nc} * {child}", nc * child),
        Step("total sales", f"{na * adult} + {nc * child}", na * adult + nc * child),
    ]
    return _check_steps(Problem("tickets", question, steps, na * adult + nc * child, "$", {}))


def bench_legs(rng: random.Random) -> Problem:
    n = rng.choice(BENCH_NAMES)
    hens, goats, ducks = rng.randint(5, 40), rng.randint(2, 20), rng.randint(3, 25)
    legs = 2 * hens + 4 * goats + 2 * ducks
    question = rng.choice(
        [f"Farmer {n} keeps {hens} hens, {goats} goats and {ducks} ducks in the barnyard behind his house. When "
         f"all of the animals are standing in the yard, how many legs are touching the ground in total?",
         f"On {n}'s small farm there are {goats} goats grazing in the meadow, {hens} hens pecking near the coop "
         f"and {ducks} ducks by the pond. Counting every animal, how many legs are there on the farm?"]
    )  # fmt: skip
    steps = [
        Step("legs of the birds", f"2 * {hens} + 2 * {ducks}", 2 * hens + 2 * ducks),
        Step("legs of the goats", f"4 * {goats}", 4 * goats),
        Step("legs altogether", f"{2 * hens + 2 * ducks} + {4 * goats}", legs),
    ]
    return _check_steps(Problem("legs", question, steps, legs, "legs", dict(n=n)))


def bench_training(rng: random.Random) -> Problem:
    n = rng.choice(BENCH_NAMES)
    start, inc, weeks = rng.randint(5, 20), rng.randint(1, 5), rng.randint(4, 10)
    last = start + inc * (weeks - 1)
    total = weeks * (start + last) // 2
    if weeks * (start + last) % 2:
        weeks += 1
        last = start + inc * (weeks - 1)
        total = weeks * (start + last) // 2
    question = rng.choice(
        [f"{n} is training for a half marathon. She runs {start} miles during the first week and adds {inc} "
         f"miles to her weekly distance every week after that. How many miles will she have run in total by the "
         f"end of week {weeks}?",
         f"To get ready for a charity swim, {n} swims {start} laps in week one and increases her weekly laps by "
         f"{inc} each week. Over the first {weeks} weeks of her plan, how many laps does she swim altogether?"]
    )  # fmt: skip
    steps = [
        Step("the final week", f"{start} + {inc} * {weeks - 1}", last),
        Step("the total", f"{weeks} * ({start} + {last}) / 2", total),
    ]
    return _check_steps(Problem("training", question, steps, total, "", dict(n=n)))


BENCH_FAMILIES = [bench_bake_sale, bench_reading, bench_tank, bench_bus, bench_pencils, bench_tickets, bench_legs,
                  bench_training]  # fmt: skip
BENCH_NAMES = [
    "Natalia",
    "Weng",
    "Betty",
    "Julie",
    "James",
    "Albert",
    "Mark",
    "Ken",
    "Tina",
    "Randy",
    "Joy",
    "Brandon",
]


def render_gsm_bench(p: Problem, rng: random.Random) -> str:
    """Benchmark answers: GSM8K-style lines in the benchmark's own wording (never the corpus's)."""
    lines = []
    for s in p.steps:
        e = s.expr.replace(" ", "")
        lines.append(
            rng.choice(
                [
                    f"There are {s.expr.replace(' * ', '*')}=<<{e}={s.value}>>{s.value} {s.desc}.",
                    f"We get {s.desc}: {s.expr.replace(' * ', 'x')}=<<{e}={s.value}>>{s.value}.",
                ]
            )
        )
    return "\n".join(lines) + f"\n#### {p.answer}"


# ------------------------------------------------------------------------------------------------- renderers
def _plain(expr: str, times: str = "×") -> str:
    return expr.replace(" * ", f" {times} ")


def _latex(expr: str) -> str:
    m = re.fullmatch(r"(\S+) / (\S+)", expr)
    if m:
        return f"\\frac{{{m[1]}}}{{{m[2]}}}"
    return expr.replace(" * ", " \\times ").replace(" / ", " \\div ")


def _answer_str(p: Problem) -> str:
    return f"${p.answer}" if p.unit == "$" and p.answer >= 0 else str(p.answer)


def render_gsm(p: Problem, rng: random.Random) -> str:
    """GSM8K-style answer: one line per step with <<expr=value>> calculator notes, then '#### n'."""
    times = rng.choice(["*", "x"])
    forms = [
        "{D} is {e} = <<{c}={v}>>{v}.",
        "So {d} is {e} = <<{c}={v}>>{v}.",
        "That makes {d} {e} = <<{c}={v}>>{v}.",
        "{D}: {e} = <<{c}={v}>>{v}.",
        "Next comes {d}, {e} = <<{c}={v}>>{v}.",
        "We need {d}, which works out to {e} = <<{c}={v}>>{v}.",
        "Computing {d} gives {e} = <<{c}={v}>>{v}.",
        "{D} equals {e} = <<{c}={v}>>{v}.",
    ]
    lines = []
    for s in p.steps:
        if " " not in s.expr:
            continue
        form = rng.choice(forms)
        lines.append(
            form.format(D=cap(s.desc), d=s.desc, e=_plain(s.expr, times), c=s.expr.replace(" ", ""), v=s.value)
        )
    return "\n".join(lines) + f"\n#### {p.answer}"


def render_solution(p: Problem, rng: random.Random) -> str:
    """MATH-style solution with LaTeX and a final \\boxed{} answer."""
    first = rng.choice(
        ["First,", "To begin,", "We start by noting that", "Observe first that", "Let us compute step by step.",
         "The plan is to work forward from the given data:"]
    )  # fmt: skip
    out = []
    for s in p.steps:
        if " " not in s.expr:
            continue
        lead = (
            first
            if not out
            else rng.choice(
                ["Then", "Next,", "Now", "It follows that", "So", "Consequently", "With that,", "In turn,", "Hence"]
            )
        )
        out.append(f"{lead} {s.desc} is ${_latex(s.expr)} = {s.value}$.")
    out.append(
        rng.choice(
            [
                "Therefore the answer is",
                "Hence the answer is",
                "So the final answer is",
                "We conclude that the answer is",
                "The requested value is therefore",
                "All together, the result is",
            ]
        )  # fmt: skip
        + f" $\\boxed{{{p.answer}}}$."
    )
    return " ".join(out)


OPENERS = [
    "Okay, let me work through this.", "Alright, so the question is asking for {goal}.",
    "Let me start by figuring out what is being asked.",
    "Hmm, this is a multi-step problem, so I'll go one piece at a time.",
    "So I need to find {goal}.", "Let's see. The goal is {goal}.", "First, let me restate what we know.",
    "I want {goal}, so let me set up the pieces.", "Right, {goal} is the target here.",
    "Let me read this carefully and pick out the numbers.", "Time to break this into small computations.",
    "The question boils down to {goal}. Let me get there in steps.",
]  # fmt: skip
LINKS = ["First,", "Next,", "Then", "After that,", "Now", "Okay, and", "So", "Moving on,", "With that done,",
         "Building on this,", "Good. Now", "From there,"]  # fmt: skip
SAYS = [
    "I need {d}. That's {e} = {v}.", "{d} comes to {e} = {v}.", "let me compute {d}: {e} = {v}.",
    "{d} should be {e}, which is {v}.", "for {d} I get {e} = {v}.", "{d}: {e} gives {v}.",
    "working out {d}, {e} = {v}.", "{d} is what I want next, and {e} = {v}.", "I'll compute {d}; {e} = {v}.",
]  # fmt: skip
CLOSERS = [
    "So the answer is {a}.", "That gives {a}.", "So the final answer should be {a}.",
    "Everything checks out, so the answer is {a}.", "Therefore, the result is {a}.",
    "I'm fairly sure of this now: {a}.", "Putting it together, I get {a}.", "That settles it, {a}.",
]  # fmt: skip


def split_product(rng: random.Random, a: int, b: int) -> str:
    """An explained product a × b, chosen among a few decompositions; every chain is arithmetically exact."""
    if b > a:
        a, b = b, a
    forms = ["direct"]
    if b >= 10:
        forms += ["tens", "tens"]
    if b % 10 >= 6 and b >= 10:
        forms.append("round")
    if a >= 20:
        forms.append("split_a")
    form = rng.choice(forms)
    if form == "tens":
        t, o = b - b % 10, b % 10
        if o == 0:
            return f"{a} × {b} = {a * b}"
        return f"{a} × {b} = {a} × {t} + {a} × {o} = {a * t} + {a * o} = {a * b}"
    if form == "round":
        up = b + (10 - b % 10)
        return f"{a} × {b} = {a} × {up} - {a} × {up - b} = {a * up} - {a * (up - b)} = {a * b}"
    if form == "split_a":
        t, o = a - a % 10, a % 10
        if o == 0:
            return f"{a} × {b} = {a * b}"
        return f"{a} × {b} = {t} × {b} + {o} × {b} = {t * b} + {o * b} = {a * b}"
    return f"{a} × {b} = {a * b}"


def render_think(p: Problem, rng: random.Random) -> str:
    """An exploratory reasoning trace (no tags) for a short problem."""
    goal = p.steps[-1].desc
    parts = [rng.choice(OPENERS).format(goal=goal)]
    if rng.random() < 0.5:
        parts.append(rng.choice(["The problem says:", "Restating:", "Key facts:"]) + " " + p.question)
    for i, s in enumerate(p.steps):
        if " " not in s.expr:
            parts.append(f"That means {s.desc} is {s.value}.")
            continue
        say = rng.choice(SAYS).format(d=s.desc, e=_plain(s.expr), v=s.value)
        parts.append(f"{LINKS[i] if i < 2 else rng.choice(LINKS[2:])} {say}")
        m = re.fullmatch(r"(\d+) \* (\d+)", s.expr)
        if m and rng.random() < 0.5 and int(m[1]) >= 10 and int(m[2]) >= 10:
            parts.append(
                rng.choice(["Let me double-check that product:", "Quick check:", "Verifying:"])
                + " "
                + split_product(rng, int(m[1]), int(m[2]))
                + ". Good."
            )
    if rng.random() < 0.3:
        parts.append(
            rng.choice(
                [
                    "Wait, did I use the right numbers?",
                    "Hmm, let me re-read the question.",
                    "Let me make sure I didn't skip a step.",
                ]
            )
            + " "
            + rng.choice(["Yes, that's consistent.", "Looks right.", "No, it all matches."])
        )
    parts.append(rng.choice(CLOSERS).format(a=_answer_str(p)))
    sep = rng.choice([" ", "\n\n", "\n"])
    return sep.join(parts)


def render_answer(p: Problem, rng: random.Random) -> str:
    """The visible answer of an assistant turn (after the reasoning)."""
    steps = "; ".join(f"{s.desc} = {s.value}" for s in p.steps if " " in s.expr)
    return rng.choice(
        [
            f"{cap(steps)}.\n\nThe answer is **{_answer_str(p)}**.",
            f"Working it out step by step: {steps}.\n\n$\\boxed{{{p.answer}}}$",
            f"**Answer: {_answer_str(p)}**",
            f"{cap(p.steps[-1].desc)} is {_answer_str(p)}.\n\n#### {p.answer}",
        ]
    )


def render_marco(p: Problem, rng: random.Random) -> str:
    """Marco-o1-like response: lower-case exploratory <Thought> then a short <Output>."""
    thought = render_think(p, rng)
    thought = thought[:1].lower() + thought[1:]
    out = f"{cap(p.steps[-1].desc)} is {_answer_str(p)}."
    return f"<Thought>\n{thought}\n</Thought>\n<Output>\n{out}\n</Output>"


# ------------------------------------------------------------------------------------------------- trace pool
POOL_STYLES = ("think", "solution", "gsm", "marco")


def slipped(p: Problem, rng: random.Random) -> Problem:
    """The same problem solved with an arithmetic slip in its last step: a wrong answer, written with conviction."""
    delta = rng.choice([-10, -2, -1, 1, 2, 10]) if p.answer > 10 else rng.choice([1, 2, 3])
    last = p.steps[-1]
    steps = p.steps[:-1] + [Step(last.desc, last.expr, last.value + delta)]
    return Problem(p.family, p.question, steps, p.answer + delta, p.unit, p.params)


def pool_trace(p: Problem, rng: random.Random, style: str) -> tuple[str, str]:
    """(reasoning, visible answer) of one trace of `p` in a style: exploratory thinking, MATH-style, GSM-style lines
    or Marco-o1-like lower-case thinking."""
    if style == "solution":  # the steps, then the sentence with the boxed answer
        text = render_solution(p, rng)
        cut = text.rfind("$. ") + 2
        return text[:cut], text[cut:].strip()
    if style == "gsm":
        lines = render_gsm(p, rng).split("\n")
        return "\n".join(lines[:-1]), lines[-1]
    thought = render_think(p, rng)
    if style == "marco":
        thought = thought[:1].lower() + thought[1:]
    return thought, render_answer(p, rng)


def trace_pool(
    rng: random.Random, draw: Callable[[random.Random], Problem], problems: int, traces: int
) -> tuple[list[dict], list[str]]:
    """`problems` problems with `traces` traces each, about a third of them wrong (never all): (records
    `{id, problem, reasoning, solution, gold}`, ids of the wrong ones). The traces of one problem are regenerated
    while two of them are too similar (3-token-shingle Jaccard >= 0.45 of the whole records), so near-dedup keeps
    them all."""
    records, wrong_ids = [], []
    for i in range(problems):
        p = draw(rng)
        wrong = set(rng.sample(range(traces), max(1, traces // 3))) if traces > 1 else set()
        kept: list[set] = []
        for j in range(traces):
            for _ in range(30):
                style = POOL_STYLES[(i + j) % len(POOL_STYLES)] if _ == 0 else rng.choice(POOL_STYLES)
                reasoning, answer = pool_trace(slipped(p, rng) if j in wrong else p, rng, style)
                sh = shingles(f"{p.question}\n{reasoning}\n{answer}")
                if all(jaccard(sh, other) < 0.45 for other in kept):
                    break
            kept.append(sh)
            if j in wrong:
                wrong_ids.append(f"pool-{i}-{j}")
            records.append(
                {"id": f"pool-{i}-{j}", "problem": p.question, "reasoning": reasoning, "solution": answer,
                 "gold": str(p.answer)}
            )  # fmt: skip
    return records, wrong_ids


# ------------------------------------------------------------------------------------------ long reasoning traces
@dataclass
class LongTrace:
    family: str
    question: str
    reasoning: str
    content: str  # the visible final answer
    answer: int


def _sum_chain(rng: random.Random, values: list[int], start: int = 0) -> tuple[list[str], int]:
    """Running additions 'a + b = c' of values (starting from `start`), one clause per value."""
    out, acc = [], start
    for i, v in enumerate(values):
        if i == 0 and start == 0:
            acc = v
            continue
        out.append(f"{acc} + {fmt(v)} = {acc + v}")
        acc += v
    return out, acc


def long_ledger(rng: random.Random, target: int) -> LongTrace:
    """Weekend/week revenue of a store from a units table: product by product, then re-checked day by day."""
    ndays0, weekend = rng.randint(3, 5), rng.random() < 0.5
    store = rng.choice(["hardware store", "garden center", "home improvement shop", "builders' merchant"])
    seed = rng.random()
    for ndays, k in [(nd, k) for nd in range(ndays0, 8) for k in range(10, len(PRODUCTS) + 1, 2)]:
        days = DAYS[7 - ndays :] if weekend else DAYS[:ndays]
        r = random.Random(seed)
        items = r.sample(PRODUCTS, k)
        units = [[r.randint(3, 60) for _ in days] for _ in items]
        prices = [r.randint(3, 95) for _ in items]
        reasoning, total = _ledger_trace(r, items, days, units, prices)
        if len(reasoning) >= target:
            break
    header = "| product | unit price | " + " | ".join(days) + " |\n|---|---|" + "---|" * len(days) + "\n"
    rows = "".join(f"| {it} | ${pr} | " + " | ".join(map(str, u)) + " |\n" for it, pr, u in zip(items, prices, units))
    question = (
        rng.choice(
            [
                f"A {store} tracked how many units of {len(items)} products it sold on {', '.join(days[:-1])} and "
                f"{days[-1]}. Using the table below, compute the total revenue for those days.",
                f"Here are the sales figures of a {store} for {len(days)} days. What was the total revenue (units "
                f"sold times unit price, summed over all products and days)?",
            ]
        )
        + "\n\n"
        + header
        + rows
    )
    content = rng.choice(
        [
            f"Summing units per product, multiplying by the unit price and adding everything up (and cross-checking "
            f"with day-by-day totals) gives a total revenue of **${total}**.\n\n$\\boxed{{{total}}}$",
            f"The total revenue over the {len(days)} days is ${total}.\n\n#### {total}",
        ]
    )
    return LongTrace("ledger", question, reasoning, content, total)


def _ledger_trace(rng, items, days, units, prices) -> tuple[str, int]:
    p = []
    p.append(
        rng.choice(
            [
                "Alright, I need the total revenue. The cleanest route is to add up the units for each product first, "
                "multiply by the unit price, and then add the products together.",
                "Okay, so this is a big table. Let me go product by product: total units across the days, times the "
                "price, and keep a running total. Afterwards I can verify by computing each day's revenue separately.",
                "Let me think about how to organize this. Revenue is units times price, so for each product I'll sum "
                "its units over the days and multiply once, which saves a lot of multiplications.",
            ]
        )
    )
    running, revenues, unit_totals = 0, [], []
    for i, (it, u, pr) in enumerate(zip(items, units, prices)):
        adds, s = _sum_chain(rng, u)
        intro = rng.choice(
            [
                f"Next up: {it}.",
                f"Now the {it}.",
                f"Product {i + 1} is {it}.",
                f"Moving on to {it}.",
                f"Then {it}.",
                f"Okay, {it}.",
            ]
        )
        unit_txt = rng.choice(
            [
                f"The units are {', '.join(map(str, u))}. Adding: {', then '.join(adds)}.",
                f"Units sold: {', '.join(map(str, u))}. So {'; '.join(adds)}.",
                f"Summing the units {' + '.join(map(str, u))}: {', '.join(adds)}.",
            ]
        )
        mult = split_product(rng, s, pr)
        rev = s * pr
        mult_txt = rng.choice(
            [
                f"That's {s} units at ${pr}, so {mult}.",
                f"{s} of them at ${pr} each: {mult}.",
                f"Revenue for the {it} is {s} × {pr}. Breaking it down, {mult}.",
                f"Now multiply by the price of ${pr}: {mult}.",
            ]
        )
        if rng.random() < 0.25 and s >= 10:
            mult_txt += (
                " "
                + rng.choice(["Hmm, let me double-check that one.", "Wait, let me verify.", "Let me make sure:"])
                + " "
                + split_product(rng, pr, s)
                + ". Yes."
            )
        run_txt = ""
        if running:
            run_txt = rng.choice(
                [
                    f"Running total: {running} + {rev} = {running + rev}.",
                    f"Adding to what I had: {running} + {rev} = {running + rev}.",
                    f"So far that's {running} + {rev} = {running + rev}.",
                ]
            )
        running += rev
        revenues.append(rev)
        unit_totals.append(s)
        p.append(" ".join(x for x in (intro, unit_txt, mult_txt, run_txt) if x))
    p.append(
        rng.choice(
            [
                f"So the product-by-product total is {running}. That's a lot of arithmetic, so let me verify it a "
                "different way: compute the revenue of each day and add those.",
                f"That gives {running} in total. Hmm, I could have slipped somewhere. Let me redo it by day instead.",
                f"Total so far: {running}. Before I commit to this, I'll cross-check with day-by-day revenue.",
            ]
        )
    )
    day_totals = []
    for d, day in enumerate(days):
        prods = [
            split_product(rng, u[d], pr) if rng.random() < 0.6 else f"{u[d]} × {pr} = {u[d] * pr}"
            for u, pr in zip(units, prices)
        ]
        adds, s = _sum_chain(rng, [u[d] * pr for u, pr in zip(units, prices)])
        p.append(
            rng.choice([f"{day}:", f"For {day}:", f"On {day} the products give"])
            + " "
            + "; ".join(prods)
            + ". "
            + rng.choice(["Adding these up: ", "Summing: ", "Now the sum: "])
            + ", ".join(adds)
            + f". So {day} brought in {s}."
        )
        day_totals.append(s)
    adds, grand = _sum_chain(rng, day_totals)
    verdict = "matches" if grand == running else "does not match"
    p.append(f"Adding the days: {', '.join(adds)}. That {verdict} the product-by-product total of {running}.")
    adds_u, tu = _sum_chain(rng, unit_totals)
    p.append(
        rng.choice(["One more sanity check on the unit counts.", "Let me also make sure I counted the units right."])
        + f" Per product the totals are {', '.join(map(str, unit_totals))}, and {', '.join(adds_u)}. "
        + rng.choice(["By day instead:", "Counting by day:"])
        + " "
        + "; ".join(
            f"{day}: {' + '.join(str(u[d]) for u in units)} = {sum(u[d] for u in units)}" for d, day in enumerate(days)
        )
        + ". "
        + " + ".join(str(sum(u[d] for u in units)) for d in range(len(days)))
        + f" = {tu}. Good, the unit counts agree."
    )
    p.append(
        rng.choice(
            [
                f"So the total revenue is ${running}.",
                f"Therefore the answer is {running}.",
                f"I'm confident now: the total revenue is {running} dollars.",
            ]
        )
    )
    return "\n\n".join(p), running


def long_savings(rng: random.Random, target: int) -> LongTrace:
    """Month-by-month simulation of an account with deposits, fees, quarterly bonuses and one-off expenses."""
    n = rng.choice(NAMES)
    seed = rng.random()
    for months in range(12, 241, 6):
        r = random.Random(seed)
        start, dep, fee, bonus = r.randint(200, 3000), r.randint(80, 450), r.randint(4, 30), r.randint(25, 200)
        events = {
            m: (
                r.choice(
                    [
                        "a car repair",
                        "a new laptop",
                        "a dentist bill",
                        "a flight home",
                        "a phone",
                        "a wedding gift",
                        "new tyres",
                        "a vet visit",
                    ]
                ),
                r.randint(60, 900),
            )
            for m in r.sample(range(2, months + 1), max(2, months // 8))
        }
        reasoning, final = _savings_trace(r, n, months, start, dep, fee, bonus, events)
        if len(reasoning) >= target:
            break
    ev = "; ".join(f"in month {m} {n} pays for {what} (${cost})" for m, (what, cost) in sorted(events.items()))
    question = rng.choice(
        [
            f"{n} opens a savings account with ${start}. At the start of every month {n} deposits ${dep}, and at the "
            f"end of every month the bank charges a ${fee} fee. At the end of every third month the bank adds a "
            f"${bonus} loyalty bonus. Additionally, {ev}. What is the balance after {months} months?",
            f"A savings account begins at ${start}. Each month: deposit ${dep} first, then a ${fee} account fee is "
            f"taken off; every 3rd month a ${bonus} bonus is credited after the fee. One-off withdrawals: {ev}. "
            f"Find the balance at the end of month {months}.",
        ]
    )
    content = rng.choice(
        [
            f"After {months} months the balance is **${final}**.\n\n$\\boxed{{{final}}}$",
            f"Final balance: ${final}.\n\n#### {final}",
        ]
    )
    return LongTrace("savings", question, reasoning, content, final)


def _savings_trace(rng, n, months, start, dep, fee, bonus, events) -> tuple[str, int]:
    p = [
        rng.choice(
            [
                f"Okay, let me simulate the account month by month, starting from {start}. Each month: add {dep}, "
                f"subtract {fee}, add {bonus} at quarter ends, and subtract any one-off expense.",
                f"This is easiest done as a month-by-month table. Start: {start}. The order inside a month is "
                "deposit, "
                "fee, then bonus if it's a multiple of three, and the extra expenses.",
            ]
        )
    ]
    bal, checkpoints = start, {}
    for m in range(1, months + 1):
        s = []
        b0 = bal
        s.append(
            rng.choice(
                [
                    f"Month {m}: {bal} + {dep} = {bal + dep}",
                    f"Month {m} starts at {bal}; deposit gives {bal} + {dep} = {bal + dep}",
                ]
            )
        )
        bal += dep
        s.append(
            rng.choice(
                [f"minus the fee, {bal} - {fee} = {bal - fee}", f"then {bal} - {fee} = {bal - fee} after the fee"]
            )
        )
        bal -= fee
        if m % 3 == 0:
            s.append(
                rng.choice(
                    [
                        f"quarter end, so the bonus: {bal} + {bonus} = {bal + bonus}",
                        f"it's a multiple of 3, bonus time: {bal} + {bonus} = {bal + bonus}",
                    ]
                )
            )
            bal += bonus
        if m in events:
            what, cost = events[m]
            s.append(
                rng.choice(
                    [
                        f"and {what} costs {cost}: {bal} - {cost} = {bal - cost}",
                        f"oh, and this is the month of {what}, so {bal} - {cost} = {bal - cost}",
                    ]
                )
            )
            bal -= cost
        line = ", ".join(s) + "."
        if rng.random() < 0.15:
            line += " " + rng.choice(
                [
                    f"Net change this month: {bal} - {b0} = {bal - b0}.",
                    f"So the month moved the balance from {b0} to {bal}.",
                ]
            )
        p.append(line)
        if m % 12 == 0:
            checkpoints[m] = bal
            p.append(
                rng.choice([f"End of year {m // 12}: the balance is {bal}.", f"That closes year {m // 12} at {bal}."])
            )
    p.append(
        rng.choice(
            [
                f"So the simulation ends at {bal}. Let me verify with totals instead of month by month.",
                f"Final balance from the simulation: {bal}. That's a long chain, so let me check it with a formula.",
            ]
        )
    )
    q = months // 3
    costs = [c for _, c in sorted(events.values(), key=lambda e: e[1])]
    adds, ex = _sum_chain(rng, costs)
    p.append(
        f"Deposits: {months} × {dep} = {months * dep}. Fees: {months} × {fee} = {months * fee}. "
        f"Bonuses: there are {q} quarter ends, so {q} × {bonus} = {q * bonus}. "
        f"Expenses: {', '.join(adds) if adds else costs[0]}, total {ex}."
    )
    v1 = start + months * dep
    v2 = v1 - months * fee
    v3 = v2 + q * bonus
    v4 = v3 - ex
    p.append(
        f"Then {start} + {months * dep} = {v1}, {v1} - {months * fee} = {v2}, {v2} + {q * bonus} = {v3}, and "
        f"{v3} - {ex} = {v4}. " + ("That matches the simulation." if v4 == bal else "That does not match!")
    )
    for m, cb in checkpoints.items():
        e_m = sum(c for mm, (_, c) in events.items() if mm <= m)
        p.append(
            rng.choice(["Checking a yearly checkpoint too:", "And the checkpoint at month " + str(m) + ":"])
            + f" {start} + {m} × {dep} - {m} × {fee} + {m // 3} × {bonus} - {e_m} = {cb}."
        )
    p.append(rng.choice([f"So the final balance is {bal}.", f"Everything agrees: {bal} dollars."]))
    return "\n\n".join(p), bal


def _det3(m: list[list[int]]) -> int:
    return (
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    )


def _det3_text(rng: random.Random, name: str, m: list[list[int]]) -> tuple[str, int]:
    minors = []
    txt = [f"For {name}, expanding along the first row."]
    for j, (a, b, c, d) in enumerate(
        [
            (m[1][1], m[2][2], m[1][2], m[2][1]),
            (m[1][0], m[2][2], m[1][2], m[2][0]),
            (m[1][0], m[2][1], m[1][1], m[2][0]),
        ]
    ):
        v = a * b - c * d
        minors.append(v)
        txt.append(f"Minor {j + 1}: {fmt(a)} × {fmt(b)} - {fmt(c)} × {fmt(d)} = {fmt(a * b)} - {fmt(c * d)} = {v}.")
    det = m[0][0] * minors[0] - m[0][1] * minors[1] + m[0][2] * minors[2]
    t = [m[0][0] * minors[0], m[0][1] * minors[1], m[0][2] * minors[2]]
    txt.append(
        f"So {name} = {fmt(m[0][0])} × {fmt(minors[0])} - {fmt(m[0][1])} × {fmt(minors[1])} + {fmt(m[0][2])} × "
        f"{fmt(minors[2])} = {fmt(t[0])} - {fmt(t[1])} + {fmt(t[2])} = {det}."
    )
    assert det == _det3(m)
    return " ".join(txt), det


def _term(c: int, v: str, first: bool) -> str:
    sign = "" if first and c >= 0 else ("-" if first else ("- " if c < 0 else "+ "))
    mag = abs(c)
    return f"{sign}{'' if mag == 1 else mag}{v}"


def _lin(coeffs: list[int], names: str, rhs: int) -> str:
    """A linear equation in LaTeX, e.g. $3x - y + 2z = 7$ (zero terms left out)."""
    terms = [(c, v) for c, v in zip(coeffs, names) if c]
    return "$" + " ".join(_term(c, v, i == 0) for i, (c, v) in enumerate(terms)) + f" = {rhs}$"


def _eq_text(row: list[int], rhs: int) -> str:
    return _lin(row, "xyz", rhs)


def _system_trace(rng: random.Random, idx: int, A: list[list[int]], sol: list[int], b: list[int]) -> str:
    p = [
        rng.choice([f"System {idx}.", f"Now system {idx}.", f"On to system {idx}."])
        + " The equations are "
        + ", ".join(_eq_text(r, v) for r, v in zip(A, b))
        + "."
    ]
    p.append(
        rng.choice(
            [
                "I'll use elimination first, without fractions.",
                "Let me eliminate $x$ from the second and third equations by cross-multiplying.",
                "Elimination seems fine here; I'll keep everything as integers.",
            ]
        )
    )
    rows = [A[i] + [b[i]] for i in range(3)]
    new = []
    for i in (1, 2):
        a, c = rows[0][0], rows[i][0]
        coeffs = []
        parts = []
        for j in range(1, 4):
            v = a * rows[i][j] - c * rows[0][j]
            coeffs.append(v)
            parts.append(f"{fmt(a)} × {fmt(rows[i][j])} - {fmt(c)} × {fmt(rows[0][j])} = {v}")
        new.append(coeffs)
        p.append(f"Equation {i + 1} times {fmt(a)} minus equation 1 times {fmt(c)}: " + "; ".join(parts) + ".")
    (b1, c1, d1), (b2, c2, d2) = new
    p.append(f"That leaves {_lin([b1, c1], 'yz', d1)} and {_lin([b2, c2], 'yz', d2)}.")
    cz = b1 * c2 - b2 * c1
    dz = b1 * d2 - b2 * d1
    p.append(
        f"Eliminate $y$: the $z$ coefficient is {fmt(b1)} × {fmt(c2)} - {fmt(b2)} × {fmt(c1)} = {cz} and the right "
        f"side is {fmt(b1)} × {fmt(d2)} - {fmt(b2)} × {fmt(d1)} = {dz}."
    )
    z = sol[2]
    if cz == 0 or b1 == 0:
        p.append("Hmm, that degenerates, so I'll rely on Cramer's rule below.")
    else:
        p.append(f"So $z = {dz} / {fmt(cz)}$, and {fmt(dz)} / {fmt(cz)} = {z}. Check: {fmt(cz)} × {fmt(z)} = {dz}.")
        rest = d1 - c1 * z
        p.append(
            f"Back into the first reduced equation: {fmt(d1)} - {fmt(c1)} × {fmt(z)} = {rest}, so the $y$ term "
            f"equals {rest} and {fmt(rest)} / {fmt(b1)} = {sol[1]}."
        )
        r0 = rows[0]
        rest_x = r0[3] - r0[1] * sol[1] - r0[2] * z
        p.append(
            f"Then for $x$: {fmt(r0[3])} - {fmt(r0[1])} × {fmt(sol[1])} - {fmt(r0[2])} × {fmt(z)} = {rest_x}, and "
            f"{fmt(rest_x)} / {fmt(r0[0])} = {sol[0]}."
        )
    p.append(
        rng.choice(
            [
                "Let me confirm with Cramer's rule, since sign errors are easy here.",
                "To be safe I'll redo it with determinants.",
                "Cross-check with Cramer's rule:",
            ]
        )
    )
    dtxt, D = _det3_text(rng, "$D$", A)
    p.append(dtxt)
    for k, name in enumerate(["$D_x$", "$D_y$", "$D_z$"]):
        M = [[b[i] if j == k else A[i][j] for j in range(3)] for i in range(3)]
        t, Dk = _det3_text(rng, name, M)
        p.append(t + f" Then {fmt(Dk)} / {fmt(D)} = {sol[k]}.")
    checks = []
    for r, v in zip(A, b):
        terms = [r[j] * sol[j] for j in range(3)]
        checks.append(
            f"{fmt(r[0])} × {fmt(sol[0])} + {fmt(r[1])} × {fmt(sol[1])} + {fmt(r[2])} × {fmt(sol[2])} = "
            f"{fmt(terms[0])} + {fmt(terms[1])} + {fmt(terms[2])} = {v}"
        )
    p.append(
        rng.choice(["Substituting back:", "Plugging in to be sure:", "Final check by substitution:"])
        + " "
        + "; ".join(checks)
        + f". So $(x, y, z) = ({sol[0]}, {sol[1]}, {sol[2]})$."
    )
    return "\n\n".join(p)


def long_systems(rng: random.Random, target: int) -> LongTrace:
    """Several 3x3 linear systems, each solved by elimination and confirmed by Cramer's rule and substitution."""
    systems, texts = [], []
    total = 0
    intro = rng.choice(
        [
            "Okay, several systems to solve. I'll do each one carefully and then add up all the unknowns.",
            "Let me take these one at a time. For each system I'll eliminate, then confirm with determinants.",
        ]
    )
    while len(intro) + sum(len(t) for t in texts) < target:
        while True:
            A = [[rng.choice([v for v in range(-6, 8) if v]) for _ in range(3)] for _ in range(3)]
            if _det3(A) != 0:
                break
        sol = [rng.randint(-9, 9) for _ in range(3)]
        b = [sum(A[i][j] * sol[j] for j in range(3)) for i in range(3)]
        systems.append((A, b, sol))
        texts.append(_system_trace(rng, len(systems), A, sol, b))
        total += sum(sol)
    sums = [sum(s) for _, _, s in systems]
    adds, tot = _sum_chain(rng, sums)
    assert tot == total
    tail = (
        "Now the requested total. The sums $x + y + z$ per system are "
        + ", ".join(f"{fmt(s[0])} + {fmt(s[1])} + {fmt(s[2])} = {sum(s)}" for _, _, s in systems)
        + ". Adding them: "
        + (", ".join(adds) if adds else str(total))
        + f". So the answer is {total}."
    )
    question = (
        rng.choice(
            [
                "Solve each of the following systems of linear equations. Then give the sum of all the unknowns "
                "(x + y + z, added over every system).",
                "For every system below, find the unique solution $(x, y, z)$. What is the total of all solution "
                "components across the systems?",
            ]
        )
        + "\n\n"
        + "\n\n".join(
            f"System {i + 1}: " + ", ".join(_eq_text(r, v) for r, v in zip(A, bb))
            for i, (A, bb, _) in enumerate(systems)
        )
    )
    sol_list = "; ".join(f"system {i + 1}: $({s[0]}, {s[1]}, {s[2]})$" for i, (_, _, s) in enumerate(systems))
    content = f"Solutions: {sol_list}. The sum of all unknowns is $\\boxed{{{total}}}$."
    return LongTrace("systems", question, intro + "\n\n" + "\n\n".join(texts) + "\n\n" + tail, content, total)


LONG_FAMILIES = [long_ledger, long_savings, long_systems]


def make_long(rng: random.Random, target: int) -> LongTrace:
    return rng.choice(LONG_FAMILIES)(rng, target)


# Arithmetic checker: every chain "E = E = ..." of pure integer arithmetic in a text must hold.
_NUM = r"(?:\(-?\d+\)|-?\d+)(?![\w.^(])"
_OP = r"\s*(?:[-+×*/]|\\times|\\cdot|\\div)\s*"
_EXPR = rf"{_NUM}(?:{_OP}{_NUM})*"
_CHAIN = re.compile(rf"(?<![\w.^)$\\/]){_EXPR}(?:\s*=\s*{_EXPR})+")


def check_arithmetic(text: str) -> tuple[int, list[str]]:
    """(number of chains with an operator checked, chains that are false). Plain 'a = b' chains are skipped."""
    checked, errors = 0, []
    for m in _CHAIN.finditer(text):
        parts = [s.strip() for s in m.group(0).split("=")]
        if not any(re.search(r"[\d)]\s*(?:[-+×*/]|\\times|\\cdot|\\div)", s) for s in parts):
            continue
        py = [re.sub(r"×|\\times|\\cdot", "*", s).replace("\\div", "/") for s in parts]
        vals = [eval(s) for s in py]  # noqa: S307 - digits, parentheses and operators only
        checked += 1
        if any(abs(v - vals[0]) > 1e-9 for v in vals):
            errors.append(m.group(0))
    return checked, errors


# ------------------------------------------------------------------------------------------------- math prose
_USED_PAIRS: dict[str, set[tuple[int, int]]] = {}  # reset by build(): per bank, item pairs already used together


def _combo(rng: random.Random, bank: str, n: int, size: int) -> list[int]:
    """`size` distinct indices of range(n) in random order, preferring sets whose index pairs no earlier document of
    the same bank used (so two documents rarely share more than one topic or snippet)."""
    used = _USED_PAIRS.setdefault(bank, set())
    best, best_reused = [], 99
    for _ in range(80):
        picked = sorted(rng.sample(range(n), size))
        reused = sum(pair in used for pair in itertools.combinations(picked, 2))
        if reused < best_reused:
            best, best_reused = picked, reused
        if not reused:
            break
    used.update(itertools.combinations(best, 2))
    return rng.sample(best, size)


def _topic_choice(rng: random.Random) -> list[Callable[[random.Random], list[str]]]:
    return [PROSE_TOPICS[i] for i in _combo(rng, "math", len(PROSE_TOPICS), 3)]


def math_prose(rng: random.Random) -> str:
    """Lecture-note style LaTeX: 3-4 topics (definition/lemma/theorem, proof, worked example with fresh numbers),
    some blocks left out, with optional intro, transitions and exercises, so that two documents rarely overlap."""
    parts = [rng.choice(INTROS)] if rng.random() < 0.4 else []
    for t, topic in enumerate(_topic_choice(rng)):
        blocks = topic(rng)
        if t and rng.random() < 0.5:
            parts.append(rng.choice(TRANSITIONS))
        # keep the statement and the example; a proof or a middle block is sometimes left out
        parts += [b for i, b in enumerate(blocks) if i in (0, len(blocks) - 1) or rng.random() < 0.75]
        if rng.random() < 0.2:
            parts.append(rng.choice(EXERCISES).format(a=rng.randint(2, 60), b=rng.randint(2, 60)))
    return "\n\n".join(parts)


def _env(rng: random.Random, kinds: list[str]) -> str:
    return rng.choice(kinds)


def _topic_sums(rng: random.Random) -> list[str]:
    n = rng.randint(5, 30)
    v = rng.choice("nmk")
    env = _env(rng, ["lemma", "proposition", "theorem"])
    s2 = n * (n + 1) * (2 * n + 1) // 6
    return [
        f"\\begin{{{env}}}\nFor every integer ${v} \\geq 1$ we have $\\sum_{{i=1}}^{{{v}}} i^2 = "
        f"\\frac{{{v}({v}+1)(2{v}+1)}}{{6}}$.\n\\end{{{env}}}",
        f"\\begin{{proof}}\nWe argue by induction on ${v}$. For ${v} = 1$ both sides equal $1$. Suppose the identity "
        f"holds for ${v}$. Then $\\sum_{{i=1}}^{{{v}+1}} i^2 = \\frac{{{v}({v}+1)(2{v}+1)}}{{6}} + ({v}+1)^2 = "
        f"\\frac{{({v}+1)({v}+2)(2{v}+3)}}{{6}}$, since $2{v}^2 + 7{v} + 6 = ({v}+2)(2{v}+3)$. This completes the "
        f"induction.\n\\end{{proof}}",
        rng.choice(["For instance,", "As an example,", "In particular,"])
        + f" with ${v} = {n}$ the sum of the first {n} squares is "
        f"$\\frac{{{n} \\cdot {n + 1} \\cdot {2 * n + 1}}}{{6}}"
        f" = {s2}$.",
    ]


def _topic_gcd(rng: random.Random) -> list[str]:
    a, b = rng.randint(30, 900), rng.randint(30, 900)
    g = math.gcd(a, b)
    return [
        rng.choice(["\\begin{definition}", "\\begin{defn}"])
        + "\nLet $a, b$ be integers, not both zero. The \\emph{greatest common divisor} $\\gcd(a, b)$ is the largest "
        "positive integer $d$ with $d \\mid a$ and $d \\mid b$.\n" + ("\\end{definition}" if True else ""),
        "\\begin{lemma}\nIf $a = qb + r$ with $0 \\le r < |b|$, then $\\gcd(a, b) = \\gcd(b, r)$.\n\\end{lemma}",
        "\\begin{proof}\nAny common divisor of $a$ and $b$ divides $r = a - qb$; conversely any common divisor of $b$ "
        "and $r$ divides $a = qb + r$. The two pairs therefore have the same common divisors, hence the same greatest "
        "one.\n\\end{proof}",
        f"Iterating the lemma gives the Euclidean algorithm; for example $\\gcd({a}, {b}) = {g}$"
        + (", so the two numbers are coprime." if g == 1 else f", and indeed ${a} = {a // g} \\cdot {g}$."),
    ]


def _topic_groups(rng: random.Random) -> list[str]:
    G, H = rng.choice([("G", "H"), ("\\Gamma", "\\Delta"), ("G", "K")])
    f = rng.choice(["\\varphi", "f", "\\psi"])
    n = rng.randint(4, 30)
    divs = [d for d in range(1, n + 1) if n % d == 0]
    return [
        f"\\begin{{definition}}\nLet ${G}$ and ${H}$ be groups. A map ${f}\\colon {G} \\to {H}$ is a "
        f"\\emph{{homomorphism}} if ${f}(xy) = {f}(x){f}(y)$ for all $x, y \\in {G}$. Its kernel is "
        f"$\\ker {f} = \\{{x \\in {G} : {f}(x) = e\\}}$.\n\\end{{definition}}",
        f"\\begin{{{_env(rng, ['lemma', 'proposition'])}}}\nThe kernel of a homomorphism ${f}\\colon {G} \\to {H}$ is "
        f"a normal subgroup of ${G}$.\n\\end{{{_env(rng, ['lemma', 'proposition'])}}}".replace(
            "\\end{proposition}", "\\end{lemma}"
        ).replace("\\begin{proposition}", "\\begin{lemma}"),
        f"\\begin{{proof}}\nIf $x, y \\in \\ker {f}$ then ${f}(xy^{{-1}}) = {f}(x){f}(y)^{{-1}} = e$, so the kernel "
        f"is a subgroup. For $g \\in {G}$ and $x \\in \\ker {f}$ we get ${f}(gxg^{{-1}}) = {f}(g)\\,e\\,"
        f"{f}(g)^{{-1}} = e$, hence $g (\\ker {f}) g^{{-1}} \\subseteq \\ker {f}$.\n\\end{{proof}}",
        f"By Lagrange's theorem the order of any subgroup of a group of order ${n}$ divides ${n}$; the possible orders"
        f" are ${', '.join(map(str, divs))}$.",
    ]


def _topic_metric(rng: random.Random) -> list[str]:
    X = rng.choice(["X", "M", "Y"])
    eps = rng.choice(["\\varepsilon", "r"])
    return [
        f"\\begin{{definition}}\nA \\emph{{metric space}} is a set ${X}$ with a function $d\\colon {X} \\times {X} "
        f"\\to [0, \\infty)$ such that $d(x, y) = 0$ iff $x = y$, $d(x, y) = d(y, x)$, and $d(x, z) \\le d(x, y) + "
        f"d(y, z)$ for all $x, y, z \\in {X}$. The open ball is $B(x, {eps}) = \\{{y : d(x, y) < {eps}\\}}$.\n"
        "\\end{definition}",
        f"\\begin{{lemma}}\nEvery open ball $B(x, {eps})$ in a metric space is an open set.\n\\end{{lemma}}",
        f"\\begin{{proof}}\nLet $y \\in B(x, {eps})$ and put $\\delta = {eps} - d(x, y) > 0$. If $d(y, z) < \\delta$"
        f" then $d(x, z) \\le d(x, y) + d(y, z) < d(x, y) + \\delta = {eps}$, so $B(y, \\delta) \\subseteq "
        f"B(x, {eps})$.\n\\end{{proof}}",
    ]


def _topic_binomial(rng: random.Random) -> list[str]:
    n = rng.randint(3, 8)
    coeffs = [math.comb(n, k) for k in range(n + 1)]
    terms = " + ".join(
        (f"{c}" if c > 1 else "")
        + (f"x^{{{n - k}}}" if n - k > 1 else ("x" if n - k == 1 else ""))
        + (f"y^{{{k}}}" if k > 1 else ("y" if k == 1 else ""))
        for k, c in enumerate(coeffs)
    )
    return [
        "\\begin{theorem}[Binomial theorem]\nFor every $n \\in \\mathbb{N}$, $(x + y)^n = \\sum_{k=0}^{n} "
        "\\binom{n}{k} x^{n-k} y^k$.\n\\end{theorem}",
        "\\begin{proof}\nExpanding the product of $n$ factors $(x + y)$, each term picks $y$ from exactly $k$ factors "
        "and $x$ from the rest; there are $\\binom{n}{k}$ ways to choose those factors.\n\\end{proof}",
        rng.choice(["For example,", "Thus,", "Concretely,"]) + f" $(x + y)^{n} = {terms}$, and setting $x = y = 1$ "
        f"gives $\\sum_k \\binom{{{n}}}{{k}} = 2^{n} = {2**n}$.",
    ]


def _topic_geometric(rng: random.Random) -> list[str]:
    r, n = rng.randint(2, 5), rng.randint(4, 10)
    s = (r**n - 1) // (r - 1)
    return [
        "\\begin{proposition}\nFor $r \\neq 1$ and $n \\ge 1$, $\\sum_{k=0}^{n-1} r^k = \\frac{r^n - 1}{r - 1}$.\n"
        "\\end{proposition}",
        "\\begin{proof}\nLet $S = 1 + r + \\dots + r^{n-1}$. Then $rS - S = r^n - 1$, since all intermediate powers "
        "cancel; dividing by $r - 1 \\ne 0$ gives the claim.\n\\end{proof}",
        f"With $r = {r}$ and $n = {n}$ this gives $\\frac{{{r}^{{{n}}} - 1}}{{{r - 1}}} = {s}$.",
    ]


def _topic_continuity(rng: random.Random) -> list[str]:
    a, b = rng.choice([v for v in range(-9, 10) if v]), rng.randint(-9, 9)
    return [
        "\\begin{definition}\nA function $f\\colon \\mathbb{R} \\to \\mathbb{R}$ is \\emph{continuous at} $x_0$ if "
        "for every $\\varepsilon > 0$ there is $\\delta > 0$ with $|f(x) - f(x_0)| < \\varepsilon$ whenever "
        "$|x - x_0| < \\delta$.\n\\end{definition}",
        f"\\begin{{claim}}\nThe function $f(x) = {a}x {'+' if b >= 0 else '-'} {abs(b)}$ is continuous at every "
        "point.\n\\end{claim}",
        f"\\begin{{proof}}\nGiven $\\varepsilon > 0$ take $\\delta = \\varepsilon / {abs(a)}$. Then $|f(x) - f(x_0)|"
        f" = {abs(a)}|x - x_0| < {abs(a)}\\delta = \\varepsilon$.\n\\end{{proof}}",
    ]


def _topic_graphs(rng: random.Random) -> list[str]:
    degs = [rng.randint(1, 6) for _ in range(rng.randint(5, 9))]
    if sum(degs) % 2:
        degs[0] += 1
    return [
        "\\begin{lemma}[Handshake lemma]\nIn every finite graph $G = (V, E)$, $\\sum_{v \\in V} \\deg(v) = 2|E|$.\n"
        "\\end{lemma}",
        "\\begin{proof}\nEach edge $\\{u, w\\}$ contributes exactly one to $\\deg(u)$ and one to $\\deg(w)$, so it is "
        "counted twice in the sum.\n\\end{proof}",
        f"\\begin{{corollary}}\nThe number of vertices of odd degree is even.\n\\end{{corollary}}\nFor a graph with "
        f"degree sequence $({', '.join(map(str, degs))})$ the degree sum is ${sum(degs)}$, so it has "
        f"${sum(degs) // 2}$ edges.",
    ]


def _topic_fermat(rng: random.Random) -> list[str]:
    p = rng.choice([5, 7, 11, 13, 17, 19, 23])
    a = rng.randint(2, p - 1)
    e = rng.randint(p + 1, 5 * p)
    return [
        "\\begin{theorem}[Fermat]\nIf $p$ is prime and $p \\nmid a$, then $a^{p-1} \\equiv 1 \\pmod{p}$.\n"
        "\\end{theorem}",
        "\\begin{proof}\nThe map $x \\mapsto ax$ permutes the nonzero residues modulo $p$. Multiplying all of them "
        "gives $a^{p-1}(p-1)! \\equiv (p-1)! \\pmod p$, and $(p-1)!$ is invertible modulo $p$.\n\\end{proof}",
        f"\\begin{{example}}\nTake $p = {p}$ and $a = {a}$. Since ${e} = {e // (p - 1)} \\cdot {p - 1} + "
        f"{e % (p - 1)}$ we get ${a}^{{{e}}} \\equiv {a}^{{{e % (p - 1)}}} \\equiv {pow(a, e, p)} \\pmod{{{p}}}$.\n"
        "\\end{example}",
    ]


def _topic_rank(rng: random.Random) -> list[str]:
    m, n = rng.randint(2, 7), rng.randint(3, 9)
    r = rng.randint(1, min(m, n))
    return [
        "\\begin{theorem}[Rank--nullity]\nLet $T\\colon V \\to W$ be a linear map with $V$ finite-dimensional. Then "
        "$\\dim V = \\operatorname{rank} T + \\dim \\ker T$.\n\\end{theorem}",
        "\\begin{proof}\nChoose a basis $u_1, \\dots, u_k$ of $\\ker T$ and extend it to a basis $u_1, \\dots, u_n$ "
        "of $V$. The vectors $T u_{k+1}, \\dots, T u_n$ span the image, and they are independent because a relation "
        "among them yields a vector of $\\ker T$ in the span of $u_{k+1}, \\dots, u_n$, which must be zero.\n"
        "\\end{proof}",
        f"So a ${m} \\times {n}$ matrix of rank ${r}$ has a null space of dimension ${n} - {r} = {n - r}$.",
    ]


def _wrap(env: str, body: str, title: str | None = None) -> str:
    return f"\\begin{{{env}}}{f'[{title}]' if title else ''}\n{body}\n\\end{{{env}}}"


def _poly(coeffs: list[int], v: str = "x") -> str:
    """LaTeX of sum c_k v^k (highest power first), e.g. [1, 0, -3] -> '-3x^{2} + 1'."""
    out = []
    for k in range(len(coeffs) - 1, -1, -1):
        c = coeffs[k]
        if not c:
            continue
        mag = abs(c)
        body = f"{mag if mag != 1 or k == 0 else ''}" + (v if k >= 1 else "") + (f"^{{{k}}}" if k > 1 else "")
        out.append(("- " if c < 0 else "+ ") + body if out else ("-" if c < 0 else "") + body)
    return " ".join(out) or "0"


def _topic_triangle(rng: random.Random) -> list[str]:
    a, b = rng.randint(-30, 30), rng.randint(-30, 30)
    x, y = rng.choice([("a", "b"), ("x", "y"), ("s", "t")])
    return [
        _wrap(_env(rng, ["lemma", "proposition"]), f"For all real numbers ${x}, {y}$ we have $|{x} + {y}| \\le |{x}| "
                                                   "+ "
              f"|{y}|$, with equality if and only if ${x}{y} \\ge 0$.", rng.choice([None, "Triangle inequality"])),
        _wrap("proof", rng.choice([
            f"Since $-|{x}| \\le {x} \\le |{x}|$ and $-|{y}| \\le {y} \\le |{y}|$, adding gives $-(|{x}| + |{y}|) "
            "\\le "
            f"{x} + {y} \\le |{x}| + |{y}|$, which is the claim.",
            f"Both sides are non-negative, so it suffices to compare squares: $({x} + {y})^2 = {x}^2 + 2{x}{y} + "
            f"{y}^2 "
            f"\\le {x}^2 + 2|{x}{y}| + {y}^2 = (|{x}| + |{y}|)^2$, with equality exactly when ${x}{y} = |{x}{y}|$."])),
        f"For ${x} = {a}$ and ${y} = {b}$ the left side is $|{a + b}| = {abs(a + b)}$ and the right side is "
        f"${abs(a)} + {abs(b)} = {abs(a) + abs(b)}$"
        + (", so equality holds." if a * b >= 0 else ", a strict inequality."),
    ]  # fmt: skip


def _topic_derivative(rng: random.Random) -> list[str]:
    deg = rng.randint(2, 5)
    c = [rng.randint(-9, 9) for _ in range(deg)] + [rng.choice([v for v in range(-6, 7) if v])]
    d = [k * c[k] for k in range(1, len(c))]
    f = rng.choice(["f", "g", "p"])
    return [
        _wrap(_env(rng, ["proposition", "lemma", "theorem"]), rng.choice([
            "For every integer $n \\ge 1$ the function $x \\mapsto x^n$ is differentiable on $\\mathbb{R}$ with "
            "derivative $n x^{n-1}$.",
            "Let $n \\in \\mathbb{N}$. Then $\\frac{d}{dx} x^n = n x^{n-1}$ for all real $x$."]), "Power rule"),
        _wrap("proof", rng.choice([
            "By the binomial theorem, $(x + h)^n - x^n = n x^{n-1} h + \\binom{n}{2} x^{n-2} h^2 + \\dots + h^n$. "
            "Dividing by $h$ and letting $h \\to 0$ leaves $n x^{n-1}$.",
            "Induct on $n$. The case $n = 1$ is immediate. If the claim holds for $n$, the product rule applied to "
            "$x^{n+1} = x \\cdot x^n$ gives $x^n + x \\cdot n x^{n-1} = (n+1) x^n$."])),
        rng.choice(["By linearity of the derivative,", "Applying the rule term by term,", "Consequently,"])
        + f" for ${f}(x) = {_poly(c)}$ we obtain ${f}'(x) = {_poly(d)}$, and in particular ${f}'(1) = {sum(d)}$.",
    ]  # fmt: skip


def _topic_integral(rng: random.Random) -> list[str]:
    from fractions import Fraction

    c = [rng.randint(-6, 9) for _ in range(rng.randint(2, 4))]
    b = rng.randint(1, 6)
    val = sum(Fraction(ck * b ** (k + 1), k + 1) for k, ck in enumerate(c))
    anti = [0] + [Fraction(ck, k + 1) for k, ck in enumerate(c)]
    anti_tex = " + ".join(f"\\frac{{{a.numerator}}}{{{a.denominator}}}x^{{{k}}}" if a.denominator > 1
                          else f"{a}x^{{{k}}}"
                          for k, a in enumerate(anti) if a)  # fmt: skip
    v = f"{val.numerator}" if val.denominator == 1 else f"\\frac{{{val.numerator}}}{{{val.denominator}}}"
    return [
        _wrap("theorem", rng.choice([
            "Let $f$ be continuous on $[a, b]$ and let $F$ be an antiderivative of $f$ there. Then "
            "$\\int_a^b f(x)\\,dx = F(b) - F(a)$.",
            "If $F' = f$ on $[a, b]$ and $f$ is continuous, then $\\int_a^b f = F(b) - F(a)$."]),
              rng.choice(["Fundamental theorem of calculus", None])),
        rng.choice([
            "The proof compares $F$ with $G(x) = \\int_a^x f(t)\\,dt$: both have derivative $f$, so they differ by "
            "a constant, and evaluating at $a$ and $b$ gives the formula.",
            "Indeed, the function $x \\mapsto \\int_a^x f$ is differentiable with derivative $f$ (continuity of $f$ "
            "controls the difference quotient), hence it equals $F - F(a)$."]),
        f"For example, an antiderivative of ${_poly(c)}$ is ${anti_tex.replace('x^{1}', 'x')}$, so "
        f"$\\int_0^{{{b}}} ({_poly(c)})\\,dx = {v}$.",
    ]  # fmt: skip


def _topic_pigeonhole(rng: random.Random) -> list[str]:
    n, k = rng.randint(3, 30), rng.randint(2, 6)
    m = n * k + 1
    return [
        _wrap(_env(rng, ["theorem", "proposition"]), rng.choice([
            "If more than $nk$ objects are placed into $n$ boxes, some box contains at least $k + 1$ objects.",
            "Let $f\\colon A \\to B$ with $|A| > k|B|$. Then some fibre $f^{-1}(b)$ has more than $k$ elements."]),
              "Pigeonhole principle"),
        _wrap("proof", "Otherwise every box holds at most $k$ objects, for a total of at most $nk$, a contradiction."),
        f"Thus among any ${m}$ integers, some ${k + 1}$ leave the same remainder upon division by ${n}$, since there "
        f"are only ${n}$ possible remainders and ${m} > {n} \\cdot {k} = {n * k}$.",
    ]  # fmt: skip


def _topic_inclusion_exclusion(rng: random.Random) -> list[str]:
    a, b = rng.sample([2, 3, 5, 7, 11, 13], 2)
    n = rng.randint(50, 999)
    na, nb, nab = n // a, n // b, n // (a * b)
    A, B = rng.choice([("A", "B"), ("S", "T"), ("E", "F")])
    return [
        _wrap(_env(rng, ["lemma", "proposition"]), f"For finite sets ${A}$ and ${B}$, $|{A} \\cup {B}| = |{A}| + "
              f"|{B}| - |{A} \\cap {B}|$."),
        _wrap("proof", rng.choice([
            f"Every element of ${A} \\cap {B}$ is counted twice in $|{A}| + |{B}|$ and every other element of "
            f"${A} \\cup {B}$ exactly once; subtracting $|{A} \\cap {B}|$ corrects the overcount.",
            f"Write ${A} \\cup {B}$ as the disjoint union of ${A} \\setminus {B}$, ${A} \\cap {B}$ and "
            f"${B} \\setminus {A}$ and add the sizes."])),
        f"As an application, the number of integers in $\\{{1, \\dots, {n}\\}}$ divisible by ${a}$ or ${b}$ is "
        f"$\\lfloor {n}/{a} \\rfloor + \\lfloor {n}/{b} \\rfloor - \\lfloor {n}/{a * b} \\rfloor = {na} + {nb} - "
        f"{nab} "
        f"= {na + nb - nab}$.",
    ]  # fmt: skip


def _topic_euclid_primes(rng: random.Random) -> list[str]:
    k = rng.randint(3, 6)
    ps = [2, 3, 5, 7, 11, 13][:k]
    prod = math.prod(ps)
    q = prod + 1
    f = next(d for d in range(2, q + 1) if q % d == 0)
    chain = " \\cdot ".join(map(str, ps))
    return [
        _wrap("theorem", rng.choice(["There are infinitely many prime numbers.",
                                     "The set of primes is not finite."]), rng.choice(["Euclid", None])),
        _wrap("proof", rng.choice([
            "Suppose $p_1, \\dots, p_k$ were all the primes and set $N = p_1 \\cdots p_k + 1$. A prime factor of $N$ "
            "cannot be any $p_i$, since it would then divide $1$.",
            "Given finitely many primes, their product plus one has a prime divisor outside the list; hence no "
            "finite list is complete."])),
        f"With the first ${k}$ primes, ${chain} + 1 = {q}$, whose smallest prime factor is "
        f"${f}$" + (", a new prime." if f == q else f"; note that ${q}$ itself need not be prime."),
    ]  # fmt: skip


def _topic_inverse_mod(rng: random.Random) -> list[str]:
    p = rng.choice([7, 11, 13, 17, 19, 23, 29, 31, 37, 41])
    a = rng.randint(2, p - 1)
    inv = pow(a, -1, p)
    return [
        _wrap(_env(rng, ["lemma", "corollary"]), "If $\\gcd(a, m) = 1$, then $a$ has a multiplicative inverse "
              "modulo $m$, that is, there is $x$ with $ax \\equiv 1 \\pmod m$."),
        _wrap("proof", rng.choice([
            "By Bezout's identity there are integers $x, y$ with $ax + my = 1$; reducing modulo $m$ gives "
            "$ax \\equiv 1$.",
            "The map $x \\mapsto ax$ on $\\mathbb{Z}/m\\mathbb{Z}$ is injective because $m \\mid a(x - x')$ forces "
            "$m \\mid x - x'$; an injective map of a finite set to itself is onto, so some $x$ maps to $1$."])),
        f"For instance, modulo ${p}$ the inverse of ${a}$ is ${inv}$, because ${a} \\cdot {inv} = {a * inv} = "
        f"{a * inv // p} \\cdot {p} + 1$.",
    ]  # fmt: skip


def _topic_determinant(rng: random.Random) -> list[str]:
    A = [[rng.randint(-5, 9) for _ in range(2)] for _ in range(2)]
    B = [[rng.randint(-5, 9) for _ in range(2)] for _ in range(2)]
    dA, dB = A[0][0] * A[1][1] - A[0][1] * A[1][0], B[0][0] * B[1][1] - B[0][1] * B[1][0]
    M = rng.choice(["A", "M", "P"])

    def mat(X: list[list[int]]) -> str:
        return f"\\begin{{pmatrix}} {X[0][0]} & {X[0][1]} \\\\ {X[1][0]} & {X[1][1]} \\end{{pmatrix}}"

    return [
        _wrap("theorem", f"For square matrices ${M}$ and $N$ of the same size, $\\det({M}N) = \\det {M} \\cdot "
              "\\det N$."),
        rng.choice([
            "One proof views the determinant as the unique alternating multilinear function of the columns taking "
            "the value $1$ on the identity; for fixed invertible $N$ both sides are such functions up to scaling.",
            "When the first factor is singular both sides vanish; otherwise write it as a product of elementary "
            "matrices, for which the identity is checked directly."]),
        f"For example, $\\det {mat(A)} = {dA}$ and $\\det {mat(B)} = {dB}$, so the product of these two matrices "
        f"has determinant ${fmt(dA)} \\cdot {fmt(dB)} = {dA * dB}$.",
    ]  # fmt: skip


def _topic_eigen(rng: random.Random) -> list[str]:
    l1, l2 = rng.sample(range(-6, 10), 2)
    t = rng.randint(-5, 5)
    return [
        _wrap("definition", rng.choice([
            "A scalar $\\lambda$ is an \\emph{eigenvalue} of a square matrix $A$ if $Av = \\lambda v$ for some "
            "nonzero vector $v$, called an eigenvector.",
            "Let $A$ be an $n \\times n$ matrix. A nonzero $v$ with $Av = \\lambda v$ is an \\emph{eigenvector} and "
            "$\\lambda$ the corresponding \\emph{eigenvalue}."])),
        _wrap(_env(rng, ["proposition", "lemma"]), "The eigenvalues of $A$ are the roots of the characteristic "
              "polynomial $\\det(A - \\lambda I)$; for an upper triangular matrix they are its diagonal entries."),
        f"The matrix $\\begin{{pmatrix}} {l1} & {t} \\\\ 0 & {l2} \\end{{pmatrix}}$ has characteristic polynomial "
        f"$({l1} - \\lambda)({l2} - \\lambda)$, hence eigenvalues ${l1}$ and ${l2}$, trace ${l1 + l2}$ and "
        f"determinant ${l1 * l2}$.",
    ]  # fmt: skip


def _topic_bounded(rng: random.Random) -> list[str]:
    k = rng.randint(2, 9)
    seq = rng.choice(["a", "x", "u"])
    return [
        _wrap(_env(rng, ["lemma", "proposition"]), f"Every convergent sequence $({seq}_n)$ of real numbers is "
              "bounded."),
        _wrap("proof", f"Let ${seq}_n \\to L$. Choosing $\\varepsilon = 1$ gives $N$ with $|{seq}_n - L| < 1$ for "
              f"$n \\ge N$, so $|{seq}_n| \\le \\max(|{seq}_1|, \\dots, |{seq}_{{N-1}}|, |L| + 1)$ for all $n$."),
        rng.choice(["The converse fails:", "Boundedness alone is not enough:"])
        + f" the sequence ${seq}_n = {k}(-1)^n$ is bounded by ${k}$ but oscillates between $-{k}$ and ${k}$.",
    ]  # fmt: skip


def _topic_ratio_test(rng: random.Random) -> list[str]:
    r = rng.randint(2, 9)
    return [
        _wrap("theorem", rng.choice([
            "Let $\\sum a_n$ have positive terms with $a_{n+1}/a_n \\to q$. If $q < 1$ the series converges; if "
            "$q > 1$ it diverges.",
            "Suppose $a_n > 0$ and $\\lim_{n \\to \\infty} a_{n+1}/a_n = q$. Then $\\sum_n a_n$ converges when "
            "$q < 1$ and diverges when $q > 1$."]), "Ratio test"),
        _wrap("proof", "If $q < 1$ pick $q < s < 1$; eventually $a_{n+1} \\le s a_n$, so the tail is dominated by "
              "a geometric series. If $q > 1$ the terms eventually increase and do not tend to zero."),
        f"Applied to $a_n = n^2 / {r}^n$ the ratios are $\\frac{{(n+1)^2}}{{{r} n^2}} \\to \\frac{{1}}{{{r}}} < 1$, "
        "so the series converges.",
    ]  # fmt: skip


def _topic_expectation(rng: random.Random) -> list[str]:
    faces, n = rng.choice([4, 6, 8, 10, 12, 20]), rng.randint(2, 9)
    from fractions import Fraction

    e = Fraction(n * (faces + 1), 2)
    ev = f"{e.numerator}" if e.denominator == 1 else f"\\frac{{{e.numerator}}}{{{e.denominator}}}"
    return [
        _wrap(_env(rng, ["proposition", "theorem"]), rng.choice([
            "For random variables $X_1, \\dots, X_n$ with finite expectations, $\\mathbb{E}[X_1 + \\dots + X_n] = "
            "\\mathbb{E}[X_1] + \\dots + \\mathbb{E}[X_n]$, whether or not they are independent.",
            "Expectation is linear: $\\mathbb{E}[aX + bY] = a\\mathbb{E}[X] + b\\mathbb{E}[Y]$."]),
              rng.choice(["Linearity of expectation", None])),
        rng.choice([
            "For discrete variables this is a rearrangement of the sum $\\sum_\\omega (X + Y)(\\omega) "
            "P(\\omega)$; the general case follows from the linearity of the integral.",
            "No independence is needed, since the expectation is an integral and integrals are linear."]),
        f"A fair die with ${faces}$ faces has mean $\\frac{{{faces} + 1}}{{2}}$, so the expected total of ${n}$ "
        f"such dice is ${n} \\cdot \\frac{{{faces + 1}}}{{2}} = {ev}$.",
    ]  # fmt: skip


def _topic_trees(rng: random.Random) -> list[str]:
    n = rng.randint(5, 40)
    T = rng.choice(["T", "G"])
    return [
        _wrap("definition", f"A \\emph{{tree}} is a connected graph ${T}$ without cycles; a \\emph{{leaf}} is a "
              "vertex of degree one."),
        _wrap(_env(rng, ["lemma", "proposition"]), f"A tree ${T}$ with $n \\ge 1$ vertices has exactly $n - 1$ "
              "edges."),
        _wrap("proof", rng.choice([
            "Induct on $n$. A tree with at least two vertices has a leaf (take an endpoint of a longest path); "
            "deleting it removes one vertex and one edge and leaves a tree.",
            "Adding the edges one at a time to the empty graph on the vertex set, each edge joins two different "
            "components because no cycle is created; going from $n$ components to one takes $n - 1$ edges."])),
        f"So a spanning tree of a connected network on ${n}$ nodes always uses ${n - 1}$ links, and the degree sum "
        f"of such a tree is $2({n} - 1) = {2 * (n - 1)}$.",
    ]  # fmt: skip


def _topic_digit_sum(rng: random.Random) -> list[str]:
    n = rng.randint(10**5, 10**9)
    s = sum(map(int, str(n)))
    return [
        _wrap(_env(rng, ["proposition", "lemma"]), "Every positive integer is congruent to the sum of its decimal "
              "digits modulo $9$."),
        _wrap("proof", rng.choice([
            "Write $n = \\sum_k d_k 10^k$. Since $10 \\equiv 1 \\pmod 9$, also $10^k \\equiv 1$, hence "
            "$n \\equiv \\sum_k d_k \\pmod 9$.",
            "Because $10^k - 1 = 99\\cdots9$ is divisible by $9$, the difference $n - \\sum_k d_k = \\sum_k d_k "
            "(10^k - 1)$ is a multiple of $9$."])),
        f"For ${n}$ the digit sum is ${' + '.join(str(n))} = {s}$, so ${n} \\equiv {s % 9} \\pmod 9$"
        + (", and the number is divisible by $9$." if s % 9 == 0 else "."),
    ]  # fmt: skip


def _topic_am_gm(rng: random.Random) -> list[str]:
    a, b = rng.randint(1, 40), rng.randint(1, 40)
    return [
        _wrap(_env(rng, ["theorem", "proposition"]), rng.choice([
            "For non-negative reals $a$ and $b$, $\\sqrt{ab} \\le \\frac{a + b}{2}$, with equality iff $a = b$.",
            "The geometric mean of two non-negative numbers never exceeds their arithmetic mean."]), "AM--GM"),
        _wrap("proof", "Expand $(\\sqrt a - \\sqrt b)^2 \\ge 0$ to get $a + b \\ge 2\\sqrt{ab}$; equality holds "
              "exactly when $\\sqrt a = \\sqrt b$."),
        f"With $a = {a}$ and $b = {b}$: $ab = {a * b}$ and $\\frac{{a + b}}{{2}} = \\frac{{{a + b}}}{{2}}$, and "
        "indeed "
        f"$({a + b})^2 = {(a + b) ** 2} \\ge 4 \\cdot {a * b} = {4 * a * b}$.",
    ]  # fmt: skip


def _topic_cauchy_schwarz(rng: random.Random) -> list[str]:
    u = [rng.randint(-6, 7) for _ in range(3)]
    v = [rng.randint(-6, 7) for _ in range(3)]
    dot = sum(x * y for x, y in zip(u, v))
    nu, nv = sum(x * x for x in u), sum(y * y for y in v)
    return [
        _wrap("theorem", "For vectors $u, v$ in an inner product space, $|\\langle u, v \\rangle| \\le \\|u\\| "
              "\\|v\\|$.", rng.choice(["Cauchy--Schwarz", None])),
        _wrap("proof", rng.choice([
            "If $v = 0$ there is nothing to prove. Otherwise the quadratic $t \\mapsto \\|u - tv\\|^2 \\ge 0$ has "
            "non-positive discriminant, which is the inequality.",
            "Project $u$ onto $v$: with $w = u - \\frac{\\langle u, v\\rangle}{\\|v\\|^2} v$ we have $w \\perp v$, "
            "and $\\|u\\|^2 = \\|w\\|^2 + \\frac{|\\langle u, v\\rangle|^2}{\\|v\\|^2}$."])),
        f"For $u = ({u[0]}, {u[1]}, {u[2]})$ and $v = ({v[0]}, {v[1]}, {v[2]})$ in $\\mathbb{{R}}^3$ we get "
        f"$\\langle u, v \\rangle^2 = {dot * dot}$ while $\\|u\\|^2 \\|v\\|^2 = {nu} \\cdot {nv} = {nu * nv}$.",
    ]  # fmt: skip


def _topic_mvt(rng: random.Random) -> list[str]:
    a = rng.randint(-5, 5)
    b = a + 2 * rng.randint(1, 6)
    k = rng.randint(1, 9)
    return [
        _wrap("theorem", rng.choice([
            "If $f$ is continuous on $[a, b]$ and differentiable on $(a, b)$, there is $c \\in (a, b)$ with "
            "$f'(c) = \\frac{f(b) - f(a)}{b - a}$.",
            "Let $f\\colon [a, b] \\to \\mathbb{R}$ be continuous and differentiable inside. Some interior point $c$ "
            "satisfies $f(b) - f(a) = f'(c)(b - a)$."]), "Mean value theorem"),
        rng.choice([
            "It follows from Rolle's theorem applied to $f$ minus the secant line through its endpoints.",
            "Subtracting the secant line reduces it to Rolle's theorem, which in turn follows from the extreme value "
            "theorem."]),
        f"For $f(x) = {k}x^2$ on $[{a}, {b}]$ the secant slope is $\\frac{{{k * b * b} - {k * a * a}}}{{{b} - "
        f"{fmt(a)}}}"
        f" = {k * (a + b)}$, and $f'(c) = {2 * k}c$ equals it at $c = {(a + b) // 2}$, the midpoint.",
    ]  # fmt: skip


INTROS = [
    "These notes collect a few standard results with short proofs and small numerical checks.",
    "Below we recall several elementary facts; each is followed by a concrete instance.",
    "This section is a grab bag of results used later in the course.",
    "We review some background material. Readers familiar with it may skip ahead.",
    "The following results are classical; the proofs are included for completeness.",
    "Throughout, all numbers are real unless stated otherwise.",
]
TRANSITIONS = [
    "We now turn to a different topic.", "The next result is of a different flavour.", "Next, a counting argument.",
    "A second, unrelated tool will also be needed.", "We continue with another classical fact.",
    "Let us record one more observation before moving on.", "Here is another standard statement.",
    "The following is independent of what came before.",
]  # fmt: skip
EXERCISES = [
    "\\begin{{exercise}}\nVerify the statement above for ${a}$ and ${b}$ by direct computation.\n\\end{{exercise}}",
    "\\begin{{remark}}\nThe hypothesis cannot be dropped; try small cases such as ${a}$ and ${b}$.\n\\end{{remark}}",
    "\\begin{{exercise}}\nFind all integers $n$ with $|n| \\le {a}$ for which the conclusion is an equality.\n"
    "\\end{{exercise}}",
]


PROSE_TOPICS = [
    _topic_triangle,
    _topic_derivative,
    _topic_integral,
    _topic_pigeonhole,
    _topic_inclusion_exclusion,
    _topic_euclid_primes,
    _topic_inverse_mod,
    _topic_determinant,
    _topic_eigen,
    _topic_bounded,
    _topic_ratio_test,
    _topic_expectation,
    _topic_trees,
    _topic_digit_sum,
    _topic_am_gm,
    _topic_cauchy_schwarz,
    _topic_mvt,
    _topic_sums,
    _topic_gcd,
    _topic_groups,
    _topic_metric,
    _topic_binomial,
    _topic_geometric,
    _topic_continuity,
    _topic_graphs,
    _topic_fermat,
    _topic_rank,
]


# --------------------------------------------------------------------------------------------------------- code
PY_FUNCS = [
    ('def {f}(values: list[float]) -> float:\n'
     '    """Return the arithmetic mean of `values` (0.0 for an empty list)."""\n'
     "    if not values:\n        return 0.0\n    return sum(values) / len(values)\n"),
    ('def {f}(n: int) -> bool:\n    """Return True if `n` is a prime number."""\n    if n < 2:\n        return False\n'
     "    {i} = 2\n    while {i} * {i} <= n:\n        if n % {i} == 0:\n            return False\n        {i} += 1\n"
     "    return True\n"),
    ('def {f}(text: str) -> dict[str, int]:\n'
     '    """Count how often each word occurs in `text` (case-insensitive)."""\n'
     "    counts: dict[str, int] = {{}}\n    for word in text.lower().split():\n"
     "        counts[word] = counts.get(word, 0) + 1\n    return counts\n"),
    ('def {f}(a: int, b: int) -> int:\n    """Greatest common divisor of `a` and `b` by the Euclidean algorithm."""\n'
     "    while b:\n        a, b = b, a % b\n    return abs(a)\n"),
    ('def {f}(items: list, size: int) -> list[list]:\n'
     '    """Split `items` into consecutive chunks of length `size`."""\n'
     "    if size <= 0:\n        raise ValueError(\"size must be positive\")\n"
     "    return [items[{i}:{i} + size] for {i} in range(0, len(items), size)]\n"),
    ('def {f}(n: int) -> list[int]:\n    """Return the first `n` Fibonacci numbers."""\n    out = []\n'
     '    a, b = 0, 1\n'
     "    for _ in range(n):\n        out.append(a)\n        a, b = b, a + b\n    return out\n"),
    ('def {f}(s: str) -> bool:\n'
     '    """True if `s` reads the same forwards and backwards, ignoring case and spaces."""\n'
     "    cleaned = \"\".join(ch.lower() for ch in s if not ch.isspace())\n    return cleaned == cleaned[::-1]\n"),
    ('def {f}(xs: list[int], target: int) -> int:\n    """Binary search: index of `target` in sorted `xs`, or -1."""\n'
     "    lo, hi = 0, len(xs) - 1\n    while lo <= hi:\n        mid = (lo + hi) // 2\n"
     "        if xs[mid] == target:\n            return mid\n        if xs[mid] < target:\n            lo = mid + 1\n"
     "        else:\n            hi = mid - 1\n    return -1\n"),
    ('def {f}(matrix: list[list[float]]) -> list[list[float]]:\n    """Transpose a rectangular matrix."""\n'
     "    return [list(row) for row in zip(*matrix)]\n"),
    ('def {f}(celsius: float) -> float:\n    """Convert a temperature from Celsius to Fahrenheit."""\n'
     "    return celsius * 9 / 5 + 32\n"),
    ('def {f}(path: str) -> int:\n    """Count the non-empty lines of a text file."""\n'
     '    with open(path, encoding="utf-8") as fh:\n'
     "        return sum(1 for line in fh if line.strip())\n"),
    ('def {f}(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:\n'
     '    """Merge overlapping closed intervals."""\n'
     "    merged: list[tuple[int, int]] = []\n    for start, end in sorted(intervals):\n"
     "        if merged and start <= merged[-1][1]:\n"
     "            merged[-1] = (merged[-1][0], max(merged[-1][1], end))\n"
     "        else:\n            merged.append((start, end))\n    return merged\n"),
]  # fmt: skip
PY_NAMES = ["compute", "get", "find", "calc", "make", "do", "check", "build"]
PY_SUFFIX = [
    "mean",
    "prime",
    "word_counts",
    "gcd",
    "chunks",
    "fibonacci",
    "palindrome",
    "index",
    "transpose",
    "fahrenheit",
    "line_count",
    "merged",
]

JS_SNIPPETS = [
    "function {f}(arr) {{\n  // Return the largest number in arr, or undefined for an empty array.\n  let best;\n"
    "  for (const x of arr) {{\n    if (best === undefined || x > best) best = x;\n  }}\n  return best;\n}}\n",
    "const {f} = (str) => str.split('').reverse().join('');\n\nconsole.log({f}('{w}'));\n",
    "async function {f}(url) {{\n  const res = await fetch(url);\n"
    "  if (!res.ok) throw new Error(`HTTP ${{res.status}}`);\n"
    "  return res.json();\n}}\n",
    "function {f}(fn, ms) {{\n  let timer = null;\n  return (...args) => {{\n    clearTimeout(timer);\n"
    "    timer = setTimeout(() => fn(...args), ms);\n  }};\n}}\n",
    "export function {f}(items, key) {{\n  return items.reduce((acc, item) => {{\n    const k = item[key];\n"
    "    (acc[k] ||= []).push(item);\n    return acc;\n  }}, {{}});\n}}\n",
]  # fmt: skip
RUST_SNIPPETS = [
    "/// Sum of the squares of a slice.\npub fn {f}(xs: &[i64]) -> i64 {{\n    xs.iter().map(|x| x * x).sum()\n}}\n",
    "use std::collections::HashMap;\n\npub fn {f}(text: &str) -> HashMap<String, usize> {{\n"
    "    let mut counts = HashMap::new();\n    for w in text.split_whitespace() {{\n"
    "        *counts.entry(w.to_lowercase()).or_insert(0) += 1;\n    }}\n    counts\n}}\n",
    "#[derive(Debug, Clone, PartialEq)]\npub struct {T} {{\n    pub x: f64,\n    pub y: f64,\n}}\n\nimpl {T} {{\n"
    "    pub fn norm(&self) -> f64 {{\n        (self.x * self.x + self.y * self.y).sqrt()\n    }}\n}}\n",
    "pub fn {f}(n: u64) -> u64 {{\n    match n {{\n        0 => 1,\n        _ => n * {f}(n - 1),\n    }}\n}}\n\n"
    "#[cfg(test)]\nmod tests {{\n    #[test]\n    fn small() {{\n        assert_eq!(super::{f}(5), 120);\n    }}\n"
    "}}\n",
]  # fmt: skip
C_SNIPPETS = [
    "#include <stdio.h>\n\nint {f}(const int *a, int n) {{\n    int s = 0;\n    for (int i = 0; i < n; i++)\n"
    "        s += a[i];\n    return s;\n}}\n\nint main(void) {{\n    int v[] = {{{nums}}};\n"
    "    printf(\"%d\\n\", {f}(v, {n}));\n    return 0;\n}}\n",
    "#include <string.h>\n\n/* Reverse a string in place. */\nvoid {f}(char *s) {{\n    size_t n = strlen(s);\n"
    "    for (size_t i = 0; i < n / 2; i++) {{\n        char t = s[i];\n        s[i] = s[n - 1 - i];\n"
    "        s[n - 1 - i] = t;\n    }}\n}}\n",
    "#include <stdlib.h>\n\ntypedef struct node {{\n    int value;\n    struct node *next;\n}} node;\n\n"
    "node *{f}(node *head, int value) {{\n    node *n = malloc(sizeof *n);\n    if (!n) return head;\n"
    "    n->value = value;\n    n->next = head;\n    return n;\n}}\n",
]  # fmt: skip
SQL_SNIPPETS = [
    "SELECT customer_id, COUNT(*) AS orders, SUM(total) AS revenue\nFROM {t}\nWHERE created_at >= '2024-0{m}-01'\n"
    "GROUP BY customer_id\nHAVING COUNT(*) > {n}\nORDER BY revenue DESC;\n",
    "CREATE TABLE {t} (\n    id INTEGER PRIMARY KEY,\n    name TEXT NOT NULL,\n    email TEXT UNIQUE,\n"
    "    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP\n);\n",
    "WITH ranked AS (\n    SELECT *, ROW_NUMBER() OVER (PARTITION BY dept ORDER BY salary DESC) AS rn\n    FROM {t}\n"
    ")\n"
    "SELECT dept, name, salary FROM ranked WHERE rn <= {n};\n",
    "UPDATE {t}\nSET status = 'archived'\nWHERE last_login < DATE '2023-0{m}-01' AND status = 'active';\n",
]  # fmt: skip
BASH_SNIPPETS = [
    "#!/usr/bin/env bash\nset -euo pipefail\n\n# Compress every log older than {n} days.\n"
    "find /var/log/{t} -name '*.log' -mtime +{n} -exec gzip {{}} \\;\n",
    "#!/bin/bash\nfor f in *.{ext}; do\n  echo \"processing $f\"\n  wc -l \"$f\"\ndone\n",
    "#!/usr/bin/env bash\n# Back up a directory with a timestamp.\nsrc=\"${{1:-$HOME/{t}}}\"\n"
    "dest=\"/backup/$(basename \"$src\")-$(date +%Y%m%d).tar.gz\"\n"
    "tar -czf \"$dest\" \"$src\" && echo \"saved $dest\"\n",
    "#!/bin/sh\nif [ \"$#\" -ne 1 ]; then\n  echo \"usage: $0 FILE\" >&2\n  exit 1\nfi\n"
    "grep -c '{w}' \"$1\"\n",
]  # fmt: skip
PY_FUNCS += [
    ('def {f}(values: list[float], window: int) -> list[float]:\n'
     '    """Moving averages of `values` over `window` consecutive items."""\n'
     "    if window <= 0:\n        raise ValueError(\"window must be positive\")\n"
     "    out = []\n    running = sum(values[:window])\n    if len(values) >= window:\n        out.append(running / "
     "window)\n"
     "    for {i} in range(window, len(values)):\n        running += values[{i}] - values[{i} - window]\n"
     "        out.append(running / window)\n    return out\n"),
    ('def {f}(words: list[str]) -> dict[int, list[str]]:\n    """Group words by their length."""\n'
     "    groups: dict[int, list[str]] = {{}}\n    for word in words:\n"
     "        groups.setdefault(len(word), []).append(word)\n    return groups\n"),
    ('def {f}(n: int) -> list[int]:\n    """Prime numbers up to `n` with the sieve of Eratosthenes."""\n'
     "    if n < 2:\n        return []\n    is_prime = [True] * (n + 1)\n    is_prime[0] = is_prime[1] = False\n"
     "    for {i} in range(2, int(n**0.5) + 1):\n        if is_prime[{i}]:\n"
     "            for multiple in range({i} * {i}, n + 1, {i}):\n                is_prime[multiple] = False\n"
     "    return [k for k, flag in enumerate(is_prime) if flag]\n"),
    ('def {f}(text: str, width: int = 72) -> list[str]:\n    """Greedy word wrap of `text` to lines of at most '
     '`width` characters."""\n'
     "    lines: list[str] = []\n    current = \"\"\n    for word in text.split():\n"
     "        if current and len(current) + 1 + len(word) > width:\n            lines.append(current)\n"
     "            current = word\n        else:\n            current = f\"{{current}} {{word}}\" if current else "
     "word\n"
     "    if current:\n        lines.append(current)\n    return lines\n"),
    ('def {f}(graph: dict[str, list[str]], start: str) -> list[str]:\n'
     '    """Breadth-first order of the nodes reachable from `start`."""\n'
     "    from collections import deque\n\n    seen = {{start}}\n    order = []\n    queue = deque([start])\n"
     "    while queue:\n        node = queue.popleft()\n        order.append(node)\n"
     "        for nxt in graph.get(node, []):\n            if nxt not in seen:\n                seen.add(nxt)\n"
     "                queue.append(nxt)\n    return order\n"),
    ('def {f}(amount: int, coins: list[int]) -> int:\n    """Fewest coins summing to `amount` (dynamic programming), '
     'or -1."""\n'
     "    best = [0] + [amount + 1] * amount\n    for value in range(1, amount + 1):\n        for coin in coins:\n"
     "            if coin <= value:\n                best[value] = min(best[value], best[value - coin] + 1)\n"
     "    return best[amount] if best[amount] <= amount else -1\n"),
    ('def {f}(a: str, b: str) -> int:\n    """Levenshtein edit distance between `a` and `b`."""\n'
     "    prev = list(range(len(b) + 1))\n    for {i}, ca in enumerate(a, 1):\n        cur = [{i}]\n"
     "        for j, cb in enumerate(b, 1):\n            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + "
     "(ca != cb)))\n"
     "        prev = cur\n    return prev[-1]\n"),
    ('def {f}(rows: list[dict], key: str) -> dict:\n    """Sum the numeric field `key` over rows, ignoring missing '
     'values."""\n'
     "    total = 0\n    missing = 0\n    for row in rows:\n        value = row.get(key)\n        if value is None:\n"
     "            missing += 1\n            continue\n        total += value\n"
     "    return {{\"total\": total, \"missing\": missing, \"rows\": len(rows)}}\n"),
    ('def {f}(seconds: int) -> str:\n    """Format a duration in seconds as H:MM:SS."""\n'
     "    hours, rest = divmod(seconds, 3600)\n    minutes, secs = divmod(rest, 60)\n"
     "    return f\"{{hours}}:{{minutes:02d}}:{{secs:02d}}\"\n"),
    ('def {f}(xs: list[int]) -> list[int]:\n    """Sort a list with insertion sort (stable, in a new list)."""\n'
     "    out = list(xs)\n    for {i} in range(1, len(out)):\n        item = out[{i}]\n        j = {i} - 1\n"
     "        while j >= 0 and out[j] > item:\n            out[j + 1] = out[j]\n            j -= 1\n"
     "        out[j + 1] = item\n    return out\n"),
]  # fmt: skip
PY_SUFFIX += ["moving_average", "by_length", "primes_upto", "wrapped", "bfs_order", "min_coins", "edit_distance",
              "field_total", "duration", "insertion_sorted"]  # fmt: skip

JS_SNIPPETS += [
    "function {f}(list) {{\n  // Remove duplicate values while keeping the first occurrence.\n  const seen = new "
    "Set();\n"
    "  return list.filter((x) => (seen.has(x) ? false : seen.add(x)));\n}}\n",
    "class {T}Store {{\n  constructor() {{\n    this.items = new Map();\n  }}\n\n  set(key, value) {{\n"
    "    this.items.set(key, {{ value, updated: Date.now() }});\n  }}\n\n  get(key) {{\n"
    "    const entry = this.items.get(key);\n    return entry ? entry.value : undefined;\n  }}\n}}\n",
    "function {f}(n) {{\n  // Memoised Fibonacci numbers.\n  const memo = [0, 1];\n  for (let i = 2; i <= n; i++) {{\n"
    "    memo[i] = memo[i - 1] + memo[i - 2];\n  }}\n  return memo[n];\n}}\n",
    "const {f} = (text) =>\n  text\n    .toLowerCase()\n    .replace(/[^a-z0-9]+/g, '-')\n    .replace(/^-|-$/g, "
    "'');\n",
    "document.querySelectorAll('.{w}-toggle').forEach((button) => {{\n  button.addEventListener('click', () => {{\n"
    "    const panel = document.getElementById(button.dataset.target);\n    panel.hidden = !panel.hidden;\n  "
    "}});\n}});\n",
]  # fmt: skip
RUST_SNIPPETS += [
    "/// Binary search over a sorted slice.\npub fn {f}(xs: &[i32], target: i32) -> Option<usize> {{\n"
    "    let (mut lo, mut hi) = (0usize, xs.len());\n    while lo < hi {{\n        let mid = lo + (hi - lo) / 2;\n"
    "        match xs[mid].cmp(&target) {{\n            std::cmp::Ordering::Equal => return Some(mid),\n"
    "            std::cmp::Ordering::Less => lo = mid + 1,\n            std::cmp::Ordering::Greater => hi = mid,\n"
    "        }}\n    }}\n    None\n}}\n",
    "pub fn {f}(s: &str) -> bool {{\n    let chars: Vec<char> = s.chars().filter(|c| c.is_alphanumeric()).collect();\n"
    "    chars.iter().eq(chars.iter().rev())\n}}\n",
    "#[derive(Debug)]\npub enum {T}Error {{\n    NotFound(String),\n    Invalid {{ line: usize }},\n}}\n\n"
    "impl std::fmt::Display for {T}Error {{\n    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {{\n"
    "        match self {{\n            Self::NotFound(name) => write!(f, \"{{}} not found\", name),\n"
    "            Self::Invalid {{ line }} => write!(f, \"invalid input on line {{}}\", line),\n        }}\n    "
    "}}\n}}\n",
    "pub fn {f}(v: &mut Vec<i64>) {{\n    // Insertion sort in place.\n    for i in 1..v.len() {{\n"
    "        let mut j = i;\n        while j > 0 && v[j - 1] > v[j] {{\n            v.swap(j - 1, j);\n            j "
    "-= 1;\n"
    "        }}\n    }}\n}}\n",
]  # fmt: skip
C_SNIPPETS += [
    "#include <stddef.h>\n\n/* Index of the largest element, or -1 for an empty array. */\nlong {f}(const double *v, "
    "size_t n) {{\n"
    "    if (n == 0) return -1;\n    size_t best = 0;\n    for (size_t k = 1; k < n; k++)\n"
    "        if (v[k] > v[best]) best = k;\n    return (long)best;\n}}\n",
    "#include <ctype.h>\n\n/* Count the words of a NUL-terminated string. */\nint {f}(const char *s) {{\n"
    "    int words = 0, inside = 0;\n    for (; *s; s++) {{\n        if (isspace((unsigned char)*s)) inside = 0;\n"
    "        else if (!inside) {{ inside = 1; words++; }}\n    }}\n    return words;\n}}\n",
    "#include <stdint.h>\n\n/* FNV-1a hash of a byte buffer. */\nuint32_t {f}(const unsigned char *data, size_t len) "
    "{{\n"
    "    uint32_t h = 2166136261u;\n    for (size_t k = 0; k < len; k++) {{\n        h ^= data[k];\n"
    "        h *= 16777619u;\n    }}\n    return h;\n}}\n",
]  # fmt: skip
C_SNIPPETS += [
    "#include <stdio.h>\n\n/* Print a table of squares and cubes. */\nvoid {f}(int upto) {{\n"
    "    for (int k = 1; k <= upto; k++)\n        printf(\"%4d %6d %8d\\n\", k, k * k, k * k * k);\n}}\n",
    "#include <stdlib.h>\n\nstatic int cmp_int(const void *a, const void *b) {{\n"
    "    int x = *(const int *)a, y = *(const int *)b;\n    return (x > y) - (x < y);\n}}\n\n"
    "/* Median of an integer array (sorts it in place). */\ndouble {f}(int *values, size_t count) {{\n"
    "    qsort(values, count, sizeof *values, cmp_int);\n"
    "    return count % 2 ? values[count / 2] : (values[count / 2 - 1] + values[count / 2]) / 2.0;\n}}\n",
]  # fmt: skip
SQL_SNIPPETS += [
    "SELECT p.category, AVG(p.price) AS avg_price, COUNT(*) AS items\nFROM products AS p\nJOIN {t} AS o ON "
    "o.product_id = p.id\nGROUP BY p.category\nORDER BY avg_price DESC\nLIMIT {n};\n",
    "CREATE INDEX idx_{t}_created ON {t} (created_at);\n",
    "DELETE FROM {t}\nWHERE status = 'cancelled'\n  AND updated_at < CURRENT_DATE - INTERVAL '{n}0 days';\n",
    "INSERT INTO {t}_summary (day, total)\nSELECT DATE(created_at) AS day, SUM(amount)\nFROM {t}\n"
    "GROUP BY DATE(created_at);\n",
]  # fmt: skip
BASH_SNIPPETS += [
    "#!/usr/bin/env bash\n# Check that required tools are installed.\nfor tool in git curl jq; do\n"
    "  if ! command -v \"$tool\" >/dev/null 2>&1; then\n    echo \"missing: $tool\" >&2\n    missing=1\n  fi\ndone\n"
    "[ -z \"${{missing:-}}\" ] || exit 1\n",
    "#!/usr/bin/env bash\n# Summarise HTTP status codes of an access log.\n"
    "awk '{{print $9}}' \"${{1:-access.log}}\" | sort | uniq -c | sort -rn | head -n {n}\n",
    "#!/bin/sh\n# Wait until a port accepts connections.\nhost=${{1:-localhost}}\nport=${{2:-80{n}}}\n"
    "while ! nc -z \"$host\" \"$port\"; do\n  sleep 1\ndone\necho \"$host:$port is up\"\n",

    "#!/usr/bin/env bash\nset -e\n# Print the {n} largest files under a directory.\n"
    "du -ah \"${{1:-.}}\" 2>/dev/null | sort -rh | head -n {n}\n",
    "#!/usr/bin/env bash\n# Retry a command up to {n} times.\nattempt=1\nuntil \"$@\"; do\n"
    "  if [ \"$attempt\" -ge {n} ]; then\n    echo \"giving up after $attempt attempts\" >&2\n    exit 1\n  fi\n"
    "  attempt=$((attempt + 1))\n  sleep 2\ndone\n",
    "#!/bin/bash\n# Rename *.{ext} files to lower case.\nfor f in *.{ext}; do\n  lower=$(echo \"$f\" | tr 'A-Z' "
    "'a-z')\n"
    "  [ \"$f\" != \"$lower\" ] && mv -- \"$f\" \"$lower\"\ndone\n",
]  # fmt: skip
# identifiers renamed per document (word-bounded), so two documents using the same snippet differ in most shingles
RENAMES = {
    "values": ["values", "samples", "readings", "numbers", "series"], "items": ["items", "records", "entries", "rows"],
    "text": ["text", "body", "source", "content"], "counts": ["counts", "freq", "tally", "histogram"],
    "merged": ["merged", "joined", "combined"], "matrix": ["matrix", "grid", "table"], "arr": ["arr", "list", "nums"],
    "best": ["best", "top", "winner"], "timer": ["timer", "handle", "pending"], "acc": ["acc", "groups", "buckets"],
    "words": ["words", "tokens", "terms"], "running": ["running", "window_sum", "partial"],
    "cleaned": ["cleaned", "normalized", "stripped"], "xs": ["xs", "seq", "data"], "lo": ["lo", "left", "low"],
    "hi": ["hi", "right", "high"], "out": ["out", "result", "res"], "line": ["line", "row", "entry"],
    "customer_id": ["customer_id", "client_id", "account_id", "user_id"], "total": ["total", "amount", "net_total"],
    "salary": ["salary", "pay", "compensation"], "dept": ["dept", "team", "division"], "src": ["src", "source_dir"],
    "dest": ["dest", "archive", "target"], "attempt": ["attempt", "tries", "round"],
    "value": ["value", "key", "payload"], "head": ["head", "first", "front"], "inside": ["inside", "in_word"],
    "node": ["node", "cell", "link"], "data": ["data", "buf", "bytes_in"], "upto": ["upto", "limit", "rows"],
    "count": ["count", "size", "length"], "tool": ["tool", "cmd", "binary"], "host": ["host", "server", "addr"],
    "port": ["port", "portnum"], "button": ["button", "btn", "toggle"], "panel": ["panel", "section", "pane"],
}  # fmt: skip


def _rename(rng: random.Random, code: str) -> str:
    mapping = {k: rng.choice(v) for k, v in RENAMES.items()}
    return re.sub(r"\b(" + "|".join(sorted(mapping, key=len, reverse=True)) + r")\b", lambda m: mapping[m[1]], code)


TABLES = ["orders", "users", "employees", "invoices", "sessions", "payments", "accounts", "shipments", "tickets"]
PROJECTS = ["inventory", "billing", "weather station", "library", "chess club", "garden planner", "fleet", "survey"]
WORDS = ["hello", "error", "warning", "reasonpipe", "pipeline", "kayak", "level"]


def code_doc(rng: random.Random, language: str) -> str:
    """One code document in `language` (python, javascript, rust, c, sql, bash): several snippets of the language's
    bank with per-document identifiers, so that unrelated documents are different code."""
    if language == "python":
        funcs = []
        for j in _combo(rng, language, len(PY_FUNCS), rng.randint(2, 3)):  # each template: its own name suffix
            fname = f"{rng.choice(PY_NAMES)}_{PY_SUFFIX[j]}"
            funcs.append(PY_FUNCS[j].format(f=fname, i=rng.choice(["i", "k", "idx", "pos"])))
        head = rng.choice(
            ['"""Small utility helpers."""\n\n\n', "", "from __future__ import annotations\n\n\n",
             f'"""Helpers for the {rng.choice(PROJECTS)} project."""\n\n\n', f"# {rng.choice(PROJECTS)}: shared "
                                                                             "code\n\n\n"]
        )  # fmt: skip
        proj = rng.choice(PROJECTS).upper().replace(" ", "_")
        nums = [rng.randint(1, 999) for _ in range(rng.randint(2, 5))]
        consts = f"{proj}_LIMIT = {nums[0]}\n{proj}_WEIGHTS = ({', '.join(map(str, nums[1:] + [nums[0] // 2]))})\n\n\n"
        code = _rename(rng, head + consts + "\n\n".join(funcs))
        ast.parse(code)
        return code
    bank = {"javascript": JS_SNIPPETS, "rust": RUST_SNIPPETS, "c": C_SNIPPETS, "sql": SQL_SNIPPETS}
    bank = bank.get(language, BASH_SNIPPETS)
    parts = []
    for k in _combo(rng, language, len(bank), rng.randint(2, 3)):
        known = CODE_NAMES.get(language, [])
        names = known[k] if k < len(known) else ["run"]
        f = rng.choice(names)
        camel = re.sub(r"_(\w)", lambda m: m[1].upper(), f)
        fill = dict(
            f=camel if language == "javascript" else f,
            w=rng.choice(WORDS),
            t=rng.choice(TABLES),
            m=rng.randint(1, 9),
            n=rng.randint(1, 12),
            ext=rng.choice(["csv", "txt", "log", "json", "md"]),
            T=rng.choice(["Point", "Vec2", "Coord", "Cache", "Config", "Parse"]),
            nums=", ".join(str(rng.randint(0, 99)) for _ in range(5)),
        )
        if language == "c":
            fill["n"] = 5
        snippet = bank[k].format(**fill)
        if parts and language == "bash":  # one shebang per script
            snippet = "\n".join(ln for ln in snippet.split("\n") if not ln.startswith("#!"))
        parts.append(snippet)
    if language == "sql":  # plus generated statements
        parts += [_sql_statement(rng) for _ in range(rng.randint(1, 3))]
        rng.shuffle(parts)
    pre = _preamble(rng, language)
    if language == "bash":  # the shebang stays first
        first, _, rest = parts[0].partition("\n")
        parts[0] = first + "\n" + pre + rest
    else:
        parts.insert(0, pre)
    return _rename(rng, "\n".join(parts))


SQL_COLUMNS = {
    "id": "INTEGER PRIMARY KEY", "name": "TEXT NOT NULL", "email": "TEXT UNIQUE", "city": "TEXT", "country": "TEXT",
    "amount": "NUMERIC(10, 2)", "quantity": "INTEGER", "status": "TEXT", "created_at": "TIMESTAMP", "score": "REAL",
    "priority": "SMALLINT", "owner_id": "INTEGER", "due_date": "DATE", "weight_kg": "REAL", "notes": "TEXT",
}  # fmt: skip


def _sql_statement(rng: random.Random) -> str:
    """A generated SQL statement over random columns, conditions and numbers."""
    t = rng.choice(TABLES)
    cols = rng.sample(sorted(SQL_COLUMNS), rng.randint(3, 6))
    kind = rng.choice(["select", "create", "insert", "aggregate"])
    if kind == "create":
        body = ",\n".join(f"    {c} {SQL_COLUMNS[c]}" for c in ["id"] + [c for c in cols if c != "id"])
        return f"CREATE TABLE IF NOT EXISTS {t}_{rng.choice(PROJECTS).split()[0]} (\n{body}\n);\n"
    if kind == "insert":

        def value(c: str) -> str:
            kind = SQL_COLUMNS[c].split()[0].split("(")[0]
            if kind in ("INTEGER", "SMALLINT", "REAL", "NUMERIC"):
                return str(rng.randint(1, 5000))
            if kind in ("DATE", "TIMESTAMP"):
                return f"'2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}'"
            return f"'{rng.choice(NAMES).lower()}_{rng.randint(1, 99)}'"

        vals = [value(c) for c in cols]
        return f"INSERT INTO {t} ({', '.join(cols)})\nVALUES ({', '.join(vals)});\n"
    cond = rng.choice([f"quantity > {rng.randint(1, 50)}", f"score >= {rng.randint(10, 90)}.5",
                       f"status IN ('open', '{rng.choice(['late', 'held', 'new'])}')",
                       f"priority < {rng.randint(2, 9)}",
                       f"city = '{rng.choice(PLACES)}'"])  # fmt: skip
    if kind == "aggregate":
        g = rng.choice(["city", "country", "status", "owner_id"])
        return (
            f"SELECT {g}, COUNT(*) AS n_{t}, {rng.choice(['SUM', 'AVG', 'MAX'])}(amount) AS "
            f"{rng.choice(['amount_stat', 'metric', 'figure'])}\nFROM {t}\nWHERE {cond}\nGROUP BY {g}\n"
            f"HAVING COUNT(*) >= {rng.randint(2, 40)};\n"
        )
    return (
        f"SELECT {', '.join(cols)}\nFROM {t}\nWHERE {cond}\nORDER BY {rng.choice(cols)} "
        f"{rng.choice(['ASC', 'DESC'])}\nLIMIT {rng.randint(5, 500)};\n"
    )


def _preamble(rng: random.Random, language: str) -> str:
    """Per-document settings with fresh names and numbers (real files start with such constants)."""
    proj = rng.choice(PROJECTS)
    key = proj.upper().replace(" ", "_")
    nums = [rng.randint(1, 999) for _ in range(rng.randint(3, 6))]
    if language == "c":
        return (
            f"/* {proj}: {rng.choice(['small helpers', 'utility routines', 'core functions'])} */\n"
            f"#define {key}_MAX {nums[0]}\n"
            f"static const int {key.lower()}_limits[] = {{{', '.join(map(str, nums))}}};\n"
        )
    if language == "rust":
        return (
            f"//! {cap(proj)} {rng.choice(['helpers', 'utilities', 'building blocks'])}.\n\n"
            f"pub const {key}_LIMIT: usize = {nums[0]};\npub const {key}_WEIGHTS: [u32; {len(nums)}] = "
            f"[{', '.join(map(str, nums))}];\n"
        )
    if language == "javascript":
        return (
            f"// {proj} front-end helpers\nconst {key.lower()}Config = {{ retries: {nums[0]}, timeoutMs: "
            f"{nums[1] * 10}, sizes: [{', '.join(map(str, nums[2:]))}] }};\n"
        )
    if language == "sql":
        return f"-- {proj} reporting queries, revision {nums[0]}\n"
    return (
        f"# {proj} maintenance\n{key}_RETRIES={nums[0] % 9 + 1}\n{key}_LOG=/var/log/{proj.replace(' ', '-')}\n"
        f"{key}_KEEP_DAYS={nums[1]}\n\n"
    )


# function names per snippet of each bank (same order), so names match what the code does
CODE_NAMES = {
    "javascript": [
        ["max_value", "find_max", "largest"], ["reverse_string", "reversed"], ["fetch_json", "load_json"],
        ["debounce"], ["group_by", "group_items"], ["unique", "dedupe"], ["unused"], ["fibonacci", "fib"],
        ["slugify", "to_slug"], ["unused"],
    ],
    "rust": [
        ["sum_of_squares", "square_sum"], ["word_counts", "count_words"], ["unused"], ["factorial", "fact"],
        ["binary_search", "find_index"], ["is_palindrome", "palindrome"], ["unused"], ["insertion_sort", "sort_small"],
    ],
    "c": [
        ["sum_array", "array_sum", "total_of"], ["reverse_in_place", "str_reverse"], ["push_front", "list_prepend"],
        ["argmax", "index_of_max"], ["count_words", "word_count"], ["fnv1a", "hash_bytes"],
        ["print_powers", "power_table"], ["median", "median_of"],
    ],
}  # fmt: skip


# ----------------------------------------------------------------------------------------------------- web prose
WEB_TOPICS = {
    "cooking": [
        "Preheat the oven to {temp} degrees before you start on the dough.",
        "A pinch of salt brings out the sweetness of the {food}.",
        "Let the {food} rest for {n} minutes so the flavours settle.",
        "Our family has made this {food} every winter for as long as I can remember.",
        "If you cannot find fresh herbs, dried ones work, but use about a third as much.",
        "The secret, according to my grandmother, is patience and a heavy pan.",
        "I doubled the garlic this time and nobody complained.",
        "You can freeze the leftovers for up to {n} weeks in an airtight box.",
        "Toast the spices in a dry pan until they smell nutty, then grind them.",
        "Swap the butter for olive oil if you want a lighter version of the {food}.",
        "My neighbour from {place} taught me to add a splash of vinegar at the very end.",
        "Do not skip the resting step; the texture is completely different without it.",
        "Serve it warm with a green salad and some crusty bread.",
        "The first time I made {food} it came out far too salty.",
        "Weigh the flour instead of using cups, it makes a real difference.",
        "A cast iron skillet holds the heat much better than a thin pan.",
        "Leftover {food} makes an excellent lunch the next day.",
        "Chop everything before you turn on the stove, because it all goes quickly.",
    ],
    "travel": [
        "We arrived in {place} just as the market stalls were opening.",
        "The train from the airport takes about {n}0 minutes and runs every quarter hour.",
        "Book the ferry a few days ahead in summer.",
        "The old town of {place} is best explored on foot, early in the morning.",
        "Locals recommended a small cafe near the harbour, and they were right.",
        "Bring a light jacket: evenings near the coast can be surprisingly cool.",
        "Our guesthouse had only {n} rooms and a garden full of lemon trees.",
        "Most museums close on Mondays, which we discovered the hard way.",
        "A day pass for the buses costs less than two single tickets.",
        "The hike up to the viewpoint took us about {n} hours with breaks.",
        "We spent the last afternoon wandering through the botanical garden.",
        "The street food in {place} was the highlight of the whole trip.",
        "Carry some cash, since several of the smaller shops do not take cards.",
        "Our flight was delayed, so we missed the first evening entirely.",
        "If you only have one day, skip the cathedral and walk along the river.",
        "The night bus is cheap but you will not get much sleep.",
        "We rented bikes for {n} days and barely used the car.",
        "Sunrise from the old fortress walls is worth the early alarm.",
    ],
    "gardening": [
        "Tomatoes need at least six hours of direct sun a day.",
        "Water deeply but less often so the roots grow down.",
        "Mulch keeps the soil moist and the weeds down.",
        "I planted {n} rows of beans along the fence this spring.",
        "Compost is the cheapest way to improve heavy clay soil.",
        "Aphids can be rinsed off with a strong jet of water.",
        "The courgettes took over half of the bed by midsummer.",
        "Sow the lettuce every two weeks for a steady harvest.",
        "Our rain barrel filled up after a single storm.",
        "Marigolds between the vegetables seem to keep some pests away.",
        "Prune the roses in late winter, just above an outward facing bud.",
        "The raised beds warm up faster in spring than the ground does.",
        "Slugs ate every one of my seedlings the first year.",
        "Label your seed trays, because all the sprouts look alike at first.",
        "The apple tree finally gave us a proper crop after {n} years.",
        "Leave a corner wild and the bees will thank you.",
        "I start peppers indoors on the windowsill in early March.",
        "A thin layer of straw keeps the strawberries off the wet soil.",
    ],
    "reviews": [
        "The battery easily lasts a full day of normal use.",
        "Setup took about {n} minutes, mostly waiting for updates.",
        "The build quality feels solid for the price.",
        "Customer support answered my email within a day.",
        "My only complaint is that the cable is rather short.",
        "Overall I would buy it again, especially on sale.",
        "The screen is bright enough to read outdoors at noon.",
        "After {n} months of daily use the hinge is still tight.",
        "The manual is thin, so expect to search online for the details.",
        "It is noticeably lighter than the model it replaced.",
        "The fan gets loud when you push it hard.",
        "Shipping took longer than promised, but the box arrived intact.",
        "The companion app keeps asking me to create an account.",
        "Sound quality is fine for podcasts and a bit thin for music.",
        "The buttons have a satisfying click to them.",
        "For the money there is nothing better that I have found.",
        "My partner uses it more than I do now.",
        "Returning the first unit was painless, which I appreciated.",
    ],
    "local news": [
        "The city council approved the new bike lanes on Tuesday evening.",
        "Construction on the library extension is expected to take {n} months.",
        "Residents of {place} gathered for the annual street fair.",
        "The bakery on Main Street celebrates its {n}0th anniversary this year.",
        "Volunteers collected more than a ton of litter along the river.",
        "The school board will discuss the budget at next week's meeting.",
        "A new playground opened in the park behind the town hall.",
        "The bridge on the east road will be closed for repairs until the end of the month.",
        "Local farmers reported a good harvest despite the dry spring.",
        "The swimming pool extends its opening hours during the summer holidays.",
        "A retired teacher has organised free reading sessions for children.",
        "Police ask drivers to slow down near the primary school.",
        "The choir raised money for new instruments with a winter concert.",
        "Parking fees in the centre go up slightly from next month.",
        "The market hall is getting a new roof after decades of leaks.",
        "More than {n}00 people signed the petition for a pedestrian crossing.",
        "The football club is looking for volunteer coaches.",
        "Heavy rain flooded several basements on the north side of town.",
    ],
    "fitness": [
        "I started running three times a week in {month}.",
        "The first two weeks were hard, and then it suddenly got easier.",
        "A good pair of shoes matters more than any gadget.",
        "Stretching after the run keeps my knees happy.",
        "I follow a simple plan and add about ten percent distance each week.",
        "Rest days are part of the training, not a break from it.",
        "My longest run so far was {n} kilometres along the canal.",
        "Drinking enough water is the easiest habit to forget.",
        "Joining the local club made it much easier to stay motivated.",
        "Strength work twice a week helped with my back pain.",
        "Early morning runs are quiet and the air is cooler.",
        "I signed up for a small race in {place} to have a goal.",
        "Cycling to work counts as training too, if you ask me.",
        "Do not compare your pace with anyone else's in the first year.",
        "Yoga turned out to be harder than I expected.",
        "I track my runs, but I try not to obsess over the numbers.",
    ],
    "books": [
        "I finished the novel in a single weekend, which rarely happens.",
        "The first hundred pages are slow, so give it time.",
        "Our book club meets on the last Thursday of every month.",
        "The translation reads smoothly and keeps the humour of the original.",
        "I borrowed it from the library after a friend kept talking about it.",
        "The ending divided our group almost exactly in half.",
        "Her earlier books are shorter and, in my opinion, sharper.",
        "The audiobook narrator does wonderful voices for every character.",
        "It is set in {place} in the years after the war.",
        "I keep a notebook of quotes from everything I read.",
        "The chapters alternate between two sisters who do not speak to each other.",
        "Next month we are reading a collection of short stories.",
        "Secondhand bookshops are the best place to find forgotten gems.",
        "I read about {n} books a year, mostly on the train.",
        "The sequel was announced last week and I am already impatient.",
        "Some of the historical details were clearly well researched.",
    ],
    "pets": [
        "Our dog refuses to walk in the rain and sits down in protest.",
        "The cat has claimed the sunniest spot on the windowsill.",
        "We adopted him from the shelter {n} years ago.",
        "Puppy classes were worth every penny.",
        "She learned to open the kitchen door within a week.",
        "The vet recommended smaller meals twice a day.",
        "Our rabbit needs much more space than we expected.",
        "Brushing the dog once a week keeps the hair under control.",
        "The neighbours' children come over just to play with the kitten.",
        "He is scared of the vacuum cleaner but not of thunder.",
        "Long walks in the woods tire him out better than anything.",
        "We bought a feeder with a timer for when we travel.",
        "The goldfish has outlived two aquarium filters.",
        "Introducing the new cat to the old one took about {n} weeks.",
        "Treats work, but praise works almost as well.",
        "The parrot has started imitating the doorbell.",
    ],
    "home": [
        "We finally repainted the hallway after years of talking about it.",
        "The old windows let in a surprising amount of cold air.",
        "Decluttering one drawer a day is more realistic than one weekend.",
        "The plumber found the leak behind the washing machine.",
        "We switched to LED bulbs and noticed the difference on the bill.",
        "Shelves on the wall freed up a lot of floor space.",
        "Sanding the old table took {n} afternoons but it looks new.",
        "A doormat and a shoe rack keep most of the dirt out.",
        "The kitchen tap dripped for months before I fixed it myself.",
        "Plants in the bathroom love the humidity.",
        "Label the boxes by room when you move, trust me.",
        "We hung thick curtains and the bedroom is much quieter now.",
        "The garage has become the place where things go to be forgotten.",
        "Second-hand furniture is often better made than new pieces.",
        "A small toolbox solves most of the problems in a flat.",
        "Cleaning the gutters is nobody's favourite job.",
    ],
}
WEB_GENERIC = [
    "I have been meaning to write this post for a while.",
    "Thanks to everyone who left a comment last time.",
    "As always, your mileage may vary.",
    "We learned this the hard way, of course.",
    "A friend asked me about this over coffee last week.",
    "It was raining most of the time, which did not help.",
    "Prices have gone up a little since last year.",
    "Let me know in the comments if you have tried something similar.",
    "I will post an update once I know more.",
    "The photos do not really do it justice.",
    "Honestly, it was better than I expected.",
    "The kids loved it, which is always a good sign.",
    "Next time I would plan a bit more carefully.",
    "This is not sponsored; I just like it.",
    "My sister thinks I am overdoing it, and she may be right.",
    "It has been a busy month, so this post is a little late.",
    "Some of you asked for more details, so here they are.",
    "I am still not sure what I think about it.",
    "The weather finally turned, and everything feels easier.",
    "None of this is expert advice, just what worked for us.",
    "It took longer than planned, as these things usually do.",
    "I wrote most of this on the train home.",
    "We will see how it holds up over the next few months.",
    "Small changes add up more than you would think.",
    "If I had to do it again, I would start earlier.",
    "My notes from that week are a bit of a mess.",
    "A reader sent me a lovely email about the last post.",
    "I keep coming back to this, so it must mean something.",
    "The whole family got involved in the end.",
    "There is a longer version of this story for another day.",
]
PLACES = ["Lisbon", "Porto", "Kyoto", "Oaxaca", "Tromso", "Ghent", "Valparaiso", "Hobart", "Split", "Tbilisi", "Leeds",
          "Cusco", "Hanoi", "Bergen", "Quebec", "Malaga", "Krakow", "Cork"]  # fmt: skip
FOODS = ["apple pie", "lentil soup", "focaccia", "banana bread", "curry", "risotto", "dumplings", "chili",
         "shakshuka", "ramen", "goulash", "pumpkin soup", "flatbread", "paella"]  # fmt: skip
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October"]
WEB_TITLES = ["Notes on", "A few thoughts about", "Our week:", "Tips:", "Update on", "What I learned about",
              "Another post about", "Small wins in", "Lessons from", "Still thinking about"]  # fmt: skip


def web_doc(rng: random.Random) -> tuple[str, str]:
    """(title, text): everyday web prose (no math): sentences of one main topic, a few of a second one and generic
    blog lines, in random order and paragraphs, 8-30 sentences."""
    topic, aside = rng.sample(sorted(WEB_TOPICS), 2)
    fill = dict(
        n=rng.randint(2, 9), place=rng.choice(PLACES), food=rng.choice(FOODS), temp=rng.choice([180, 190, 200, 220]),
        month=rng.choice(MONTHS),
    )  # fmt: skip
    bank = WEB_TOPICS[topic]
    picks = rng.sample(bank, rng.randint(5, min(14, len(bank))))
    picks += rng.sample(WEB_TOPICS[aside], rng.randint(0, 2)) + rng.sample(WEB_GENERIC, rng.randint(3, 12))
    sents = [s.format(**fill) for s in picks]
    rng.shuffle(sents)
    cuts = sorted(rng.sample(range(1, len(sents)), rng.randint(2, min(6, len(sents) - 1))))
    paras = [" ".join(sents[a:b]) for a, b in zip([0] + cuts, cuts + [len(sents)])]
    title = rng.choice(WEB_TITLES) + " " + topic
    return title, "\n\n".join(paras)


# ------------------------------------------------------------------------------------------------- perturbations
SYNONYMS = {
    "buys": "purchases", "How many": "What number of", "total": "overall", "each": "apiece", "then": "afterwards",
    "find": "determine", "Find": "Determine", "gives": "hands", "needs": "requires", "costs": "is priced at",
    "spends": "uses", "earns": "makes", "pays": "hands over", "scored": "got", "travels": "goes", "keep": "retain",
    "normally": "usually", "wants": "would like", "left": "remaining",
}  # fmt: skip


def near_duplicate(rng: random.Random, text: str, rate: float = 0.05) -> str:
    """Change ~`rate` of the words (replace by a filler word) and jitter whitespace/case a little."""
    words = text.split(" ")
    n = max(1, round(len(words) * rate))
    fillers = ["really", "quite", "also", "indeed", "just", "still", "very", "simply"]
    for i in rng.sample(range(len(words)), min(n, len(words))):
        if "\n" not in words[i] and "$" not in words[i]:
            words[i] = rng.choice(fillers)
    out = " ".join(words)
    if rng.random() < 0.5:
        out = out.replace(". ", ".  ", 3)
    if rng.random() < 0.5:
        out = out[:1].lower() + out[1:]
    return out


def near_duplicate_code(rng: random.Random, code: str, rate: float = 0.05) -> str:
    """Code near duplicate that stays valid: change docstring/comment words, add a comment and blank lines."""
    lines = code.split("\n")
    n = max(1, round(len(code.split()) * rate))
    slots = [
        (i, j)
        for i, ln in enumerate(lines)
        if '"""' in ln or ln.lstrip().startswith("#")
        for j, w in enumerate(ln.split(" "))
        if w.isalpha() and w.islower()
    ]
    for i, j in sorted(rng.sample(slots, min(n, len(slots)))):
        words = lines[i].split(" ")
        words[j] = rng.choice(["simply", "also", "then", "first", "quickly"])
        lines[i] = " ".join(words)
    return "\n".join(lines).rstrip("\n") + "\n\n\n# " + rng.choice(["end of module", "helpers", "utils"]) + "\n"


def perturb_light(rng: random.Random, text: str, kind: str) -> str:
    """Light perturbation of a benchmark question: case, whitespace, punctuation or one changed word."""
    if kind == "case":
        return text.lower()
    if kind == "whitespace":
        return "  " + text.replace(" ", "  ", 4).replace(". ", ".\n", 1) + " \n"
    if kind == "punctuation":
        return text.replace(",", "").replace("?", " ?").replace("$", "")
    for a, b in SYNONYMS.items():  # "word": one changed word
        if f" {a} " in text:
            return text.replace(f" {a} ", f" {b} ", 1)
    return text + " Explain."


def reword(rng: random.Random, text: str) -> str:
    """A slight rewording (one synonym swap, two in long questions) used for problem-level duplicates."""
    keys = [k for k in SYNONYMS if f" {k} " in f" {text} "]
    for k in rng.sample(keys, min(1 + (len(text) > 160), len(keys))):
        text = (" " + text + " ").replace(f" {k} ", f" {SYNONYMS[k]} ", 1).strip()
    return text


# ----------------------------------------------------------------------------------------------- distinctness
_TOKEN = re.compile(r"[0-9A-Za-z_\x80-\U0010ffff]+|[+\-*/=<>^%&|~\\]")  # the MinHash stage's token rule


def shingles(text: str, n: int = 3) -> set[tuple[str, ...]]:
    """n-token shingles of `text` (lowercased words, numbers and single operators), as near-dedup sees them."""
    t = _TOKEN.findall(text.lower())
    return set(zip(*(t[i:] for i in range(n))))


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def char_jaccard(a: str, b: str, n: int = 5) -> float:
    """Jaccard similarity of the character n-grams of two problems (lowercase, letters and digits only)."""
    a, b = (re.sub(r"[^0-9a-z]", "", s.lower()) for s in (a, b))
    return jaccard({a[i : i + n] for i in range(len(a) - n + 1)}, {b[i : i + n] for i in range(len(b) - n + 1)})


class Distinct:
    """Regenerates a document while it is too similar (3-token-shingle Jaccard >= `limit`) to an earlier document of
    its family: unrelated generated documents keep a clear margin below near-dedup's 0.5 threshold."""

    def __init__(self, limit: float = 0.4, tries: int = 20):
        self.limit, self.tries, self.seen = limit, tries, {}

    def __call__(self, family: str, make: Callable[[], object], key: Callable[[object], str] = str) -> object:
        seen = self.seen.setdefault(family, [])
        for _ in range(self.tries):
            doc = make()
            sh = shingles(key(doc))
            if all(jaccard(sh, other) < self.limit for other in seen):
                break
        seen.append(sh)
        return doc


# ------------------------------------------------------------------------------------------------------ writers
def dumps(rec: object) -> str:
    return json.dumps(rec, ensure_ascii=False, sort_keys=True)


def write_jsonl(path: Path, records: list[object]) -> None:
    """jsonl, .jsonl.gz (mtime 0: reproducible bytes) or .jsonl.zst, by suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(dumps(r) + "\n" for r in records).encode("utf-8")
    if path.name.endswith(".gz"):
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
            gz.write(data)
        data = buf.getvalue()
    elif path.name.endswith(".zst"):
        import zstandard

        data = zstandard.ZstdCompressor(level=10).compress(data)
    path.write_bytes(data)


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def write_parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, compression="zstd")


def write_arrow_stream(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)


def write_hf(path: Path, rows: list[dict]) -> None:
    """A `datasets` save_to_disk folder with a fixed fingerprint (so its files are reproducible)."""
    import pyarrow as pa
    from datasets import Dataset

    if path.exists():
        shutil.rmtree(path)
    Dataset(pa.Table.from_pylist(rows), fingerprint="reasonpipe-demo").save_to_disk(str(path))


# ------------------------------------------------------------------------------------------------ corpus builder
@dataclass
class Plan:
    """Counts of a corpus build (the demo and the CI corpus differ only in these)."""

    chat: int = 160
    chat_long: int = 40
    gsm: int = 120
    solutions: int = 80
    solutions_long: int = 6
    prompt_completion: int = 60
    pc_long: int = 8
    marco: int = 50
    marco_long: int = 8
    hf: int = 40
    arrow: int = 30
    math_prose: int = 120
    code: dict = field(default_factory=lambda: dict(python=60, javascript=20, rust=15, c=15, sql=15, bash=15))
    web: int = 100
    benchmark: int = 50
    leaked: int = 10
    exact_dups: int = 12
    near_dups: int = 12
    problem_dups: int = 10  # groups of 3 samples of one problem (problem_dedup with k keeps k of each)
    no_reasoning: int = 6  # planted answers without reasoning (half chat, half prompt/completion)
    long_target: tuple[int, int] = (21000, 30000)  # characters of reasoning of a long trace
    overlong_prompt_chars: int = 24000  # a prompt+answer that alone exceeds a 4096-token context
    huge_bytes: int = 2 * 1024 * 1024
    pool_problems: int = 8  # reasoning/pool.jsonl: problems with several traces each (test-time-compute builders)
    pool_traces: int = 6
    formats: tuple[str, ...] = ("gz", "zst", "parquet", "csv", "arrow", "hf")  # optional containers exercised


def _messages(rng: random.Random, p_or_long, system: bool) -> list[dict]:
    """Chat messages with <think> in the assistant content; `p_or_long` is a Problem or a LongTrace."""
    msgs = []
    if system:
        msgs.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    if isinstance(p_or_long, LongTrace):
        msgs.append({"role": "user", "content": p_or_long.question})
        msgs.append(
            {"role": "assistant", "content": f"<think>\n{p_or_long.reasoning}\n</think>\n\n{p_or_long.content}"}
        )
    else:
        msgs.append({"role": "user", "content": p_or_long.question})
        msgs.append(
            {
                "role": "assistant",
                "content": f"<think>\n{render_think(p_or_long, rng)}\n</think>\n\n{render_answer(p_or_long, rng)}",
            }
        )
    return msgs


SYSTEM_PROMPTS = [  # no literal think tags here: reasoning_quality drops turns that contain a stray tag
    "You are a helpful assistant. Think step by step before answering.",
    "You are a careful math tutor. Reason privately, then give a concise final answer.",
    "Answer the user's question. Reason through it first, then state the final answer clearly.",
    "You are a patient teacher who explains arithmetic to students. Show the key steps.",
]


def build(out: Path, plan: Plan, seed: int = 0) -> dict:
    """Write a corpus under `out` following `plan`; return the planted-items description (also PLANTED.json)."""
    rng = random.Random(seed)
    _USED_PAIRS.clear()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    planted: dict = {
        "seed": seed,
        "files": {},
        "long_traces": [],
        "exact_duplicates": [],
        "near_duplicates": [],
        "problem_duplicates": [],
        "leaked": [],
        "malformed": [],
        "overlong_prompt": [],
        "no_reasoning": [],
        "pool": [],
    }
    files: dict[str, list] = {}
    distinct = Distinct()

    def add(file: str, rec: dict) -> dict:
        files.setdefault(file, []).append(rec)
        return rec

    # --- benchmark (generated from its own stream so corpus changes never alter it)
    # Its scenarios and wording come from BENCH_FAMILIES / render_gsm_bench, never from the corpus families.
    brng, bench_draw = random.Random(seed + 1000), ProblemSource(BENCH_FAMILIES)
    bench = []
    for _ in range(plan.benchmark):
        p = bench_draw(brng)
        bench.append({"question": p.question, "answer": render_gsm_bench(p, brng), "_p": p})
    make_problem = ProblemSource()  # corpus problems: no accidental repeats of a problem

    # --- short problems in four schemas
    def new_id(prefix: str) -> str:
        return f"{prefix}-{len(files.get(prefix_file[prefix], []))}"

    prefix_file = {
        "chat": "reasoning/chat.jsonl.gz" if "gz" in plan.formats else "reasoning/chat.jsonl",
        "gsm": "reasoning/gsm.jsonl",
        "sol": "reasoning/solutions.jsonl",
        "pc": "reasoning/prompt_completion.jsonl.zst"
        if "zst" in plan.formats
        else "reasoning/prompt_completion.jsonl",
        "marco": "reasoning/marco.jsonl",
    }
    long_lo, long_hi = plan.long_target

    def long_trace() -> LongTrace:
        return make_long(rng, rng.randint(long_lo, long_hi))

    def record_long(file: str, rid: str, lt: LongTrace) -> None:
        checked, errors = check_arithmetic(lt.reasoning)  # self-check: every written computation holds
        assert not errors and checked >= 20, (lt.family, checked, errors[:3])
        assert len(lt.reasoning) >= long_lo, (lt.family, len(lt.reasoning))
        planted["long_traces"].append(
            {"file": file, "id": rid, "family": lt.family, "answer": lt.answer, "reasoning_chars": len(lt.reasoning)}
        )

    # chat: long ones (some multi-turn with a short reasoning turn first), short ones (some multi-turn / system)
    for i in range(plan.chat):
        rid = new_id("chat")
        system = rng.random() < 0.25
        bare = 0 <= i - plan.chat_long < plan.no_reasoning // 2  # planted: an assistant turn without reasoning
        if i < plan.chat_long:
            lt = long_trace()
            msgs = _messages(rng, lt, system)
            if i % 4 == 1:  # multi-turn: an earlier short exchange with its own reasoning
                first = _messages(rng, make_problem(rng), False)
                msgs = msgs[:1] + first + msgs[-2:] if system else first + msgs
            record_long(prefix_file["chat"], rid, lt)
        else:
            p = make_problem(rng)
            msgs = _messages(rng, p, system)
            if not bare and rng.random() < 0.2:
                q = make_problem(rng)
                msgs += [
                    {"role": "user", "content": rng.choice(["Thanks! Another one: ", "Next: ", ""]) + q.question},
                    {
                        "role": "assistant",
                        "content": f"<think>\n{render_think(q, rng)}\n</think>\n\n{render_answer(q, rng)}",
                    },
                ]
            elif bare:
                msgs[-1]["content"] = render_answer(p, rng)
                planted["no_reasoning"].append({"file": prefix_file["chat"], "id": rid})
        add(prefix_file["chat"], {"id": rid, "messages": msgs})
    # prompt + answer alone longer than the context: a huge data table in the prompt, short reasoning
    nums = [rng.randint(100, 9999) for _ in range(plan.overlong_prompt_chars // 5)]
    prompt = "Add up all of the following numbers and report the total.\n\n" + " ".join(map(str, nums))
    rid = new_id("chat")
    add(
        prefix_file["chat"],
        {
            "id": rid,
            "messages": [
                {"role": "user", "content": prompt},
                {
                    "role": "assistant",
                    "content": "<think>\nThat is a long list, so I will add the numbers in blocks of ten, write down "
                    "the subtotal of every block, and then add the subtotals. Afterwards I will add the list again "
                    "from the end to the start and compare the two totals before I answer.\n</think>"
                    f"\n\nThe numbers are: {' + '.join(map(str, nums))} = {sum(nums)}.\n\n$\\boxed{{{sum(nums)}}}$",
                },
            ],
        },
    )
    planted["overlong_prompt"].append({"file": prefix_file["chat"], "id": rid, "prompt_chars": len(prompt)})

    gsm_problems: list[Problem] = []
    for _ in range(plan.gsm):
        p = make_problem(rng)
        gsm_problems.append(p)
        add(prefix_file["gsm"], {"id": new_id("gsm"), "question": p.question, "answer": render_gsm(p, rng)})
    for i in range(plan.solutions):
        rid = new_id("sol")
        if i < plan.solutions_long:
            lt = long_trace()
            add(
                prefix_file["sol"], {"id": rid, "problem": lt.question, "solution": lt.reasoning + "\n\n" + lt.content}
            )
            record_long(prefix_file["sol"], rid, lt)
        else:
            p = make_problem(rng)
            add(prefix_file["sol"], {"id": rid, "problem": p.question, "solution": render_solution(p, rng)})
    for i in range(plan.prompt_completion):
        rid = new_id("pc")
        if i < plan.pc_long:
            lt = long_trace()
            comp = f"<think>\n{lt.reasoning}\n</think>\n\n{lt.content}"
            add(prefix_file["pc"], {"id": rid, "prompt": lt.question, "completion": comp})
            record_long(prefix_file["pc"], rid, lt)
        else:
            p = make_problem(rng)
            bare = i - plan.pc_long < plan.no_reasoning - plan.no_reasoning // 2  # planted: no reasoning at all
            comp = ("" if bare else f"<think>\n{render_think(p, rng)}\n</think>\n\n") + render_answer(p, rng)
            add(prefix_file["pc"], {"id": rid, "prompt": p.question, "completion": comp})
            if bare:
                planted["no_reasoning"].append({"file": prefix_file["pc"], "id": rid})
    for i in range(plan.marco):
        rid = new_id("marco")
        if i < plan.marco_long:
            lt = long_trace()
            th = lt.reasoning[:1].lower() + lt.reasoning[1:]
            resp = f"<Thought>\n{th}\n</Thought>\n<Output>\n{lt.content}\n</Output>"
            add(prefix_file["marco"], {"id": rid, "instruction": lt.question, "response": resp})
            record_long(prefix_file["marco"], rid, lt)
        else:
            p = make_problem(rng)
            add(prefix_file["marco"], {"id": rid, "instruction": p.question, "response": render_marco(p, rng)})

    # --- problem-level duplicates: groups of three samples of one problem (the GSM original, and its slightly
    # reworded question as a chat sample and as a MATH-style solution), each with its own trace
    rewordable = [  # long enough that a synonym swap keeps the problems similar (problem_dedup: Jaccard >= 0.7)
        j
        for j, p in enumerate(gsm_problems)
        if len(p.question) >= 120 and any(f" {k} " in p.question for k in SYNONYMS)
    ]
    for i in range(plan.problem_dups):
        start = i * len(rewordable) // plan.problem_dups
        for j in rewordable[start:] + rewordable[:start]:  # the first whose rewording stays clearly similar
            question = reword(rng, files[prefix_file["gsm"]][j]["question"])
            if char_jaccard(question, files[prefix_file["gsm"]][j]["question"]) >= 0.8:
                break
        src, p = files[prefix_file["gsm"]][j], gsm_problems[j]
        rid = new_id("chat")
        msgs = _messages(rng, p, rng.random() < 0.3)
        msgs[-2]["content"] = question
        add(prefix_file["chat"], {"id": rid, "messages": msgs})
        sid = new_id("sol")
        add(prefix_file["sol"], {"id": sid, "problem": question, "solution": render_solution(p, rng)})
        planted["problem_duplicates"] += [
            {"of": [prefix_file["gsm"], src["id"]], "dup": [prefix_file["chat"], rid]},
            {"of": [prefix_file["gsm"], src["id"]], "dup": [prefix_file["sol"], sid]},
        ]

    # --- benchmark leaks: perturbed benchmark questions inside the corpus
    kinds = ["case", "whitespace", "punctuation", "word"]
    wordy = [b for b in bench if len(b["question"].split()) >= 20]  # long enough for n-gram decontamination
    for i in range(plan.leaked):
        b = wordy[i * len(wordy) // plan.leaked]
        kind = kinds[i % len(kinds)]
        q = perturb_light(rng, b["question"], kind)
        target = [prefix_file["gsm"], prefix_file["chat"], prefix_file["pc"]][i % 3]
        rid = new_id({v: k for k, v in prefix_file.items()}[target])
        if target == prefix_file["gsm"]:
            add(target, {"id": rid, "question": q, "answer": b["answer"]})
        elif target == prefix_file["chat"]:
            add(target, {"id": rid, "messages": _messages(rng, b["_p"], False)})
            files[target][-1]["messages"][0]["content"] = q
        else:
            comp = f"<think>\n{render_think(b['_p'], rng)}\n</think>\n\n{render_answer(b['_p'], rng)}"
            add(target, {"id": rid, "prompt": q, "completion": comp})
        planted["leaked"].append({"benchmark_index": bench.index(b), "file": target, "id": rid, "perturbation": kind})

    # --- math prose (parquet), code (jsonl per language), web (csv)
    math_file = "math/prose.parquet" if "parquet" in plan.formats else "math/prose.jsonl"
    for i in range(plan.math_prose):
        add(math_file, {"id": f"math-{i}", "text": distinct("math", lambda: math_prose(rng)), "source": "generated"})
    for lang, n in plan.code.items():
        for i in range(n):
            add(
                f"code/{lang}.jsonl",
                {
                    "id": f"{lang}-{i}",
                    "language": lang,
                    "content": distinct(lang, lambda lang=lang: code_doc(rng, lang)),
                    "path": f"src/{lang}/{i}",
                },
            )
    web_file = "prose/web.csv" if "csv" in plan.formats else "prose/web.jsonl"
    for i in range(plan.web):
        title, text = distinct("web", lambda: web_doc(rng), key=lambda doc: doc[1])
        add(
            web_file,
            {
                "id": f"web-{i}",
                "title": title,
                "text": text,
                "url": f"https://example.org/{title.lower().replace(' ', '-').replace(':', '')}/{i}",
            },
        )

    # --- exact and near duplicates planted across files (same schema, different file or position)
    dup_sources = [
        (web_file, "text"),
        (math_file, "text"),
        ("code/python.jsonl", "content"),
        (prefix_file["gsm"], None),
    ]
    # copies are made of ordinary records only (not of leaks, problem-duplicate originals or other plants)
    taken = {d["id"] for d in planted["leaked"] + planted["no_reasoning"]}
    taken |= {d["of"][1] for d in planted["problem_duplicates"]}

    def ordinary(file: str) -> dict:
        candidates = [r for r in files[file] if r["id"] not in taken]
        rec = candidates[rng.randrange(len(candidates))]
        taken.add(rec["id"])
        return rec

    for i in range(plan.exact_dups):
        file, _ = dup_sources[i % len(dup_sources)]
        src = ordinary(file)
        copy = dict(src, id=f"{src['id']}-exactdup{i}")
        taken.add(copy["id"])
        dest = file
        if file == prefix_file["gsm"] and "hf" in plan.formats:
            dest = "hf/gsm_extra"
        elif file == "code/python.jsonl":
            dest = "code/python_more.jsonl"
        add(dest, copy)
        planted["exact_duplicates"].append({"of": [file, src["id"]], "dup": [dest, copy["id"]]})
    for i in range(plan.near_dups):
        file, key = dup_sources[i % 3]
        src = ordinary(file)
        copy = dict(src, id=f"{src['id']}-neardup{i}")
        taken.add(copy["id"])
        copy[key] = (near_duplicate_code if key == "content" else near_duplicate)(rng, src[key])
        add(file, copy)
        planted["near_duplicates"].append({"of": [file, src["id"]], "dup": [file, copy["id"]]})
    if plan.near_dups:  # a near duplicate of a long reasoning trace as well
        lt0 = planted["long_traces"][0]
        src = next(r for r in files[lt0["file"]] if r["id"] == lt0["id"])
        copy = json.loads(json.dumps(src))
        copy["id"] = src["id"] + "-neardup"
        copy["messages"][-1]["content"] = near_duplicate(rng, src["messages"][-1]["content"], 0.03)
        add(lt0["file"], copy)
        planted["near_duplicates"].append({"of": [lt0["file"], src["id"]], "dup": [lt0["file"], copy["id"]]})

    # --- extra readers: a datasets save_to_disk folder and an Arrow IPC stream file
    if "hf" in plan.formats:
        for i in range(plan.hf):
            p = make_problem(rng)
            files.setdefault("hf/gsm_extra", []).insert(
                i, {"id": f"hf-{i}", "question": p.question, "answer": render_gsm(p, rng)}
            )
    if "arrow" in plan.formats:
        for i in range(plan.arrow):
            p = make_problem(rng)
            add(
                "math/exercises.arrow",
                {"id": f"arrow-{i}", "problem": p.question, "solution": render_solution(p, rng)},
            )

    # --- the trace pool: drawn last, from a stream of its own (the files above do not change with it), never a
    # problem drawn before
    if plan.pool_problems:
        pool, wrong = trace_pool(random.Random(seed + 2000), make_problem, plan.pool_problems, plan.pool_traces)
        files["reasoning/pool.jsonl"] = pool
        for i in range(plan.pool_problems):
            ids = [r["id"] for r in pool if r["id"].startswith(f"pool-{i}-")]
            gold = pool[i * plan.pool_traces]["gold"]
            planted["pool"].append(
                {"file": "reasoning/pool.jsonl", "ids": ids, "wrong": [x for x in ids if x in wrong], "gold": gold}
            )

    # --- malformed records (line numbers are 0-based)
    bad: list[tuple[bytes, str]] = [
        (dumps({"id": "bad-ok-0", "text": OK_TEXT[0]}).encode(), "ok"),
        (b'{"id": "bad-1", "text": "unterminated string}', "invalid_json"),
        (b'["a", "list", "not", "an", "object"]', "not_an_object"),
        (b"42", "not_an_object"),
        (b'{"id": "bad-4", "text": "caf\xe9 au lait \xff\xfe broken bytes"}', "invalid_utf8"),
        (dumps({"id": "bad-5", "text": ""}).encode(), "empty_text"),
        (dumps({"id": "bad-6", "body": "the text field is missing"}).encode(), "missing_field"),
        (dumps({"id": "bad-7", "text": None}).encode(), "wrong_field_type"),
        (dumps({"id": "bad-ok-8", "text": OK_TEXT[1]}).encode(), "ok"),
    ]
    (out / "bad/text").mkdir(parents=True, exist_ok=True)
    (out / "bad/text/malformed.jsonl").write_bytes(b"".join(line + b"\n" for line, _ in bad))
    for ln, (_, reason) in enumerate(bad):
        if reason != "ok":
            planted["malformed"].append({"file": "bad/text/malformed.jsonl", "line": ln, "reason": reason})
    huge_rec = {"id": "bad-huge", "text": _huge_text(rng, plan.huge_bytes)}
    write_jsonl(out / "bad/text/huge.jsonl", [{"id": "bad-huge-ok", "text": OK_TEXT[2]}, huge_rec])
    planted["malformed"].append(
        {"file": "bad/text/huge.jsonl", "line": 1, "reason": "huge", "bytes": len(dumps(huge_rec).encode())}
    )
    chat_bad = [
        ({"id": "cbad-0", "messages": "hello"}, "messages_not_a_list"),
        ({"id": "cbad-1", "messages": []}, "no_turns"),
        (
            {
                "id": "cbad-2",
                "messages": [
                    {"role": "user", "content": "What is 2 + 2?"},
                    {"role": "assistant", "content": "<think>\n2 + 2 = 4, unclosed"},
                ],
            },
            "unclosed_think",
        ),
        ({"id": "cbad-3", "messages": [{"role": "robot", "content": "beep"}]}, "unknown_role"),
        ({"id": "cbad-4", "messages": [{"role": "user"}]}, "turn_missing_content"),
    ]
    write_jsonl(out / "bad/chat/malformed.jsonl", [r for r, _ in chat_bad])
    for ln, (_, reason) in enumerate(chat_bad):
        planted["malformed"].append({"file": "bad/chat/malformed.jsonl", "line": ln, "reason": reason})

    # --- write everything
    for file, recs in files.items():
        path = out / file
        if file.endswith(".parquet"):
            write_parquet(path, recs)
        elif file.endswith(".csv"):
            write_csv(path, recs, ["id", "title", "url", "text"])
        elif file.endswith(".arrow"):
            write_arrow_stream(path, recs)
        elif file.startswith("hf/"):
            write_hf(path, recs)
        else:
            write_jsonl(path, recs)
        planted["files"][file] = len(recs)
    write_jsonl(out / "benchmarks/mini_gsm.jsonl", [{"question": b["question"], "answer": b["answer"]} for b in bench])
    planted["files"]["benchmarks/mini_gsm.jsonl"] = len(bench)
    planted["bad_files"] = {
        f: len((out / f).read_bytes().splitlines())
        for f in ("bad/text/malformed.jsonl", "bad/text/huge.jsonl", "bad/chat/malformed.jsonl")
    }
    planted["counts"] = {k: len(v) for k, v in planted.items() if isinstance(v, list)}
    planted["counts"]["samples"] = sum(n for f, n in planted["files"].items() if not f.startswith("benchmarks/"))
    (out / "PLANTED.json").write_text(json.dumps(planted, indent=1, sort_keys=True) + "\n")
    return planted


# valid records next to the broken ones: ordinary web prose that passes every filter
OK_TEXT = [
    "The community garden opened its gates again this spring, and more than forty families signed up for a plot. "
    "Volunteers repaired the old shed, built two new compost bins and planted a hedge along the north fence. On "
    "Saturday mornings there is a small swap table where people leave seedlings, tools and spare seeds for others.",
    "Our street finally got its new lamps last week, after a long wait and several letters to the council. The light "
    "is warmer than before, and the pavement by the school no longer feels dark in the evening. Neighbours say that "
    "the cyclists are easier to see now, and the children can walk home from the bus stop with their friends.",
    "The village library has started a lending shelf for board games, and it has become popular with families on "
    "rainy weekends. Anyone with a library card can borrow two games for a fortnight. The staff ask only that every "
    "piece comes back in the box, and they keep a list of missing parts on the notice board by the entrance.",
]


def _huge_text(rng: random.Random, nbytes: int) -> str:
    """About `nbytes` of plain prose (a runaway scraped page)."""
    para = " ".join(web_doc(rng)[1] for _ in range(5))
    reps = nbytes // len(para.encode()) + 1
    return ((para + "\n\n") * reps)[:nbytes]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE / "demo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--huge", action="store_true", help="also write bad/text/huge_50mb.jsonl (~50 MB record)")
    args = ap.parse_args()
    readme = args.out / "README.md"
    keep = readme.read_text() if readme.exists() else None
    planted = build(args.out, Plan(), args.seed)
    if keep is not None:
        readme.write_text(keep)
    if args.huge:
        rng = random.Random(args.seed + 50)
        write_jsonl(
            args.out / "bad/text/huge_50mb.jsonl", [{"id": "bad-huge-50mb", "text": _huge_text(rng, 50 * 2**20)}]
        )
    print(json.dumps(planted["counts"], sort_keys=True))


if __name__ == "__main__":
    main()
