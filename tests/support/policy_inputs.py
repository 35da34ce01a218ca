"""What a selection policy is given, built without a router: real ``Worker`` objects and ``RequestInfo``s."""

from __future__ import annotations

import json

from router.request_info import RequestInfo
from router.workers import Worker


def make_workers(n: int, start: int = 0) -> list[Worker]:
    return [Worker(f"http://worker-{i}:8000") for i in range(start, start + n)]


def chat(content: str, headers: list[tuple[bytes, bytes]] | None = None) -> RequestInfo:
    body = {"model": "judge", "messages": [{"role": "user", "content": content}]}
    return RequestInfo("/v1/chat/completions", json.dumps(body).encode(), headers)


def keyed(key: str) -> RequestInfo:
    return RequestInfo("/v1/chat/completions", b'{"messages": []}', [(b"x-affinity-key", key.encode())])


def reward(group_id: int, question: str) -> RequestInfo:
    body = {"group_id": group_id, "question": question, "response": "42", "label": "42"}
    return RequestInfo("/v1/reward", json.dumps(body).encode())


def distinct_prompt(i: int, chars: int = 2000) -> str:
    head = f"Problem {i}: grade this answer. "
    return head + "".join(chr(97 + (i * 7 + j) % 26) for j in range(chars - len(head)))
