"""services/genrm_server/engines/detokenizer.py: incremental detokenization gives the same text as a full decode;
stop strings spanning tokens are cut exactly."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from services.genrm_server.engines.detokenizer import IncrementalDetokenizer

TEXT = "Step 1: 17 * 20 = 340. Step 2: 中文 works too, \\boxed{391}. Done."


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model, local_files_only=True)


def _run(tokenizer, stops):
    detok = IncrementalDetokenizer(tokenizer, stops)
    out, hit = [], None
    for token in tokenizer.encode(TEXT, add_special_tokens=False):
        piece, hit = detok.add(token)
        out.append(piece)
        if hit:
            break
    if not hit:
        out.append(detok.flush())
    return "".join(out), hit


def test_streamed_text_equals_full_decode(tokenizer):
    text, hit = _run(tokenizer, [])
    assert hit is None and text == TEXT


@pytest.mark.parametrize("stop", ["340", "Step 2", "中文", "}.", "Done."])
def test_stop_string_cuts_before_it(tokenizer, stop):
    text, hit = _run(tokenizer, ["never-there", stop])
    assert hit == stop and text == TEXT[: TEXT.index(stop)]


def test_pieces_never_contain_text_past_a_stop(tokenizer):
    detok = IncrementalDetokenizer(tokenizer, ["= 340"])
    sent = ""
    for token in tokenizer.encode(TEXT, add_special_tokens=False):
        piece, hit = detok.add(token)
        sent += piece
        assert "= 34" not in sent or hit
        if hit:
            break
    assert sent == "Step 1: 17 * 20 "
