"""The one error of the code rule that is the caller's fault: bad test cases, language or options (400)."""

from __future__ import annotations


class CodeInputError(ValueError):
    """A sample the code rule cannot score as given: 400 (or an item error) naming ``param``, never a score."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.message, self.param = message, param
