"""Reading a Prometheus text exposition (a router's or a server's ``/metrics``) in tests."""

from __future__ import annotations

import re

import httpx

from services.local_stack import Child

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of metric ``name`` in a Prometheus text exposition: (labels, value)."""
    out = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m.group(1) == name:
            out.append((dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return out


def scrape(child: Child, headers: dict[str, str] | None = None) -> str:
    resp = httpx.get(child.url + "/metrics", headers=headers, timeout=5)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return resp.text


def metric(source: Child | str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when there is none), in a scraped text
    or, given a process, in its ``/metrics`` now."""
    text = source if isinstance(source, str) else scrape(source)
    return sum(v for lab, v in samples(text, name) if all(lab.get(k) == want for k, want in labels.items()))
