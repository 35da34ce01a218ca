"""JSON in and out of the hot paths: orjson when installed (the ``client-fast`` extra; the router's install has
it too), else pydantic-core, which the base install always has.

orjson encodes a batch of long solutions ~15x faster than pydantic-core and reads a batch answer's small dicts
1.5x faster. But it reads an integer past 64 bits as an approximate float, so values are read with
pydantic-core's ``from_json`` (exact); orjson only checks that a document is JSON, where that does not matter.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import from_json, to_json

try:
    import orjson
except ImportError:  # pragma: no cover - exercised where orjson is absent
    orjson = None


def is_json(body: bytes) -> bool:
    """Is ``body`` one complete JSON document? orjson when installed; what it refuses (NaN literals, nesting
    past 1,024) is asked of pydantic-core before the answer is no."""
    if orjson is not None:
        try:
            orjson.loads(body)
            return True
        except orjson.JSONDecodeError:
            pass
    try:
        from_json(body)
    except (ValueError, RecursionError):  # malformed, not UTF-8, nested too deeply
        return False
    return True


def dumps(value: Any) -> bytes:
    """JSON bytes; numpy scalars and arrays included (verl's batches carry them). TypeError naming the value
    when neither encoder can write it."""
    if orjson is not None:
        try:
            return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
        except TypeError:
            pass
    return to_json(value, fallback=_plain)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays (and anything else with ``tolist``) as plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot encode a {type(value).__name__} as JSON")
