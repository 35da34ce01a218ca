"""specs/code-rule.md §1: which code runs, and the language precedence."""

from __future__ import annotations

import pytest

from services.sandbox.extract import extract_code, resolve_language
from services.sandbox.input_error import CodeInputError


def test_only_the_text_after_the_last_think_is_read() -> None:
    text = "<think>```python\nprint('draft')\n```</think>\nfirst</think>\n```python\nprint('final')\n```"
    assert extract_code(text, "python") == "print('final')\n"
    assert extract_code("<think>```python\nprint(1)\n```</think> no code after it", "python") is None


def test_the_last_block_naming_the_language_wins_over_earlier_ones_and_over_bare_blocks() -> None:
    text = "```python\nold()\n```\ntext\n```py\nnew()\n```\n```\nbare()\n```\n```text\nnot code\n```"
    assert extract_code(text, "python") == "new()\n"


def test_a_bare_block_is_used_when_no_block_names_the_language() -> None:
    text = "```\nfirst()\n```\n```bash\nls\n```\n```\nlast_bare()\n```"
    assert extract_code(text, "python") == "last_bare()\n"


@pytest.mark.parametrize("tag", ["python", "py", "python3", "Python", "PY", "python title=solution.py"])
def test_python_tags(tag: str) -> None:
    assert extract_code(f"```{tag}\nx = 1\n```", "python") == "x = 1\n"


@pytest.mark.parametrize("tag", ["cpp", "c++", "cc", "C++"])
def test_cpp_tags(tag: str) -> None:
    text = f"```python\nprint(1)\n```\n```{tag}\nint main() {{}}\n```"
    assert extract_code(text, "cpp") == "int main() {}\n"
    assert extract_code(text, "python") == "print(1)\n"


def test_a_block_in_another_language_is_never_run() -> None:
    assert extract_code("```cpp\nint main() {}\n```", "python") is None
    assert extract_code("```javascript\nconsole.log(1)\n```", "python") is None


def test_no_fence_is_no_code_and_prose_is_never_run() -> None:
    assert extract_code("print(input())", "python") is None
    assert extract_code("The answer: use `print(1)` and ``print(2)``.", "python") is None


def test_an_unclosed_last_block_runs_to_the_end() -> None:
    assert extract_code("```python\nclosed()\n```\nnow:\n```python\na = 1\nprint(a)", "python") == "a = 1\nprint(a)\n"


def test_a_fence_must_start_its_line_and_crlf_is_read_as_lf() -> None:
    assert extract_code("text ```python\nx\n```", "python") is None
    assert extract_code("```python\r\nx = 1\r\ny = 2\r\n```\r\n", "python") == "x = 1\ny = 2\n"


def test_an_empty_block_is_no_code() -> None:
    assert extract_code("```python\n\n   \n```", "python") is None


def test_language_precedence() -> None:
    assert resolve_language("cpp", "python") == "cpp"
    assert resolve_language(None, "c++") == "cpp"
    assert resolve_language("", "python3") == "python"
    assert resolve_language(None, None) == "python"


@pytest.mark.parametrize(("requested", "gt", "param"), [("java", None, "extra_info.language"),
                                                        (None, "rust", "ground_truth.language"),
                                                        (3, None, "extra_info.language")])
def test_an_unknown_language_is_a_request_error_naming_where_it_came_from(requested: object, gt: object,
                                                                          param: str) -> None:
    with pytest.raises(CodeInputError) as err:
        resolve_language(requested, gt)
    assert err.value.param == param
