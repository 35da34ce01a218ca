"""Engine that forwards to an upstream OpenAI-compatible server (a ``vllm serve`` sidecar, sglang,
a hosted judge API) over a pooled async HTTP client.

Chat requests go to the upstream's ``/chat/completions`` (it applies its own chat template), raw
prompts to ``/completions``; both are streamed so deltas flow through and usage is reported.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx

from services.genrm_server.engines.base import (
    Delta,
    Engine,
    EngineError,
    EngineInputError,
    EngineUnavailable,
    GenerationInput,
    SamplingParams,
)
from services.genrm_server.settings import ServerSettings

log = logging.getLogger("genrm.engine.openai")


class OpenAIEngine(Engine):
    def __init__(self, settings: ServerSettings):
        super().__init__()
        self.settings = settings
        self.base_url = str(settings.upstream_url).rstrip("/")
        self.model_root = self.base_url
        self.model_name = settings.served_model_name or settings.upstream_model or "upstream"
        self._upstream_model = settings.upstream_model
        self._client: httpx.AsyncClient | None = None
        self._ready = False
        self._in_flight = 0
        self._classify_url: str | None = None  # the upstream's classification URL, once one answered

    async def start(self) -> None:
        s = self.settings
        headers = {"Authorization": f"Bearer {s.upstream_api_key}"} if s.upstream_api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(s.upstream_timeout_s, connect=min(10.0, s.upstream_timeout_s)),
            limits=httpx.Limits(max_connections=s.upstream_max_connections,
                                max_keepalive_connections=s.upstream_max_connections),
        )
        # Learn the upstream's model (and context length) once; the server stays up if it is down,
        # reports not-ready, and retries on the next readiness probe.
        await self.refresh()

    async def refresh(self) -> bool:
        """Probe the upstream's ``/models``; mark ready when it answers."""
        assert self._client is not None
        try:
            resp = await self._client.get("/models", timeout=5.0)
            resp.raise_for_status()
            models = resp.json().get("data") or []
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("upstream %s not reachable: %s", self.base_url, exc)
            self._ready = False
            return False
        if models:
            first = models[0]
            self._upstream_model = self._upstream_model or first.get("id")
            self.max_model_len = first.get("max_model_len") or self.max_model_len
            if not self.settings.served_model_name and not self.settings.upstream_model:
                self.model_name = self._upstream_model or self.model_name
        self._ready = True
        return True

    async def check_ready(self) -> bool:
        return self._ready or await self.refresh()

    async def stop(self) -> None:
        self._ready = False
        if self._client is not None:
            await self._client.aclose()

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def num_running(self) -> int:
        return self._in_flight

    async def generate(self, inp: GenerationInput, params: SamplingParams) -> AsyncIterator[Delta]:
        assert self._client is not None, "engine not started"
        body: dict[str, Any] = {
            "model": self._upstream_model or self.model_name,
            "stream": True,
            "stream_options": {"include_usage": True},
            "n": 1,
        }
        for key in ("max_tokens", "temperature", "top_p", "top_k", "seed"):
            if (value := getattr(params, key)) is not None:
                body[key] = value
        if params.stop:
            body["stop"] = params.stop
        if params.ignore_eos:
            body["ignore_eos"] = True
        if params.min_tokens:
            body["min_tokens"] = params.min_tokens
        if inp.messages is not None:
            path, body["messages"] = "/chat/completions", inp.messages
        else:
            path, body["prompt"] = "/completions", inp.prompt or ""
        self._in_flight += 1
        try:
            async for delta in self._stream(path, body):
                yield delta
        finally:
            self._in_flight -= 1

    async def classify(self, texts: list[str]) -> list[float]:
        """Scalar rewards from the upstream's classification API (vLLM ``/classify``, SGLang ``/v1/classify``).

        ``use_activation: false`` asks vLLM for the raw logit (by default it applies a sigmoid to a
        one-label model); ``data[i]["probs"][0]`` is the scalar of ``texts[i]``.
        """
        assert self._client is not None, "engine not started"
        if not texts:
            return []
        body = {"model": self._upstream_model or self.model_name, "input": texts, "use_activation": False}
        urls = [self._classify_url] if self._classify_url else _classify_urls(self.base_url)
        self._in_flight += 1
        try:
            for url in urls:
                resp = await self._client.post(url, json=body)
                if resp.status_code != 404 or url == urls[-1]:
                    break
        except httpx.TimeoutException as exc:
            raise EngineUnavailable(f"upstream {urls[0]} timed out: {exc!r}") from exc
        except httpx.TransportError as exc:
            self._ready = False
            raise EngineUnavailable(f"upstream {urls[0]} unreachable: {exc!r}") from exc
        finally:
            self._in_flight -= 1
        if resp.status_code == 404:
            raise EngineInputError(
                f"model '{self.model_name}' is not served as a sequence-classification reward model: "
                f"{_upstream_error(url, resp).message} (tried {' and '.join(urls)})",
                param="recipe",
            )
        if resp.status_code >= 400:
            raise _upstream_error(url, resp)
        self._classify_url = url
        try:
            data = sorted(resp.json()["data"], key=lambda d: d["index"])
            scores = [float(d["probs"][0]) for d in data]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise EngineError(f"upstream {url} sent a malformed classification response: {exc!r}") from exc
        if len(scores) != len(texts):
            raise EngineError(f"upstream {url} returned {len(scores)} classifications for {len(texts)} inputs")
        return scores

    async def _stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[Delta]:
        assert self._client is not None
        url = self.base_url + path
        try:
            async with self._client.stream("POST", path, json=body) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise _upstream_error(url, resp)
                finish: Delta | None = None
                usage: dict[str, Any] = {}
                if resp.headers.get("content-type", "").startswith("application/json"):
                    # Some upstreams (proxies, hosted judges) ignore "stream": true and answer plain JSON.
                    text, finish, usage = _whole_answer(json.loads(await resp.aread()), url)
                    if text:
                        yield Delta(text)
                else:
                    async for line in resp.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            break
                        chunk = json.loads(data)
                        usage = chunk.get("usage") or usage
                        for choice in chunk.get("choices") or []:
                            text = choice.get("text") or (choice.get("delta") or {}).get("content") or ""
                            if choice.get("finish_reason"):
                                finish = Delta(text, choice["finish_reason"], choice.get("stop_reason"))
                            elif text:
                                yield Delta(text)
        except httpx.TimeoutException as exc:
            raise EngineUnavailable(f"upstream {url} timed out: {exc!r}") from exc
        except httpx.TransportError as exc:
            self._ready = False  # readiness probes turn it back on once the upstream answers
            raise EngineUnavailable(f"upstream {url} unreachable: {exc!r}") from exc
        except json.JSONDecodeError as exc:
            raise EngineError(f"upstream {url} sent malformed JSON: {exc}") from exc
        if finish is None:
            raise EngineError(f"upstream {url} ended the stream without a finish_reason")
        finish.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        finish.completion_tokens = int(usage.get("completion_tokens") or 0)
        yield finish


def _whole_answer(payload: Any, url: str) -> tuple[str, Delta | None, dict[str, Any]]:
    """A non-streamed completion's text, its finish and its usage."""
    try:
        choice = payload["choices"][0]
        text = choice.get("text") or (choice.get("message") or {}).get("content") or ""
        finish = Delta("", choice.get("finish_reason") or "stop", choice.get("stop_reason"))
        return text, finish, payload.get("usage") or {}
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise EngineError(f"upstream {url} sent a response with no choices: {exc!r}") from exc


def _classify_urls(base_url: str) -> list[str]:
    """``{base}/classify`` first; vLLM serves it at the root, beside (not under) ``/v1``."""
    urls = [base_url + "/classify"]
    if base_url.endswith("/v1"):
        urls.append(base_url[: -len("/v1")] + "/classify")
    return urls


def _upstream_error(url: str, resp: httpx.Response) -> EngineError:
    try:
        detail = resp.json()
        message = (detail.get("error") or {}).get("message") or detail.get("message") or resp.text
        param = (detail.get("error") or {}).get("param")
    except ValueError:
        message, param = resp.text[:500], None
    text = f"upstream {url} answered {resp.status_code}: {message}"
    if param is None and ("maximum context length" in message or "max_tokens" in message):
        param = "max_tokens"  # vLLM leaves param null here; the judge retries without a token budget
    if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
        err: EngineError = EngineInputError(text, param=param)
        err.status = resp.status_code
        return err
    return EngineUnavailable(text)
