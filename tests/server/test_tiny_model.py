"""services/tiny_model.py: ``genrm tiny-model DIR`` writes a model transformers loads, with a chat template, and
will not overwrite one without ``--force``."""

from __future__ import annotations

from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.support.genrm_cli import genrm


def test_tiny_model_command_writes_a_loadable_model(tmp_path):
    out = tmp_path / "m"
    result = genrm("tiny-model", str(out))
    assert result.returncode == 0, result.stderr
    assert "meaningless" in result.stdout
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    assert model.config.vocab_size == len(tok)
    rendered = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("<|im_start|>assistant\n")
    again = genrm("tiny-model", str(out))
    assert again.returncode == 2 and "--force" in again.stderr
