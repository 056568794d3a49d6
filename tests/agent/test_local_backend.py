"""LocalQwenBackend on the tiny reference checkpoint (random weights, real architecture and tokenizer)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PIL import Image

from qvl_agent.backends import LocalQwenBackend
from qvl_agent.messages import GenerationRequest
from qvl_agent.model.errors import ContextLengthError, InputError

pytestmark = pytest.mark.testdata


@pytest.fixture(scope="module")
def backend(tiny_checkpoint: Path) -> LocalQwenBackend:
    return LocalQwenBackend.from_pretrained(str(tiny_checkpoint), name="tiny")


def test_generate_matches_model_chat_stream(backend: LocalQwenBackend) -> None:
    result = backend.generate(GenerationRequest(query="Hello", max_new_tokens=12))
    *_, streamed = backend.model.chat_stream(backend.tokenizer, "Hello", history=None, max_new_tokens=12)
    assert result.text == streamed and result.text
    assert result.finish_reason == "length" and result.completion_tokens == 12
    from qvl_agent.prompting.chatml import make_context

    _, context = make_context(backend.tokenizer, "Hello", [], "You are a helpful assistant.", 6144, "chatml")
    assert (
        result.prompt_tokens == len(context) == len(backend.build_context(GenerationRequest(query="Hello")))
    )


def test_stream_deltas_add_up_to_generate(backend: LocalQwenBackend) -> None:
    request = GenerationRequest(query="Tell me a story", max_new_tokens=10)
    chunks = list(backend.stream(request))
    assert len(chunks) > 1
    assert "".join(chunks) == backend.last_result.text == backend.generate(request).text


def test_stop_strings_cut_the_reply(backend: LocalQwenBackend) -> None:
    full = backend.generate(GenerationRequest(query="Hello", max_new_tokens=16)).text
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    cut = backend.generate(GenerationRequest(query="Hello", max_new_tokens=16, stop=[stop]))
    assert cut.text == full[: full.index(stop)]
    assert cut.finish_reason == "stop" and cut.completion_tokens < 16
    assert (
        "".join(backend.stream(GenerationRequest(query="Hello", max_new_tokens=16, stop=[stop]))) == cut.text
    )


def test_images_are_passed_to_the_model(backend: LocalQwenBackend, tiny_checkpoint: Path) -> None:
    picture = Image.open(tiny_checkpoint / "images" / "img_a.png").convert("RGB")
    other = Image.new("RGB", (40, 40), "white")
    query = "Picture 1: <img>image-1</img>\nWhat is this?"
    a = backend.generate(GenerationRequest(query=query, images=[picture], max_new_tokens=8))
    b = backend.generate(GenerationRequest(query=query, images=[other], max_new_tokens=8))
    # same text, different pictures: the picture reached the model
    assert a.prompt_tokens == b.prompt_tokens and a.text != b.text
    with pytest.raises(InputError):
        backend.generate(GenerationRequest(query=query, images=[picture, other], max_new_tokens=2))


def test_completion_mode_continues_the_last_assistant_turn(backend: LocalQwenBackend) -> None:
    request = GenerationRequest(query=None, history=[("Question: hi", "Thought: I")], max_new_tokens=4)
    ids = backend.build_context(request)
    text = backend.tokenizer.decode(ids)
    assert text.endswith("<|im_start|>assistant\nThought: I")
    assert backend.generate(request).completion_tokens == 4
    with pytest.raises(ValueError, match="completion mode"):
        backend.build_context(GenerationRequest(query=None, history=[]))


def test_stop_event_and_closing_the_stream_end_generation(backend: LocalQwenBackend) -> None:
    stop = threading.Event()
    chunks = []
    for chunk in backend.stream(GenerationRequest(query="Hello", max_new_tokens=200), stop_event=stop):
        chunks.append(chunk)
        stop.set()
    assert len(chunks) == 1
    assert backend.last_result.finish_reason == "stop" and backend.last_result.completion_tokens < 200
    stream = backend.stream(GenerationRequest(query="Hello", max_new_tokens=200))
    next(stream)
    stream.close()
    # the lock was released: a new generation runs
    assert backend.generate(GenerationRequest(query="Hi", max_new_tokens=2)).completion_tokens == 2


def test_concurrent_requests_are_serialised(backend: LocalQwenBackend) -> None:
    prompts = ["one", "two", "three"]
    expected = {p: backend.generate(GenerationRequest(query=p, max_new_tokens=6)).text for p in prompts}
    got: dict[str, str] = {}

    def work(prompt: str) -> None:
        got[prompt] = backend.generate(GenerationRequest(query=prompt, max_new_tokens=6)).text

    threads = [threading.Thread(target=work, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == expected


def test_prompt_longer_than_the_context_is_a_clear_error(backend: LocalQwenBackend) -> None:
    with pytest.raises(ContextLengthError, match="8192"):
        backend.generate(GenerationRequest(query="word " * 9000, max_new_tokens=2))
    assert backend.count_tokens("Hello world") == len(backend.tokenizer.encode("Hello world"))


def test_max_new_tokens_is_capped_by_the_context_window(
    backend: LocalQwenBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A huge max_new_tokens (e.g. a client's max_tokens=10**8) stops at the end of the context window
    instead of generating without bound (dynamic NTK would let the model go on)."""
    request = GenerationRequest(query="Hello", max_new_tokens=40)  # "Hello" runs to the limit (see above)
    prompt = len(backend.build_context(request))
    monkeypatch.setattr(backend.model.config, "max_position_embeddings", prompt + 5)
    result = backend.generate(request)
    assert result.completion_tokens == 5 and result.finish_reason == "length"
    assert "".join(backend.stream(request)) == result.text


def test_agent_image_limits_cover_img_tags_written_in_text(
    backend: LocalQwenBackend, tiny_checkpoint: Path
) -> None:
    from qvl_agent.agent import Agent
    from qvl_agent.messages import ImageLimits
    from qvl_agent.model.errors import ImageLoadError

    text = f"Picture 1: <img>{tiny_checkpoint / 'images' / 'img_a.png'}</img>\nWhat is this?"
    locked = Agent(model=backend, image_limits=ImageLimits(allow_local=False))
    with pytest.raises(ImageLoadError, match="not allowed"):
        locked.run(text, max_new_tokens=2)
    folder = ImageLimits(allowed_dirs=[str(tiny_checkpoint / "images")])
    answer = Agent(model=backend, image_limits=folder).run(text, max_new_tokens=3, temperature=0)
    assert answer.text == Agent(model=backend).run(text, max_new_tokens=3, temperature=0).text
