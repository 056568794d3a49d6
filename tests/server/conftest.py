"""Fixtures for the server tests: a real uvicorn server on a free loopback port, in a thread.

Backends come from a per-test plugin registered through ``register_models`` on a fresh plugin manager
(no external plugins), exactly as a third-party model plugin would provide them.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
import uvicorn

from qvl_agent import plugins
from qvl_agent.backends import ModelBackend
from qvl_agent.hookspecs import hookimpl
from qvl_agent.testing import ScriptedBackend


class RunningServer:
    """A uvicorn server serving ``app`` on 127.0.0.1 in a background thread."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RunningServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture(scope="session")
def running_server_class() -> type[RunningServer]:
    """:class:`RunningServer` itself, for fixtures of wider scope than ``serve``."""
    return RunningServer


@pytest.fixture
def register_backend(plugin_manager: plugins.PluginManager) -> Callable[[str, ModelBackend], None]:
    """Register a backend under a model name through a per-test ``register_models`` plugin."""

    def register(name: str, backend: ModelBackend) -> None:
        class ModelPlugin:
            @hookimpl
            def register_models(self, register):  # noqa: ANN001, ANN202
                register(name, lambda spec: backend)

        plugin_manager.register(ModelPlugin(), name=f"test-model-{name}")

    return register


@pytest.fixture
def serve() -> Iterator[Callable[[Any], RunningServer]]:
    """Start a real server for an app; all are stopped at teardown."""
    running: list[RunningServer] = []

    def start(app: Any) -> RunningServer:
        server = RunningServer(app).start()
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


@pytest.fixture
def scripted_server(
    register_backend: Callable[[str, ModelBackend], None], serve: Callable[[Any], RunningServer]
) -> Callable[..., tuple[RunningServer, ScriptedBackend]]:
    """``scripted_server(replies, **create_app_kwargs)`` → (server, backend) serving a ScriptedBackend as
    model ``"scripted"``."""
    from qvl_agent.server import create_app

    def make(replies: Any, chunk_size: int = 4, **kwargs: Any) -> tuple[RunningServer, ScriptedBackend]:
        backend = ScriptedBackend(replies, name="scripted", chunk_size=chunk_size)
        register_backend("scripted", backend)
        return serve(create_app("scripted", **kwargs)), backend

    return make


@pytest.fixture
def make_client() -> Callable[..., openai.OpenAI]:
    """The official openai client pointed at a test server (no retries, short timeout)."""

    def make(server: RunningServer, api_key: str = "unused", **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=server.url + "/v1", api_key=api_key, max_retries=0, timeout=30, **kwargs
        )

    return make
