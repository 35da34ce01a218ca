"""The rule-based math reward: verl's ``math_dapo`` answer check, reproduced quirk for quirk.

Published DAPO/FAPO curves were scored with this exact string-normalising check, so trainers on this
platform must get identical rewards. Specification: ``shared/specs/math-rule.md``; every rule below
cites its section there. Standard library only: the trainer client imports it (httpx + pydantic
footprint), and it runs on hundreds of thousands of samples, so all regexes are compiled once here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "INVALID",
    "MODES",
    "REMOVED_EXPRESSIONS",
    "SUBSTITUTIONS",
    "TAIL_CHARS",
    "MathResult",
    "compute_math",
    "extract_answer",
    "last_boxed",
    "normalize",
]

MODES: tuple[str, ...] = ("boxed", "answer", "answer_or_boxed")
INVALID = "[INVALID]"
TAIL_CHARS = 300

_BOXED = "\\boxed{"
_ANSWER_RE = re.compile(r"Answer\s*:\s*([^\n]+)", re.IGNORECASE)
_BRACE_RE = re.compile(r"[{}]")

# Normalisation step 2: plain substring replacements, in the spec's order.
SUBSTITUTIONS: tuple[tuple[str, str], ...] = (
    ("an ", ""),
    ("a ", ""),
    (".$", "$"),
    ("\\$", ""),
    ("\\ ", ""),
    (" ", ""),
    ("mbox", "text"),
    (",\\text{and}", ","),
    ("\\text{and}", ","),
    ("\\text{m}", "\\text{}"),
)

# Normalisation step 3: strings removed everywhere, in the spec's order ("\n" is a real newline).
REMOVED_EXPRESSIONS: tuple[str, ...] = (
    "square",
    "ways",
    "integers",
    "dollars",
    "mph",
    "inches",
    "hours",
    "km",
    "units",
    "\\ldots",
    "sue",
    "points",
    "feet",
    "minutes",
    "digits",
    "cents",
    "degrees",
    "cm",
    "gm",
    "pounds",
    "meters",
    "meals",
    "edges",
    "students",
    "childrentickets",
    "multiples",
    "\\text{s}",
    "\\text{.}",
    "\\text{\ns}",
    "\\text{}^2",
    "\\text{}^3",
    "\\text{\n}",
    "\\text{}",
    "\\mathrm{th}",
    "^\\circ",
    "^{\\circ}",
    "\\;",
    ",\\!",
    "{,}",
    '"',
    "\\dots",
)

# Normalisation step 4, in the spec's order: (guard, pattern, replacement). The guard is a substring every
# match must contain, so skipping the re.sub when it is absent changes nothing and saves the (quadratic)
# regex scan on the common answer that has no such construct.
_REWRITES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("$", re.compile(r"(.*?)(\$)(.*?)(\$)(.*)"), "$\\3$"),
    ("\\text{", re.compile(r"(\\text\{)(.*?)(\})"), "\\2"),
    ("\\textbf{", re.compile(r"(\\textbf\{)(.*?)(\})"), "\\2"),
    ("\\overline{", re.compile(r"(\\overline\{)(.*?)(\})"), "\\2"),
    ("\\boxed{", re.compile(r"(\\boxed\{)(.*)(\})"), "\\2"),
    ("frac", re.compile(r"(frac)([^{])(.)"), "frac{\\2}{\\3}"),
    ("sqrt", re.compile(r"(sqrt)([^{])"), "sqrt{\\2}"),
)


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{`` in ``text``, up to the brace that balances it (spec: Extraction, boxed).

    Returns None when there is no ``\\boxed{`` or its braces never balance; an earlier box is never used instead.
    """
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    depth = 0
    for match in _BRACE_RE.finditer(text, start):
        if match.group() == "{":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return text[start + len(_BOXED) : match.start()]
    return None


def _last_answer_line(text: str) -> str | None:
    """Group of the last ``Answer\\s*:\\s*([^\\n]+)`` match, case-insensitive (spec: Extraction, answer)."""
    matches = _ANSWER_RE.findall(text)
    return matches[-1] if matches else None


def extract_answer(solution: str, mode: str = "boxed") -> str:
    """Raw answer from the last ``TAIL_CHARS`` characters of ``solution`` per ``mode``; ``INVALID`` if none.

    ``answer_or_boxed`` uses the last ``Answer:`` line in the tail and falls back to the last box (spec: Extraction).
    """
    if mode not in MODES:
        raise ValueError(f"unknown math rule mode {mode!r}; allowed modes: {', '.join(MODES)}")
    tail = solution[-TAIL_CHARS:]
    found: str | None
    if mode == "boxed":
        found = last_boxed(tail)
    elif mode == "answer":
        found = _last_answer_line(tail)
    else:
        found = _last_answer_line(tail)
        if found is None:
            found = last_boxed(tail)
    return INVALID if found is None else found


def normalize(answer: str) -> str:
    """verl's ``normalize_final_answer``: spec steps 1-7 in order, applied to predictions and ground truths alike."""
    # 1. Keep only the text after the last "=".
    final = answer.split("=")[-1]
    # 2. Substring replacements, then 3. removals, each over every occurrence, in the spec's order.
    for before, after in SUBSTITUTIONS:
        final = final.replace(before, after)
    for expr in REMOVED_EXPRESSIONS:
        final = final.replace(expr, "")
    # 4. Regular-expression rewrites (re.sub semantics, no flags).
    for guard, pattern, replacement in _REWRITES:
        if guard in final:
            final = pattern.sub(replacement, final)
    # 5. Drop every dollar sign.
    final = final.replace("$", "")
    # 6. Digit-only once commas are gone -> drop the commas (str.isdigit, as verl: "" does not qualify).
    no_commas = final.replace(",", "")
    if no_commas.isdigit():
        final = no_commas
    # 7. Strip surrounding whitespace.
    return final.strip()


@dataclass(frozen=True)
class MathResult:
    """One sample's rule reward: ``score`` is +1.0/-1.0, ``acc`` the exact match, ``pred`` the normalised answer."""

    score: float
    acc: bool
    pred: str

    def to_dict(self) -> dict[str, float | bool | str]:
        """The ``{"score", "acc", "pred"}`` dict verl's ``compute_score`` returns."""
        return {"score": self.score, "acc": self.acc, "pred": self.pred}


def compute_math(solution: str, ground_truth: str, mode: str = "boxed") -> MathResult:
    """Score ``solution`` against ``ground_truth`` (spec: Inputs and output).

    ``[INVALID]`` is normalised and compared like any other answer, exactly as verl does.
    """
    pred = normalize(extract_answer(solution, mode))
    acc = pred == normalize(ground_truth)
    return MathResult(score=1.0 if acc else -1.0, acc=acc, pred=pred)
