"""Incremental detokenization with stop strings, shared by the in-process engines.

Decoding the whole output at every step costs O(n²) for long judge critiques; this decodes a small
window instead (the prefix/read-offset scheme of TGI and vLLM) and holds back text that may still
turn into a stop string or is an incomplete UTF-8 sequence.
"""

from __future__ import annotations

from typing import Any


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any, stops: list[str] | None = None):
        self._tok = tokenizer
        self._stops = stops or []
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self._ids: list[int] = []
        self._prefix = 0  # window start: decoding from here reproduces already-known text
        self._read = 0  # tokens before this are already in ``text``
        self.text = ""  # everything decoded so far
        self._sent = 0  # characters of ``text`` already returned

    def add(self, token: int) -> tuple[str, str | None]:
        """Append a token; return (new text safe to send, the stop string hit or None)."""
        self._ids.append(token)
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        new_text = self._decode(self._ids[self._prefix :])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self.text += new_text[len(prefix_text) :]
            self._prefix, self._read = self._read, len(self._ids)
        if self._stops:
            start = max(0, self._sent - self._hold)
            hits = [(i, s) for s in self._stops if (i := self.text.find(s, start)) != -1]
            if hits:
                i, stop = min(hits)
                out = self.text[self._sent : i]
                self.text, self._sent = self.text[:i], i
                return out, stop
        safe = max(self._sent, len(self.text) - self._hold)
        out = self.text[self._sent : safe]
        self._sent = safe
        return out, None

    def flush(self) -> str:
        """The text held back so far (call once the sequence ends without a stop string)."""
        out = self.text[self._sent :]
        self._sent = len(self.text)
        return out

    def _decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True) if ids else ""
