"""Generation over an OpenAI-compatible HTTP server (trtllm-serve, vLLM, NIM, llama.cpp,
``transformers serve``): ``/v1/completions``, or ``/v1/chat/completions`` for chat
models, with ``seed``, ``stop`` and ``max_tokens`` always sent.

One pooled connection set per model instance (``generator_max_connections``); each call's
timeout is what is left of the scaffolding request's deadline; retries only where no
generation can have started (the connection was refused, or the server said 429/502/503/
504), with backoff, within the deadline. Servers differ on stop strings (OpenAI's API
leaves them out of the text, some keep them) and on token counts (``usage``); the shared
fallbacks decide the rest. ``n`` is not used: one request per sample keeps one seed per
sample, so a request replays exactly.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..kernel.runtime import TaskDone
from ..kernel.tasks import FinishReason, GenerationTask, Task
from .context import RequestContext
from .contracts.base import ContractError, EngineReply, TokenCounter, finish

RETRY_STATUSES = {429, 502, 503, 504}
MAX_ATTEMPTS = 4


@dataclass(frozen=True)
class OpenAIEndpoint:
    base_url: str  # e.g. http://localhost:8000/v1
    model: str  # the "model" field every request names
    api: str = "completions"  # or "chat"
    max_connections: int = 64
    api_key_env: str = "OPENAI_API_KEY"  # sent as a bearer token when the variable is set

    @property
    def url(self) -> str:
        path = "chat/completions" if self.api == "chat" else "completions"
        return f"{self.base_url.rstrip('/')}/{path}"


def request_body(endpoint: OpenAIEndpoint, task: GenerationTask) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": endpoint.model,
        "max_tokens": task.max_tokens,  # always: some servers default past the model's context
        "temperature": max(task.temperature, 0.0),  # 0 is greedy in the OpenAI API
        "top_p": task.top_p if task.temperature > 0 else 1.0,
    }
    if task.seed is not None:
        body["seed"] = task.seed % 2**63  # OpenAI's seed is a signed 64-bit integer
    if task.stop_words:
        body["stop"] = task.stop_words
    if endpoint.api == "chat":
        body["messages"] = [{"role": "user", "content": task.prompt}]
    else:
        body["prompt"] = task.prompt
    return body


def engine_reply(
    endpoint: OpenAIEndpoint, task: GenerationTask, payload: dict[str, Any]
) -> EngineReply:
    try:
        choice = payload["choices"][0]
        text = choice["message"]["content"] if endpoint.api == "chat" else choice["text"]
    except (KeyError, IndexError, TypeError):
        raise ContractError(
            f"the server's reply has no choices[0] text: {str(payload)[:200]}"
        ) from None
    usage = payload.get("usage") or {}
    reason = choice.get("finish_reason")
    stop_reason = choice.get("stop_reason")  # vLLM names the stop string that ended it
    finish_reason = None
    if reason == "length":
        finish_reason = FinishReason.LENGTH
    elif reason == "stop" and isinstance(stop_reason, str) and stop_reason in task.stop_words:
        finish_reason = FinishReason.STOP_WORD
    return EngineReply(
        text=text or "",
        finish_reason=finish_reason,  # "stop" alone: the end of the text or a hidden stop string
        stop_word=stop_reason if finish_reason is FinishReason.STOP_WORD else None,
        num_prompt_tokens=usage.get("prompt_tokens"),
        num_output_tokens=usage.get("completion_tokens"),
    )


class OpenAISessions:
    """One pooled HTTP session per event loop (a model instance's loop)."""

    def __init__(self, endpoint: OpenAIEndpoint):
        self.endpoint = endpoint
        self._sessions: dict[int, aiohttp.ClientSession] = {}

    def get(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(id(loop))
        if session is None or session.closed:
            headers = {}
            key = os.environ.get(self.endpoint.api_key_env, "")
            if key:
                headers["Authorization"] = f"Bearer {key}"
            connector = aiohttp.TCPConnector(limit=self.endpoint.max_connections)
            session = self._sessions[id(loop)] = aiohttp.ClientSession(
                connector=connector, headers=headers
            )
        return session


class OpenAIGenerationWorker:
    def __init__(
        self,
        endpoint: OpenAIEndpoint,
        sessions: OpenAISessions,
        context: RequestContext,
        counter: TokenCounter | None,
    ):
        self.endpoint = endpoint
        self.sessions = sessions
        self.context = context
        self.counter = counter

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        session = self.sessions.get()
        for attempt in range(1, MAX_ATTEMPTS + 1):
            remaining = self.context.remaining_s()
            timeout = aiohttp.ClientTimeout(total=remaining if remaining is not None else None)
            try:
                async with session.post(self.endpoint.url, json=body, timeout=timeout) as response:
                    if response.status in RETRY_STATUSES and attempt < MAX_ATTEMPTS:
                        await self._back_off(attempt)
                        continue
                    if response.status != 200:
                        detail = (await response.text())[:300]
                        raise ContractError(
                            f"{self.endpoint.url} answered {response.status}: {detail}"
                        )
                    payload: dict[str, Any] = await response.json(content_type=None)
                    return payload
            except aiohttp.ClientConnectorError as error:  # nothing was sent: safe to try again
                if attempt == MAX_ATTEMPTS:
                    raise ContractError(f"cannot reach {self.endpoint.url}: {error}") from None
                await self._back_off(attempt)
            except asyncio.TimeoutError:
                raise ContractError(
                    f"{self.endpoint.url} did not answer within the deadline"
                ) from None
        raise ContractError(f"{self.endpoint.url} kept refusing after {MAX_ATTEMPTS} attempts")

    async def _back_off(self, attempt: int) -> None:
        delay = 0.1 * 2 ** (attempt - 1)
        remaining = self.context.remaining_s()
        if remaining is not None and remaining <= delay:
            raise ContractError(f"{self.endpoint.url} is busy and the deadline is near")
        await asyncio.sleep(delay)

    async def _run_one(self, task: GenerationTask, on_done: TaskDone) -> None:
        async with self.context.slot():
            payload = await self._post(request_body(self.endpoint, task))
        finish(task, engine_reply(self.endpoint, task, payload), self.counter)
        on_done(task)

    async def run(self, tasks: list[Task], on_done: TaskDone) -> int:
        generations = [task for task in tasks if isinstance(task, GenerationTask)]
        await asyncio.gather(*(self._run_one(task, on_done) for task in generations))
        return len(generations)
