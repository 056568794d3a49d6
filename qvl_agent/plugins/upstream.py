"""Built-in plugin: model specs ``openai+http://…`` / ``openai+https://…`` → a remote upstream backend.

``qvl-agent serve --model "openai+http://gpu-box:8000/v1?model=Qwen/Qwen-VL-Chat"`` serves the remote
engine through qvl_agent's protocol, plugins and grounding; see :mod:`qvl_agent.upstream` for the options.
"""

from __future__ import annotations

from collections.abc import Callable

from qvl_agent.hookspecs import hookimpl


def build_upstream(spec: str):  # -> UpstreamBackend (imported lazily: keeps plugin loading cheap)
    """Factory for :func:`register_models`."""
    from qvl_agent.upstream import UpstreamBackend

    return UpstreamBackend.from_spec(spec)


def matches_upstream(spec: str) -> bool:
    from qvl_agent.upstream import is_upstream_spec

    return is_upstream_spec(spec)


@hookimpl
def register_models(register: Callable[..., None]) -> None:
    register("openai-upstream", build_upstream, matches=matches_upstream)
