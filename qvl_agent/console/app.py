"""The Gradio Blocks app: chat with pictures, watch tool calls and boxes, pick plugins and settings.

``create_console()`` builds the app; ``launch_console()`` serves it on its own; ``mount_console()`` puts it
beside the OpenAI-compatible API (``qvl-agent serve --ui``). The logic lives in ``engine.py``; this module only
lays out widgets and wires events.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from qvl_agent.backends import ModelBackend
from qvl_agent.console.catalogue import Catalogue, load_catalogue
from qvl_agent.console.engine import DEFAULT_SYSTEM, ModelCache, Settings, Turn, chat_history, run_turn

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"

CSS = """
#qvl-header h1 { margin-bottom: 0; }
#qvl-header p { margin-top: 4px; opacity: 0.8; }
#qvl-chat { flex-grow: 1; }
#qvl-side .gr-accordion { margin-bottom: 6px; }
#qvl-actions button { min-width: 0; }
"""

PLACEHOLDER = (
    "### Show me a picture\n"
    "Drop, paste or attach one or more images, then ask about them.<br>"
    "I can describe, **ground** objects with boxes and **call tools** — every step shows up here."
)


def theme() -> gr.themes.Base:
    """The console's look (passed to ``launch``/``mount_gradio_app``, as Gradio 6 wants)."""
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="sky", radius_size="md")


def examples() -> list[dict[str, Any]]:
    """Bundled example prompts: see, ground, call a tool (phrased like the demo model's training data)."""
    shapes, circles, tiny = (str(EXAMPLES_DIR / name) for name in ("shapes.png", "circles.png", "tiny.png"))
    return [
        {"text": "Describe the image.", "files": [shapes]},
        {"text": "Where is the red circle? Give its bounding box.", "files": [shapes]},
        {
            "text": "Each circle is worth 3 points and each square is worth 5 points. "
            "How many points are there in total?",
            "files": [circles],
        },
        {"text": "What shape is the tiny object at the top right?", "files": [tiny]},
        {
            "text": "Multiply the number of objects in Picture 1 by the number of objects in Picture 2.",
            "files": [shapes, circles],
        },
    ]


def create_console(
    model: ModelBackend | str | None = None,
    *,
    tools: list[str] | None = None,
    system: str = DEFAULT_SYSTEM,
    max_steps: int = 5,
    title: str = "qvl-agent console",
    catalogue: Catalogue | None = None,
    model_options: dict[str, Any] | None = None,
) -> gr.Blocks:
    """Build the console.

    :param model: a backend to use as is, or a model spec resolved through the plugins (default ``"demo"``).
    :param tools: the tools checked at start (default: every installed tool).
    :param system: the initial system prompt.
    :param max_steps: the initial agent step limit (tool calls per turn).
    :param catalogue: plugins/tools/models to offer (default: read from the plugin manager).
    :param model_options: ``device`` / ``dtype`` for the local models the picker loads (remote ones take none).
    """
    catalogue = catalogue or load_catalogue()
    preset = model if isinstance(model, ModelBackend) else None
    default_model = preset.name if preset else (model or "demo")
    models = ModelCache(preset, model_options)
    model_choices = list(dict.fromkeys([default_model, *catalogue.models]))
    checked_tools = list(catalogue.tools) if tools is None else [t for t in tools if t in catalogue.tools]
    workdir = Path(tempfile.mkdtemp(prefix="qvl-console-"))

    with gr.Blocks(title=title, fill_height=True) as demo:
        turns = gr.State([])

        with gr.Row(elem_id="qvl-header"):
            gr.Markdown(
                f"# {title}\nA multimodal agent playground for Qwen-VL: chat with pictures, watch tool calls, "
                "see grounded boxes drawn."
            )

        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(
                    elem_id="qvl-chat",
                    label="Chat",
                    show_label=False,
                    height=640,
                    placeholder=PLACEHOLDER,
                    buttons=["copy", "copy_all"],
                    feedback_options=None,
                    group_consecutive_messages=False,
                )
                textbox = gr.MultimodalTextbox(
                    elem_id="qvl-input",
                    file_count="multiple",
                    file_types=["image"],
                    sources=["upload"],
                    placeholder="Ask about your pictures… (drop, paste or attach images)",
                    show_label=False,
                    stop_btn=True,
                    autofocus=True,
                )
                with gr.Row(elem_id="qvl-actions"):
                    regenerate_btn = gr.Button("↻ Regenerate", size="sm")
                    undo_btn = gr.Button("↶ Undo", size="sm")
                    clear_btn = gr.Button("✕ Clear", size="sm")
                gr.Examples(
                    examples=[[e] for e in examples()],
                    inputs=[textbox],
                    label="Try an example",
                    examples_per_page=6,
                )

            with gr.Column(scale=1, min_width=300, elem_id="qvl-side"):
                with gr.Accordion("Grounding", open=True):
                    grounding = gr.Image(
                        label="Annotated picture",
                        show_label=False,
                        type="filepath",
                        interactive=False,
                        elem_id="qvl-grounding",
                        buttons=["download", "fullscreen"],
                        height=240,
                    )
                    download = gr.DownloadButton(
                        "⬇ Download annotated image", visible=False, size="sm", elem_id="qvl-download"
                    )
                with gr.Accordion("Model", open=True):
                    model_box = gr.Dropdown(
                        model_choices,
                        value=default_model,
                        label="Model",
                        info="A registered name, a checkpoint folder or openai+http://host:port/v1",
                        allow_custom_value=True,
                    )
                    system_box = gr.Textbox(system, label="System prompt", lines=2)
                with gr.Accordion("Plugins & tools", open=True):
                    plugin_box = gr.CheckboxGroup(
                        [(p.label, p.name) for p in catalogue.tool_plugins],
                        value=[p.name for p in catalogue.tool_plugins],
                        label="Plugins with tools",
                        info="Unchecking a plugin hides its tools",
                        elem_id="qvl-plugins",
                    )
                    tool_box = gr.CheckboxGroup(
                        [(name, name) for name in catalogue.tools],
                        value=checked_tools,
                        label="Tools the agent may call",
                        elem_id="qvl-tools",
                    )
                    gr.Markdown(_plugins_note(catalogue), elem_id="qvl-plugin-note")
                with gr.Accordion("Generation", open=False):
                    temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label="Temperature")
                    top_p = gr.Slider(0.05, 1.0, value=0.8, step=0.05, label="Top-p")
                    max_tokens = gr.Slider(16, 2048, value=512, step=16, label="Max new tokens")
                    max_steps_box = gr.Slider(1, 10, value=max_steps, step=1, label="Max agent steps")

        settings_inputs = [model_box, tool_box, system_box, temperature, top_p, max_tokens, max_steps_box]
        outputs = [chatbot, turns, textbox, grounding, download]

        def settings_of(
            model: str | None,
            tools: list[str] | None,
            system: str | None,
            temperature: float,
            top_p: float,
            max_tokens: float,
            max_steps: float,
        ) -> Settings:
            return Settings(
                model=str(model or default_model),
                tools=list(tools or []),
                system=system or DEFAULT_SYSTEM,
                temperature=float(temperature),
                top_p=float(top_p),
                max_tokens=int(max_tokens),
                max_steps=int(max_steps),
            )

        def stream(history: list[Turn], settings: Settings) -> Iterator[tuple[Any, ...]]:
            busy = gr.MultimodalTextbox(value=None, interactive=False)
            yield chat_history(history), history, busy, None, gr.DownloadButton(visible=False)
            annotated = None
            for update in run_turn(history, settings, models, workdir):
                if update.annotated != annotated:
                    annotated = update.annotated
                    yield chat_history(history), history, gr.skip(), annotated, _download(annotated)
                else:
                    yield chat_history(history), history, gr.skip(), gr.skip(), gr.skip()
            # the last update repeats everything, so API clients (which keep only it) get the whole turn
            ready = gr.MultimodalTextbox(interactive=True)
            yield chat_history(history), history, ready, annotated, _download(annotated)

        def chat(
            message: dict[str, Any] | None,
            history: list[Turn],
            model: str,
            tools: list[str],
            system: str,
            temperature: float,
            top_p: float,
            max_tokens: float,
            max_steps: float,
        ) -> Iterator[tuple[Any, ...]]:
            """Send a message (text + pictures) and stream the agent's steps and answer."""
            message = message or {}
            text = (message.get("text") or "").strip()
            files = [_file_path(f) for f in message.get("files") or []]
            if not text and not files:
                yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
                return
            settings = settings_of(model, tools, system, temperature, top_p, max_tokens, max_steps)
            yield from stream([*history, Turn(text=text, files=files)], settings)

        def regenerate(
            history: list[Turn],
            model: str,
            tools: list[str],
            system: str,
            temperature: float,
            top_p: float,
            max_tokens: float,
            max_steps: float,
        ) -> Iterator[tuple[Any, ...]]:
            """Run the last message again (with the current settings)."""
            if not history:
                yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
                return
            last = history[-1]
            settings = settings_of(model, tools, system, temperature, top_p, max_tokens, max_steps)
            yield from stream([*history[:-1], Turn(text=last.text, files=list(last.files))], settings)

        def undo(history: list[Turn]) -> tuple[Any, ...]:
            """Drop the last turn and put its message back in the input box."""
            if not history:
                return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            last, rest = history[-1], history[:-1]
            previous = next((t.annotated[-1] for t in reversed(rest) if t.annotated), None)
            return (
                chat_history(rest),
                rest,
                gr.MultimodalTextbox(value={"text": last.text, "files": last.files}, interactive=True),
                previous,
                _download(previous),
            )

        def clear() -> tuple[Any, ...]:
            """Start a new conversation."""
            return (
                [],
                [],
                gr.MultimodalTextbox(value=None, interactive=True),
                None,
                gr.DownloadButton(visible=False),
            )

        chat_event = textbox.submit(
            chat, [textbox, turns, *settings_inputs], outputs, api_name="chat", concurrency_limit=4
        )
        regenerate_event = regenerate_btn.click(
            regenerate, [turns, *settings_inputs], outputs, api_name="regenerate", concurrency_limit=4
        )
        textbox.stop(
            lambda: gr.MultimodalTextbox(interactive=True),
            None,
            textbox,
            cancels=[chat_event, regenerate_event],
            api_visibility="private",
        )
        undo_btn.click(undo, [turns], outputs, api_name="undo")
        clear_btn.click(clear, None, outputs, api_name="clear")
        plugin_box.change(
            lambda chosen, current: gr.CheckboxGroup(
                choices=catalogue.tools_of(chosen),
                value=[t for t in current if t in catalogue.tools_of(chosen)],
            ),
            [plugin_box, tool_box],
            tool_box,
            api_visibility="private",
        )

    return demo


def _plugins_note(catalogue: Catalogue) -> str:
    """A line naming the other loaded plugins, and any that failed to load (with the reason)."""
    others = [p.short_name for p in catalogue.plugins if not p.tools and not p.failed]
    lines = [f"<small>Also loaded: {', '.join(others)}</small>"] if others else []
    lines += [f"⚠ `{p.short_name}` failed to load: {p.error}" for p in catalogue.plugins if p.failed]
    return "\n\n".join(lines)


def _download(path: str | None) -> gr.DownloadButton:
    return gr.DownloadButton(value=path, visible=path is not None)


def _file_path(item: Any) -> str:
    """A MultimodalTextbox file entry (a path, or a FileData dict from an API client) as a local path."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        return str(item.get("path") or item.get("name"))
    return str(getattr(item, "path", item))


def launch_console(
    model: ModelBackend | str | None = None,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    *,
    launch_kwargs: dict[str, Any] | None = None,
    **opts: Any,
) -> gr.Blocks:
    """Build and serve the console on its own (what ``qvl-agent console`` runs); returns the running app.

    ``opts`` go to :func:`create_console`; ``launch_kwargs`` to ``Blocks.launch`` (e.g.
    ``prevent_thread_lock=True`` to keep serving in the background, as the tests do).
    """
    demo = create_console(model, **opts)
    demo.queue(default_concurrency_limit=4)
    demo.launch(
        server_name=host,
        server_port=port,
        theme=theme(),
        css=CSS,
        allowed_paths=[str(EXAMPLES_DIR)],
        footer_links=["api"],
        **(launch_kwargs or {}),
    )
    return demo


def mount_console(fastapi_app: Any, path: str = "/ui", **opts: Any) -> Any:
    """Mount the console on an existing FastAPI app (``qvl-agent serve --ui``); returns the app.

    ``opts`` go to :func:`create_console` (``model``, ``tools``, ``system``, ``max_steps``, ``title``).
    """
    demo = create_console(**opts)
    demo.queue(default_concurrency_limit=4)
    return gr.mount_gradio_app(
        fastapi_app,
        demo,
        path=path,
        theme=theme(),
        css=CSS,
        allowed_paths=[str(EXAMPLES_DIR)],
        footer_links=["api"],
    )
