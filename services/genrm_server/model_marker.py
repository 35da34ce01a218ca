"""A model directory's marker: a small JSON file a model writer leaves beside the weights, with a warning the
server logs at start (``genrm tiny-model`` marks its random-weight models this way)."""

from __future__ import annotations

import json
from pathlib import Path

MARKER = "GENRM_TINY_MODEL.json"


def write_marker(model_dir: str | Path, warning: str, **fields: object) -> None:
    """Mark ``model_dir`` with ``warning`` (and any other JSON ``fields``, e.g. how it was made)."""
    (Path(model_dir) / MARKER).write_text(json.dumps({"warning": warning, **fields}, indent=2) + "\n")


def has_marker(model_dir: str | Path | None) -> bool:
    return model_dir is not None and (Path(model_dir) / MARKER).is_file()


def marker_warning(model_dir: str | Path | None) -> str | None:
    """The warning ``model_dir``'s marker carries; None without one (or for a model that is not a directory)."""
    if not has_marker(model_dir):
        return None
    try:
        marker = json.loads((Path(str(model_dir)) / MARKER).read_text())
    except (OSError, ValueError):
        return f"{model_dir}/{MARKER} is not a readable JSON marker"
    warning = marker.get("warning") if isinstance(marker, dict) else None
    return str(warning) if warning else None
