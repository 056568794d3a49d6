"""The Gradio agent console (``qvl-agent console``; ``qvl-agent serve --ui`` mounts it at ``/ui``).

Gradio is imported only when one of these names is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qvl_agent.console.app import create_console, launch_console, mount_console

__all__ = ["create_console", "launch_console", "mount_console"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from qvl_agent.console import app

        return getattr(app, name)
    raise AttributeError(f"module 'qvl_agent.console' has no attribute {name!r}")
