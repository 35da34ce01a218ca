"""A worker's load report: how many requests it holds, said on every answer so that any router replica learns it.

The wire form is ORCA's ``endpoint-load-metrics`` response header (what Envoy and vLLM speak), TEXT form:
``TEXT named_metrics.genrm_requests_in_flight=12, named_metrics.genrm_requests_in_flight_avg=10.4, ...``; the
JSON form (``JSON {"named_metrics": {...}}``) is read too. The averages (requests held, seconds a request takes)
are the worker's own, over about ``AVERAGE_S``: every replica reads the same slowly moving figures whenever it
hears the worker, so replicas that place keys on it agree, also on which worker is a straggler. Workers without
the header (``vllm serve``) are read from their ``vllm:num_requests_running`` / ``vllm:num_requests_waiting``
gauges instead (:func:`load_from_prometheus`).
"""

from __future__ import annotations

import json
import math

HEADER = "endpoint-load-metrics"
IN_FLIGHT = "genrm_requests_in_flight"  # requests the server is serving (probes aside): the router's own unit
IN_FLIGHT_AVG = "genrm_requests_in_flight_avg"  # the same, averaged over time by the server itself
LATENCY_AVG = "genrm_request_seconds_avg"  # how long its requests take (to their answer's start), averaged alike
RUNNING, WAITING = "num_requests_running", "num_requests_waiting"  # vLLM's names: sequences in the engine
AVERAGE_S = 2.0  # time constant of the averages
# A server idle this long reports its latency as 0 (unknown): the average of requests long gone says nothing of
# now, and a fresh router replica would otherwise shun an idle server for an old slow answer.
LATENCY_STALE_S = 5 * AVERAGE_S
_PREFIX = "named_metrics."
_GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting")
_NOW_TEXT = f"{_PREFIX}{IN_FLIGHT}=".encode()
_AVG_TEXT = f"{_PREFIX}{IN_FLIGHT_AVG}=".encode()
_LATENCY_TEXT = f"{_PREFIX}{LATENCY_AVG}=".encode()


class TimeAverage:
    """An exponentially weighted average over time (not over samples) with time constant ``tau_s``."""

    __slots__ = ("at", "tau_s", "value")

    def __init__(self, tau_s: float = AVERAGE_S):
        self.tau_s, self.value, self.at = tau_s, 0.0, None

    def add(self, sample: float, now: float) -> float:
        """Move toward ``sample``, weighted by the time since the last one (the first sample is taken whole)."""
        if self.at is None:
            self.value = sample
        else:
            self.value += (1.0 - math.exp((self.at - now) / self.tau_s)) * (sample - self.value)
        self.at = now
        return self.value


def current_latency(latency: TimeAverage, busy: int, now: float) -> float:
    """The average seconds a request takes, or 0 (unknown) when idle for LATENCY_STALE_S since the last answer."""
    recent = latency.at is not None and now - latency.at < LATENCY_STALE_S
    return latency.value if busy or recent else 0.0


def format_report(named_metrics: dict[str, float]) -> bytes:
    """The header value of a report in the TEXT form."""
    return ("TEXT " + ", ".join(f"{_PREFIX}{name}={value:g}" for name, value in named_metrics.items())).encode()


def parse_report(value: bytes | str) -> dict[str, float]:
    """The named metrics of a header value, TEXT (with or without its ``TEXT`` tag) or JSON; {} when unreadable."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    tag, _, rest = text.partition(" ")
    if tag.upper() == "JSON":
        try:
            named = json.loads(rest).get("named_metrics", {})
        except (ValueError, AttributeError):
            return {}
        return {k: float(v) for k, v in named.items() if _number(v)} if isinstance(named, dict) else {}
    if tag.upper() == "TEXT":
        text = rest
    metrics = {}
    for part in text.split(","):
        name, eq, number = part.strip().partition("=")
        if eq and name.startswith(_PREFIX):
            try:
                metrics[name[len(_PREFIX):]] = float(number)
            except ValueError:
                continue
    return metrics


def reported_load(named_metrics: dict[str, float]) -> float | None:
    """Requests the worker holds now: its request count if it gives one, else running + waiting; None if neither."""
    if IN_FLIGHT in named_metrics:
        load = named_metrics[IN_FLIGHT]
    elif RUNNING in named_metrics:
        load = named_metrics[RUNNING] + named_metrics.get(WAITING, 0.0)
    else:  # vLLM's own header has only the queue: not the whole load
        return None
    return _count(load)


def header_load(value: bytes) -> tuple[float | None, float | None, float | None]:
    """(load now, the worker's averaged load, its averaged seconds per request) of a header value; None for what
    it does not say. Without a full parse when it is the GenRM form: a router reads this as it forwards answers."""
    now_at = value.find(_NOW_TEXT)
    if now_at < 0:
        named = parse_report(value)
        return reported_load(named), _count(named.get(IN_FLIGHT_AVG)), _count(named.get(LATENCY_AVG))
    avg_at, latency_at = value.find(_AVG_TEXT), value.find(_LATENCY_TEXT)
    return (_number_at(value, now_at + len(_NOW_TEXT)),
            _number_at(value, avg_at + len(_AVG_TEXT)) if avg_at >= 0 else None,
            _number_at(value, latency_at + len(_LATENCY_TEXT)) if latency_at >= 0 else None)


def load_from_prometheus(text: str) -> float | None:
    """``vllm:num_requests_running`` + ``vllm:num_requests_waiting`` summed over their series; None if absent."""
    total, found = 0.0, False
    for line in text.splitlines():
        if not line.startswith(_GAUGES):
            continue
        name_end = min((i for i in (line.find("{"), line.find(" ")) if i >= 0), default=-1)
        if line[:name_end] not in _GAUGES:  # a longer name sharing the prefix
            continue
        fields = (line[line.rfind("}") + 1:] if "{" in line else line[name_end:]).split()
        try:
            value = float(fields[0])
        except (IndexError, ValueError):
            continue
        if math.isfinite(value):
            total, found = total + value, True
    return total if found else None


def _number_at(value: bytes, start: int) -> float | None:
    end = value.find(b",", start)
    try:
        return _count(float(value[start:end] if end >= 0 else value[start:]))
    except ValueError:
        return None


def _count(load: float | None) -> float | None:
    return load if load is not None and math.isfinite(load) and load >= 0 else None


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
