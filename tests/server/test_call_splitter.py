"""The live ReAct splitter: a streamed reply, in any chunking, reassembles to the non-streamed message."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from qvl_agent.plugins.react import ReactProtocol
from qvl_agent.server.streaming import CallSplitter

PROTOCOL = ReactProtocol()

replies = st.one_of(
    st.builds(
        lambda thought, name, args, tail: f"Thought: {thought}\nAction: {name}\nAction Input: {args}{tail}",
        st.text(min_size=0, max_size=20),
        st.sampled_from(["get_weather", "search", "add"]),
        st.sampled_from(
            ['{"city": "Paris"}', '{"a": 1, "b": [2, 3]}', "{}", '  {"x": "Obs"}  ', "plain words"]
        ),
        st.sampled_from(["", "\n", "\nObservation:", "\nObserv", "  \n"]),
    ),
    st.builds(
        lambda thought, answer: f"Thought: {thought}\nFinal Answer: {answer}",
        st.text(max_size=20),
        st.text(max_size=40),
    ),
    st.text(max_size=60),
)


def _split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in zip(points, points[1:], strict=False)]


@settings(max_examples=300, deadline=None)
@given(text=replies, cuts=st.lists(st.integers(min_value=0, max_value=80), max_size=12))
def test_stream_reassembles_to_the_parsed_reply(text: str, cuts: list[int]):
    splitter = CallSplitter()
    events = []
    for piece in _split(text, cuts):
        events += splitter.feed(piece)
    parsed = PROTOCOL.parse_reply(text, [])
    events += splitter.finish(parsed)
    content = "".join(e.text for e in events if e.kind == "content")
    names = [e.text for e in events if e.kind == "call"]
    arguments = "".join(e.text for e in events if e.kind == "arguments")
    if parsed.function_call is None:
        assert names == [] and content == (parsed.content or "")
    else:
        assert names == [parsed.function_call.name]
        assert arguments == parsed.function_call.arguments
        assert content == parsed.content
