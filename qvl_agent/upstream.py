"""A model backend that forwards generation to a remote OpenAI-compatible server.

For users who outgrow one machine: run the model on an inference engine (vLLM up to 0.23 serves
Qwen-VL-Chat; another ``qvl-agent serve`` works too) and keep qvl_agent's plugins, ReAct protocol and
grounding in front of it. The spec is ``openai+http://host:port/v1`` (or ``openai+https://``), with options
as query parameters::

    openai+http://gpu-box:8000/v1?model=Qwen/Qwen-VL-Chat&mode=completions&max_tokens=1024

Modes:

``chat`` (default)
    The rendered conversation is sent to ``/chat/completions`` as system/user/assistant messages; pictures
    (``Picture N: <img>…</img>`` in the prompt) become ``image_url`` parts with PNG ``data:`` URLs. A request in
    completion mode (``query=None``) asks the engine to continue the last assistant message
    (``continue_final_message``, a vLLM extension; qvl-agent servers do it on their own).
``completions``
    The exact ChatML prompt text is sent to ``/completions`` (text only), so the upstream model sees
    byte-for-byte what the local core would. Use it for vLLM serving Qwen-VL-Chat when no images are involved.
``passthrough``
    Like ``chat``, and the server forwards whole requests (``tools``/``functions`` included) to the engine
    unchanged instead of running its own protocol: for engines with their own tool calling.

The API key comes from the ``api_key_env`` option (an environment variable name), else
``QVL_AGENT_UPSTREAM_API_KEY``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from collections.abc import Iterator
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx
from PIL import Image

from qvl_agent.backends import ModelBackend, completion_prompt
from qvl_agent.messages import GenerationRequest, GenerationResult
from qvl_agent.model.errors import InputError

SPEC_PREFIXES = ("openai+http://", "openai+https://")
API_KEY_ENV = "QVL_AGENT_UPSTREAM_API_KEY"

Mode = Literal["chat", "completions", "passthrough"]
_MODES = ("chat", "completions", "passthrough")

_IM_START, _IM_END = "<|im_start|>", "<|im_end|>"
# "Picture N: <img>ref</img>\n" as the ReAct/ChatML prompts write pictures
_PICTURE = re.compile(r"(?:Picture \d+: ?)?<img>.*?</img>\n?", re.DOTALL)


class UpstreamError(RuntimeError):
    """The upstream server failed or answered something unusable; the message says what it said."""


def is_upstream_spec(spec: str) -> bool:
    return isinstance(spec, str) and spec.startswith(SPEC_PREFIXES)


class UpstreamBackend(ModelBackend):
    """Generation on a remote OpenAI-compatible server.

    :param base_url: the API root, e.g. ``http://host:8000/v1``.
    :param model: the upstream model id (default: the first one ``GET /models`` lists).
    :param mode: ``"chat"``, ``"completions"`` or ``"passthrough"`` (see the module docstring).
    :param max_tokens: sent when a request sets no limit (engines default to very little on ``/completions``).
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        mode: Mode = "chat",
        api_key: str | None = None,
        timeout: float = 600.0,
        max_tokens: int = 512,
        name: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if mode not in _MODES:
            raise InputError(f"upstream mode must be one of {list(_MODES)}, got {mode!r}")
        self.base_url = base_url.rstrip("/")
        self.mode: Mode = mode
        self.max_tokens = max_tokens
        self._model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            transport=transport,
        )
        self.name = name or model or f"upstream@{urlsplit(self.base_url).netloc}"
        self.last_result: GenerationResult | None = None

    @classmethod
    def from_spec(cls, spec: str, **overrides: Any) -> UpstreamBackend:
        """Build from ``openai+http(s)://host:port/v1?model=…&mode=…&max_tokens=…&timeout=…&api_key_env=…``."""
        if not is_upstream_spec(spec):
            raise InputError(
                f"an upstream spec starts with 'openai+http://' or 'openai+https://', got {spec!r}"
            )
        parts = urlsplit(spec[len("openai+") :])
        options = dict(parse_qsl(parts.query))
        known = {"model", "mode", "max_tokens", "timeout", "api_key_env", "name"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(f"unknown upstream option(s) {unknown} in {spec!r}; known: {sorted(known)}")
        key_env = options.get("api_key_env", API_KEY_ENV)
        try:
            kwargs: dict[str, Any] = {
                "base_url": urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),
                "model": options.get("model"),
                "mode": options.get("mode", "chat"),
                "api_key": os.environ.get(key_env) or None,
                "max_tokens": int(options.get("max_tokens", 512)),
                "timeout": float(options.get("timeout", 600)),
                "name": options.get("name"),
            }
        except ValueError as exc:
            raise InputError(f"bad upstream option in {spec!r}: {exc}") from None
        kwargs.update(overrides)
        return cls(**kwargs)

    # -- model id ----------------------------------------------------------------------------------------

    @property
    def model(self) -> str:
        """The upstream model id (asked from ``GET /models`` on first use when not configured)."""
        if self._model is None:
            body = self._request("GET", "/models")
            data = body.get("data") or []
            if not data:
                raise UpstreamError(f"{self.base_url}/models lists no model; set ?model= in the spec")
            self._model = str(data[0]["id"])
        return self._model

    # -- payloads ----------------------------------------------------------------------------------------

    def _sampling(self, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model}
        if request.max_new_tokens is not None:
            body["max_tokens"] = request.max_new_tokens
        elif self.mode == "completions":
            body["max_tokens"] = self.max_tokens
        for key in ("temperature", "top_p", "seed"):
            value = getattr(request, key)
            if value is not None:
                body[key] = value
        if request.top_k is not None:
            body["top_k"] = request.top_k  # vLLM extension; ignored by others
        return body

    def payload(self, request: GenerationRequest, stream: bool = False) -> tuple[str, dict[str, Any]]:
        """``(path, JSON body)`` of the upstream call for ``request``."""
        body = self._sampling(request)
        if self.mode == "completions":
            if request.images:
                raise InputError(
                    "the upstream backend in 'completions' mode sends text only and cannot pass pictures; "
                    "use mode=chat"
                )
            path = "/completions"
            body["prompt"] = chatml_prompt(request)
            body["stop"] = _unique([*request.stop, _IM_END, _IM_START])
        else:
            path = "/chat/completions"
            body["messages"] = chat_messages(request)
            if request.stop:
                body["stop"] = list(request.stop)
            if request.query is None:
                body["continue_final_message"] = True
                body["add_generation_prompt"] = False
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return path, body

    # -- calls -------------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self._client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"upstream {self.base_url}{path} unreachable: {exc}") from exc
        if response.status_code >= 400:
            raise _error_from(response, path)
        return response.json()

    def generate(self, request: GenerationRequest) -> GenerationResult:
        path, body = self.payload(request)
        data = self._request("POST", path, body)
        choice = (data.get("choices") or [{}])[0]
        if self.mode == "completions":
            text = choice.get("text") or ""
        else:
            text = (choice.get("message") or {}).get("content") or ""
        result = self._result(text, choice.get("finish_reason"), data.get("usage"))
        self.last_result = result
        return result

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        path, body = self.payload(request, stream=True)
        text, finish, usage = "", None, None
        try:
            with self._client.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error_from(response, path)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[len("data:") :].strip()
                    if data == "[DONE]":
                        break
                    event = json.loads(data)
                    if event.get("error"):
                        raise UpstreamError(f"upstream stream failed: {_message_of(event['error'])}")
                    usage = event.get("usage") or usage
                    for choice in event.get("choices") or []:
                        delta = (
                            choice.get("text")
                            if self.mode == "completions"
                            else choice.get("delta", {}).get("content")
                        )
                        finish = choice.get("finish_reason") or finish
                        if delta:
                            text += delta
                            yield delta
        except httpx.HTTPError as exc:
            raise UpstreamError(f"upstream {self.base_url}{path} failed: {exc}") from exc
        result = self._result(text, finish, usage)
        self.last_result = result
        return result

    def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        """Passthrough: forward an OpenAI chat completion request body and return the upstream's answer."""
        return self._request("POST", "/chat/completions", {**body, "model": self.model, "stream": False})

    def chat_completion_stream(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Passthrough, streamed: the upstream's chunks as dicts."""
        body = {**body, "model": self.model, "stream": True}
        with self._client.stream("POST", "/chat/completions", json=body) as response:
            if response.status_code >= 400:
                response.read()
                raise _error_from(response, "/chat/completions")
            for line in response.iter_lines():
                if line.startswith("data:"):
                    data = line[len("data:") :].strip()
                    if data == "[DONE]":
                        return
                    yield json.loads(data)

    def count_tokens(self, text: str) -> int:
        # No tokenizer here: the upstream's usage counts are used whenever it reports them.
        return max(1, len(text) // 4) if text else 0

    def _result(self, text: str, finish: str | None, usage: dict[str, Any] | None) -> GenerationResult:
        usage = usage or {}
        return GenerationResult(
            text=text,
            finish_reason="length" if finish == "length" else "stop",
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )

    def close(self) -> None:
        self._client.close()


# -- rendering ----------------------------------------------------------------------------------------------


def chatml_prompt(request: GenerationRequest) -> str:
    """The ChatML text a local Qwen-VL core would be given for ``request`` (no window truncation)."""
    from qvl_agent.prompting.chatml import build_chatml_text

    if request.query is not None:
        return build_chatml_text(request.system, list(request.history), request.query)
    return completion_prompt(request)


def chat_messages(request: GenerationRequest) -> list[dict[str, Any]]:
    """The request as OpenAI chat messages; pictures become ``image_url`` parts (PNG ``data:`` URLs)."""
    pictures = iter(request.images)

    def content(text: str) -> str | list[dict[str, Any]]:
        if "<img>" not in text:
            return text
        parts: list[dict[str, Any]] = []
        pos = 0
        for match in _PICTURE.finditer(text):
            if match.start() > pos:
                parts.append({"type": "text", "text": text[pos : match.start()]})
            image = next(pictures, None)
            if image is None:
                raise InputError("the prompt names more pictures (<img>…</img>) than the request carries")
            parts.append({"type": "image_url", "image_url": {"url": data_url(image)}})
            pos = match.end()
        if pos < len(text):
            parts.append({"type": "text", "text": text[pos:]})
        return parts

    messages: list[dict[str, Any]] = [{"role": "system", "content": request.system}]
    for user, assistant in request.history:
        messages.append({"role": "user", "content": content(user)})
        messages.append({"role": "assistant", "content": assistant})
    if request.query is not None:
        messages.append({"role": "user", "content": content(request.query)})
    elif not request.history:
        raise InputError("completion mode (query=None) needs a history ending with the turn to continue")
    return messages


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _unique(words: list[str]) -> list[str]:
    out: list[str] = []
    for word in words:
        if word and word not in out:
            out.append(word)
    return out


def _message_of(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


def _error_from(response: httpx.Response, path: str) -> Exception:
    try:
        detail = _message_of(response.json().get("error", response.text))
    except (ValueError, AttributeError):
        detail = response.text[:500]
    message = f"upstream {path} answered {response.status_code}: {detail}"
    # the upstream rejecting the input is the caller's problem (400 from our server too)
    if 400 <= response.status_code < 500 and response.status_code not in (401, 403, 404, 429):
        return InputError(message)
    return UpstreamError(message)
