"""GSM8K-style multi-step arithmetic word problems, generated from templates.

The task family behind the shipped tiny models (``models/generator``, ``models/prm``,
``models/orm``). Every problem follows one person's stock of objects through 2-5
arithmetic steps; the wording of the question varies (names, objects, verbs,
sentence templates) while the solution keeps one checkable shape:

* steps are separated by a blank line (``"\\n\\n"``, the PRM step convention);
* each step states exactly one operation as ``a op b = c`` (``op`` in ``+ - * /``);
* the last step ends with ``The answer is \\boxed{ANSWER}.``

``Problem.checked_solution`` adds a backward check after the answer (each step undone,
back to the starting number, then the answer again): the shape of a reasoning model
that keeps checking an answer it already has, which early-exit methods such as
Dynasor-CoT cut short. ``Problem.answered_during_check`` is that solution cut after a
few check steps and closed with the answer line: asked for its answer part-way through a
check, a model that has found the answer says it (what early-exit probes rely on in
real reasoning models). ``models/reasoner`` is trained on both.

A second, program-aided form of the same problem (``PROGRAM_PROMPT_TEMPLATE``) is
a short Python program whose last line prints the answer.

Splits are drawn from disjoint seeds (``make_split``); the train split drops any
question text that occurs in dev or test (``split_overlap`` checks it).
``check_steps`` gives Math-Shepherd-style automatic step labels.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from scaffolding_backend.kernel.prompts import DEFAULT_PROGRAM_TEMPLATE as PROGRAM_PROMPT_TEMPLATE
from scaffolding_backend.kernel.prompts import DEFAULT_STEP_DELIMITER as STEP_SEPARATOR
from scaffolding_backend.kernel.prompts import DEFAULT_TEMPLATE as PROMPT_TEMPLATE
from scaffolding_backend.kernel.prompts import PromptFormat

# Disjoint seed spaces per split: example i of split s is drawn from Random(SEED_BASE[s] + i).
SEED_BASE = {"train": 1_000_000_000, "dev": 2_000_000_000, "test": 3_000_000_000}
# Sizes of the shipped dev/test files; the train split excludes every question of these.
SHIPPED_SIZES = {"dev": 200, "test": 400}

NAMES = [
    ("Tom", "he", "his", "him"),
    ("Mia", "she", "her", "her"),
    ("Ravi", "he", "his", "him"),
    ("Lena", "she", "her", "her"),
    ("Omar", "he", "his", "him"),
    ("Sofia", "she", "her", "her"),
    ("Ken", "he", "his", "him"),
    ("Ada", "she", "her", "her"),
    ("Luis", "he", "his", "him"),
    ("Nora", "she", "her", "her"),
    ("Sam", "he", "his", "him"),
    ("Ines", "she", "her", "her"),
    ("Yuki", "she", "her", "her"),
    ("Ben", "he", "his", "him"),
    ("Zara", "she", "her", "her"),
    ("Ivan", "he", "his", "him"),
]
FRIENDS = ["a friend", "a neighbor", "his cousin", "a classmate", "the teacher", "a stranger"]
OBJECTS = [
    "apples",
    "stickers",
    "marbles",
    "coins",
    "books",
    "pencils",
    "cookies",
    "stamps",
    "cards",
    "shells",
    "beads",
    "eggs",
    "candles",
    "buttons",
    "oranges",
    "toys",
]
CONTAINERS = ["boxes", "bags", "jars", "packs", "crates", "baskets"]
PLACES = ["at the market", "at the fair", "at school", "in the park", "at the store", "online"]

START_TEMPLATES = [
    "{Name} has {a} {obj}.",
    "{Name} starts with {a} {obj}.",
    "{Name} owns {a} {obj}.",
    "There are {a} {obj} in {Name}'s room.",
]
ADD_TEMPLATES = [
    "{He} buys {b} more {obj} {place}.",
    "{He} finds {b} more {obj}.",
    "{Friend} gives {him} {b} {obj}.",
    "{He} wins {b} {obj}.",
]
SUB_TEMPLATES = [
    "{He} gives {b} {obj} to {friend}.",
    "{He} sells {b} {obj} {place}.",
    "{He} loses {b} {obj}.",
    "{He} uses {b} {obj}.",
]
MUL_TEMPLATES = [
    "Then {he} has {k} times as many {obj}.",
    "{His} {obj} grow to {k} times as many.",
]
DIV_TEMPLATES = [
    "{He} splits {his} {obj} into {k} equal groups and keeps one.",
    "{He} keeps one of {k} equal parts of {his} {obj}.",
]
ADDPROD_TEMPLATES = [
    "{He} buys {k} {cont} with {m} {obj} in each.",
    "{Friend} gives {him} {k} {cont} of {m} {obj}.",
]
QUESTION_TEMPLATES = [
    "How many {obj} does {Name} have now?",
    "How many {obj} does {Name} have in the end?",
]

# Solution wording: one fixed sentence per operation kind, so that the only freedom
# the model has is which numbers to use and the arithmetic itself.
STEP_TEMPLATES = {
    "+": "{Name} has {x} + {y} = {z} {obj}.",
    "-": "{Name} has {x} - {y} = {z} {obj}.",
    "*": "{Name} has {x} * {y} = {z} {obj}.",
    "/": "{Name} has {x} / {y} = {z} {obj}.",
    "prod": "The {cont} hold {x} * {y} = {z} {obj}.",
}
ANSWER_LINE = " The answer is \\boxed{{{answer}}}."
# the backward check: each step undone, last first
UNDO = {"+": "-", "-": "+", "*": "/", "/": "*"}
CHECK_STEP_TEMPLATE = "Check: before that, {Name} had {z} {undo} {y} = {x} {obj}."
CHECK_END_TEMPLATE = "{Name} started with {x} {obj}, as the question says."


@dataclass
class Difficulty:
    """Number ranges; the defaults are what the shipped models were trained on."""

    start: tuple[int, int] = (10, 60)
    add: tuple[int, int] = (2, 30)
    sub_max: int = 30
    mul: tuple[int, int] = (2, 4)
    mul_cap: int = 300  # no multiply step when the product would exceed this
    prod_k: tuple[int, int] = (2, 4)
    prod_m: tuple[int, int] = (2, 12)
    div: tuple[int, int] = (2, 4)
    min_steps: int = 2
    max_steps: int = 5


@dataclass
class Problem:
    question: str
    answer: int
    solution: str  # natural-language steps, "\n\n"-separated
    program: str  # Python program whose last line prints the answer
    steps: list[tuple[int, str, int, int]] = field(default_factory=list)  # (x, op, y, z)
    check: str = ""  # the backward check (``checked_solution``)

    @property
    def checked_solution(self) -> str:
        return self.solution + STEP_SEPARATOR + self.check

    @property
    def check_steps(self) -> int:
        """Steps of the check before its closing line."""
        return self.check.count(STEP_SEPARATOR)

    def answered_during_check(self, steps: int) -> str:
        """The solution and the first ``steps`` (1 to ``check_steps``) steps of its check,
        then the answer line."""
        if not 1 <= steps <= self.check_steps:
            raise ValueError(f"steps must be between 1 and {self.check_steps}, got {steps}")
        checked = [self.solution, *self.check.split(STEP_SEPARATOR)[:steps]]
        return STEP_SEPARATOR.join(checked) + ANSWER_LINE.format(answer=self.answer)

    def to_json(self) -> dict:
        return {"question": self.question, "answer": str(self.answer), "solution": self.solution}


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def generate_problem(rng: random.Random, difficulty: Difficulty | None = None) -> Problem:
    d = difficulty or Difficulty()
    name, he, his, him = rng.choice(NAMES)
    obj = rng.choice(OBJECTS)
    cont = rng.choice(CONTAINERS)
    friend = rng.choice(FRIENDS).replace("his ", his + " ")
    fill = {
        "Name": name,
        "he": he,
        "He": _cap(he),
        "his": his,
        "His": _cap(his),
        "him": him,
        "himself": "himself" if he == "he" else "herself",
        "obj": obj,
        "cont": cont,
        "friend": friend,
        "Friend": _cap(friend),
    }
    n_steps = rng.randint(d.min_steps, d.max_steps)

    x = rng.randint(*d.start)
    sentences = [rng.choice(START_TEMPLATES).format(a=x, **fill)]
    steps: list[tuple[int, str, int, int]] = []
    lines: list[str] = []  # solution steps
    checks: list[str] = []  # the backward check, first step first (reversed at the end)
    start = x
    prog = [f"{obj} = {x}"]
    while len(steps) < n_steps:
        room = n_steps - len(steps)
        kinds = ["+", "-", "+", "-", "*", "/"] + (["prod", "prod"] if room >= 2 else [])
        kind = rng.choice(kinds)
        place = rng.choice(PLACES)
        b_src = None
        if kind == "+":
            b = rng.randint(*d.add)
            sentences.append(rng.choice(ADD_TEMPLATES).format(b=b, place=place, **fill))
            z = x + b
        elif kind == "-":
            if x <= 4:
                continue
            b = rng.randint(2, min(d.sub_max, x - 2))
            sentences.append(rng.choice(SUB_TEMPLATES).format(b=b, place=place, **fill))
            z = x - b
        elif kind == "*":
            b = rng.randint(*d.mul)
            if x * b > d.mul_cap:
                continue
            sentences.append(rng.choice(MUL_TEMPLATES).format(k=b, **fill))
            z = x * b
        elif kind == "/":
            divisors = [k for k in range(d.div[0], d.div[1] + 1) if x % k == 0 and x // k >= 3]
            if not divisors:
                continue
            b = rng.choice(divisors)
            sentences.append(rng.choice(DIV_TEMPLATES).format(k=b, **fill))
            z = x // b
        else:  # prod: buys k containers with m each -> two steps
            k, m = rng.randint(*d.prod_k), rng.randint(*d.prod_m)
            sentences.append(rng.choice(ADDPROD_TEMPLATES).format(k=k, m=m, **fill))
            p = k * m
            steps.append((k, "*", m, p))
            lines.append(STEP_TEMPLATES["prod"].format(x=k, y=m, z=p, **fill))
            prog.append(f"{cont} = {k} * {m}")
            kind, b, z = "+", p, x + p
            b_src = cont
        steps.append((x, kind, b, z))
        lines.append(STEP_TEMPLATES[kind].format(x=x, y=b, z=z, **fill))
        checks.append(CHECK_STEP_TEMPLATE.format(z=z, undo=UNDO[kind], y=b, x=x, **fill))
        pyop = "//" if kind == "/" else kind
        prog.append(f"{obj} = {obj} {pyop} {b_src or b}")
        x = z
    sentences.append(rng.choice(QUESTION_TEMPLATES).format(**fill))
    lines[-1] = lines[-1] + ANSWER_LINE.format(answer=x)
    prog.append(f"print({obj})")
    checks.reverse()
    checks.append(CHECK_END_TEMPLATE.format(x=start, **fill) + ANSWER_LINE.format(answer=x))
    return Problem(
        question=" ".join(sentences),
        answer=x,
        solution=STEP_SEPARATOR.join(lines),
        program="\n".join(prog),
        steps=steps,
        check=STEP_SEPARATOR.join(checks),
    )


def make_split(name: str, n: int, difficulty: Difficulty | None = None) -> list[Problem]:
    """``n`` problems of split ``name`` ("train", "dev" or "test"), deterministic.

    dev/test are de-duplicated within themselves; train additionally drops any question
    that appears in the shipped dev/test splits (``SHIPPED_SIZES``).
    """
    if name not in SEED_BASE:
        raise ValueError(f"unknown split {name!r}")
    exclude: set[str] = set()
    if name == "train":
        for held_out in ("dev", "test"):
            exclude |= {
                p.question for p in make_split(held_out, SHIPPED_SIZES[held_out], difficulty)
            }
    out: list[Problem] = []
    seen: set[str] = set()
    i = 0
    while len(out) < n:
        p = generate_problem(random.Random(SEED_BASE[name] + i), difficulty)
        i += 1
        if p.question in seen or p.question in exclude:
            continue
        seen.add(p.question)
        out.append(p)
    return out


def split_overlap(a: Iterable[str | Problem | dict], b: Iterable[str | Problem | dict]) -> set[str]:
    """Question texts present in both collections (empty set = no leakage)."""

    def texts(xs):
        return {
            x if isinstance(x, str) else x.question if isinstance(x, Problem) else x["question"]
            for x in xs
        }

    return texts(a) & texts(b)


def format_prompt(question: str) -> str:
    return PROMPT_TEMPLATE.format(question=question)


def format_program_prompt(question: str) -> str:
    return PROGRAM_PROMPT_TEMPLATE.format(question=question)


def run_program(program: str) -> str:
    """Run a program-aided solution (trusted, generated text only) and return its stdout."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(program, {"__builtins__": {"print": print}}, {})
    return buf.getvalue().strip()


# ----------------------------------------------------------------------------- checking

_NUM = r"-?\d+"
_EQ_RE = re.compile(rf"({_NUM})\s*([+\-*/x×])\s*({_NUM})\s*=\s*({_NUM})")
_BOXED_RE = re.compile(r"\\boxed\{\s*(-?[\d,]+)\s*\}")
_INT_RE = re.compile(r"(?<![\d])\d+(?![\d])")


def split_steps(solution_text: str) -> list[str]:
    return PromptFormat().split_steps(solution_text)


def last_boxed_int(text: str) -> int | None:
    """Integer inside the last ``\\boxed{}`` (commas allowed), or None."""
    found = _BOXED_RE.findall(text)
    if not found:
        return None
    try:
        return int(found[-1].replace(",", ""))
    except ValueError:
        return None


def is_correct(solution_text: str, answer: int | str) -> bool:
    """Outcome label: the last boxed integer equals the gold answer."""
    got = last_boxed_int(solution_text)
    return got is not None and got == int(answer)


def _apply(a: int, op: str, b: int) -> int | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op in "*x×":
        return a * b
    if op == "/":
        return a // b if b != 0 and a % b == 0 else None
    return None


def check_steps(question: str, solution_text: str, gold: str | int | None = None) -> list[bool]:
    """Math-Shepherd-style automatic labels, one per ``"\\n\\n"``-separated step.

    A step is correct when every ``a op b = c`` in it is arithmetically right and its
    operands ``a``, ``b`` are numbers available so far (stated in the question or
    computed by an earlier step); a step with no equation is correct if it introduces
    no unavailable number in a ``\\boxed{}``. Once a step is wrong, every later step is
    wrong too.

    ``gold`` optionally tightens the labels: with a gold *solution* text, each result
    must also be one of the gold solution's intermediate results (catches the right
    arithmetic on the wrong operation); with a gold *answer* (int or digit string),
    a step holding ``\\boxed{}`` must box that answer.
    """
    available = {int(n) for n in _INT_RE.findall(question)}
    gold_values: set[int] | None = None
    gold_answer: int | None = None
    if gold is not None:
        g = str(gold).strip()
        if re.fullmatch(r"-?\d+", g):
            gold_answer = int(g)
        else:
            gold_values = {int(m[3]) for m in _EQ_RE.findall(g)}
            gold_answer = last_boxed_int(g)
    labels: list[bool] = []
    ok = True
    for step in split_steps(solution_text):
        if ok:
            eqs = _EQ_RE.findall(step)
            for a_s, op, b_s, c_s in eqs:
                a, b, c = int(a_s), int(b_s), int(c_s)
                if a not in available or b not in available or _apply(a, op, b) != c:
                    ok = False
                    break
                if gold_values is not None and c not in gold_values:
                    ok = False
                    break
                available.add(c)
            boxed = last_boxed_int(step)
            if (
                ok
                and "\\boxed" in step
                and (
                    boxed is None
                    or boxed not in available
                    or (gold_answer is not None and boxed != gold_answer)
                )
            ):
                ok = False
        labels.append(ok)
    return labels


def result_digit_labels(step: str) -> dict[int, bool]:
    """For each digit the step writes as a result: its character index in ``step`` and
    whether the number agrees, up to and including that digit, with what it should be.
    A result ``c`` of ``a op b = c`` should be the true value; a ``\\boxed{}`` number
    should be the last result the step wrote (the answer is copied, not recomputed)."""
    labels: dict[int, bool] = {}

    def compare(written: str, start: int, truth: str) -> None:
        for k, ch in enumerate(written):
            if ch.isdigit():
                last = k == len(written) - 1
                labels[start + k] = written[: k + 1] == truth[: k + 1] and (
                    not last or written == truth
                )

    last_written = None
    for eq in _EQ_RE.finditer(step):
        true = _apply(int(eq.group(1)), eq.group(2), int(eq.group(3)))
        compare(eq.group(4), eq.start(4), "" if true is None else str(true))
        last_written = eq.group(4)
    box = _BOXED_RE.search(step)
    if box is not None and last_written is not None:
        compare(box.group(1), box.start(1), last_written)
    return labels


def slip_result(solution_text: str, step_index: int, rng: random.Random) -> str | None:
    """The solution cut after step ``step_index``, whose computed result has one digit
    mis-written (and its ``\\boxed{}``, if that step boxes it, the same): the slip the
    generator itself makes most. Synthetic negatives for reward-model training; None when
    that step has no ``a op b = c``.
    """
    steps = split_steps(solution_text)
    if not 0 <= step_index < len(steps):
        return None
    step = steps[step_index]
    eq = _EQ_RE.search(step)
    if eq is None:
        return None
    right = eq.group(4)
    digits = list(right.lstrip("-"))
    pos = rng.randrange(len(digits))
    choices = [
        d
        for d in "0123456789"
        if d != digits[pos] and not (pos == 0 and d == "0" and len(digits) > 1)
    ]
    digits[pos] = rng.choice(choices)
    wrong = ("-" if right.startswith("-") else "") + "".join(digits)
    step = step[: eq.start(4)] + wrong + step[eq.end(4) :]
    step = step.replace(f"\\boxed{{{right}}}", f"\\boxed{{{wrong}}}")
    return STEP_SEPARATOR.join([*steps[:step_index], step])


# ----------------------------------------------------------------------------- files


def write_jsonl(path: str | Path, problems: list[Problem]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for p in problems:
            f.write(json.dumps(p.to_json()) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]


def main() -> None:
    """Write the shipped splits: ``python -m scaffolding_training.arithmetic``."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="data")
    args = ap.parse_args()
    for name, n in SHIPPED_SIZES.items():
        write_jsonl(Path(args.out) / f"{name}.jsonl", make_split(name, n))
        print(f"wrote {n} {name} problems to {args.out}/{name}.jsonl")


if __name__ == "__main__":
    main()
