"""Check a local model directory before loading it, so a wrong ``--model`` is one line, not a loader traceback.

Nothing is downloaded from a model hub: ``--model`` must be a directory as ``save_pretrained`` writes it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.gguf")


def model_dir_problem(model: str) -> str | None:
    """What is wrong with ``model`` as a local model directory, or None when it looks loadable."""
    path = Path(model).expanduser()
    if not path.exists():
        return f"{model}: no such directory (a local model directory is needed; nothing is downloaded from a hub)"
    if not path.is_dir():
        return f"{model}: not a directory"
    if not (path / "config.json").is_file():
        contents = "empty" if not any(path.iterdir()) else "no config.json"
        return f"{model}: not a model directory ({contents}; expected config.json, the weights and the " \
               "tokenizer files, as save_pretrained writes them)"
    if not any(next(path.glob(p), None) for p in _WEIGHT_PATTERNS):
        return f"{model}: no weights (*.safetensors or *.bin) in the model directory"
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        return f"{model}: no tokenizer files ({', '.join(_TOKENIZER_FILES[:2])}) in the model directory"
    if _sentencepiece_only(path) and importlib.util.find_spec("sentencepiece") is None:
        return f"{model}: its only tokenizer is tokenizer.model (SentencePiece), which needs the sentencepiece " \
               "package: pip install sentencepiece, or save the tokenizer with tokenizer.json"
    return None


def _sentencepiece_only(path: Path) -> bool:
    """A tokenizer saved without tokenizer.json: transformers must build it from the SentencePiece model."""
    return (path / "tokenizer.model").is_file() and not (path / "tokenizer.json").is_file()
