"""The OpenAI-compatible HTTP server (``qvl-agent serve``): FastAPI routes, schemas, SSE streaming.

``create_app(model)`` builds the app; see :mod:`qvl_agent.server.app` and ``docs/server.md``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from qvl_agent.server.app import create_app

        return create_app
    raise AttributeError(f"module 'qvl_agent.server' has no attribute {name!r}")
