"""Which code runs (specs/code-rule.md §1): the last fenced block in the sample's language, after any thinking."""

from __future__ import annotations

from typing import Any

from services.sandbox.input_error import CodeInputError
from services.sandbox.session import Language

# The info strings that name each language (the first word of the fence's info string, any case).
LANGUAGE_TAGS: dict[Language, frozenset[str]] = {
    "python": frozenset({"python", "py", "python3"}),
    "cpp": frozenset({"cpp", "c++", "cc"}),
}
_BY_TAG: dict[str, Language] = {tag: lang for lang, tags in LANGUAGE_TAGS.items() for tag in tags}
_FENCE = "```"


def resolve_language(requested: Any, ground_truth_language: Any = None) -> Language:
    """``extra_info.language``, else the ground truth's ``language``, else python (§1.4); any alias above."""
    for value, param in ((requested, "extra_info.language"), (ground_truth_language, "ground_truth.language")):
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise CodeInputError(f"{param} must be a string, got {type(value).__name__}", param)
        language = _BY_TAG.get(value.strip().lower())
        if language is None:
            raise CodeInputError(
                f"{param} '{value}' is not a language the code rule runs: python (py, python3) or cpp (c++, cc)", param)
        return language
    return "python"


def extract_code(text: str, language: Language) -> str | None:
    """The code to run, or None (``no_code``): prose is never run.

    Only what follows the last ``</think>`` is read. A fence is a line starting with three backticks; the last
    block whose info string names ``language`` wins, else the last block with an empty info string; a last
    block with no closing fence runs to the end of the text. A block holding only whitespace is no code.
    """
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    named: list[str] | None = None
    bare: list[str] | None = None
    lines: list[str] | None = None  # the open block's lines
    info = ""
    for raw in text.split("\n"):
        line = raw[:-1] if raw.endswith("\r") else raw
        if lines is None:
            if line.startswith(_FENCE):
                info, lines = line.lstrip("`").strip(), []
            continue
        if line.startswith(_FENCE):
            named, bare = _keep(info, lines, language, named, bare)
            lines = None
        else:
            lines.append(line)
    if lines is not None:  # unclosed: runs to the end
        named, bare = _keep(info, lines, language, named, bare)
    chosen = named if named is not None else bare
    if chosen is None or not "".join(chosen).strip():
        return None
    return "\n".join(chosen) + "\n"


def _keep(info: str, lines: list[str], language: Language, named: list[str] | None,
          bare: list[str] | None) -> tuple[list[str] | None, list[str] | None]:
    """Record a finished block as the latest named or bare one; blocks in other languages are ignored."""
    if not info:
        return named, lines
    if info.split()[0].lower() in LANGUAGE_TAGS[language]:
        return lines, bare
    return named, bare
