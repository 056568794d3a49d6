"""Server overhead: end-to-end time of a chat completion through ``qvl-agent serve`` vs a direct backend call.

Both sides run the same prompt with greedy decoding and the same token budget, interleaved, in the same run;
the server is a real uvicorn server on a loopback port driven by the official ``openai`` client. Prints the
median of each and their ratio (target: at most 1.10x).

    python benchmarks/bench_server.py --model /path/to/checkpoint [--max-tokens 32] [--repeats 5] [--stream]

``--model`` takes any spec the ``register_models`` plugins know (default: the tiny reference checkpoint
from ``../shared/testdata/qwen_vl/tiny``, decompressed into a temporary folder).
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import openai
import uvicorn

from qvl_agent import plugins
from qvl_agent.messages import GenerationRequest
from qvl_agent.server import create_app

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "qwen_vl"


def tiny_checkpoint() -> str:
    folder = Path(tempfile.mkdtemp(prefix="qvl-bench-"))
    tiny = TESTDATA / "tiny"
    (folder / "model.safetensors").write_bytes(gzip.decompress((tiny / "model.safetensors.gz").read_bytes()))
    for name in ("config.json", "generation_config.json"):
        shutil.copyfile(tiny / name, folder / name)
    shutil.copyfile(TESTDATA / "qwen.tiktoken", folder / "qwen.tiktoken")
    return str(folder)


def start_server(app: object) -> tuple[uvicorn.Server, threading.Thread, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model spec (default: the tiny reference checkpoint)")
    parser.add_argument("--prompt", default="Describe a sunny day at the beach in a few sentences.")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--stream", action="store_true", help="measure streamed requests (vs backend.stream)")
    args = parser.parse_args()

    spec = args.model or tiny_checkpoint()
    plugins.set_plugin_manager(plugins.create_plugin_manager(load_entry_points=False))
    backend = plugins.resolve_model(spec)
    server, thread, base_url = start_server(create_app(backend, model_name="bench"))
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=600)
    messages = [{"role": "user", "content": args.prompt}]
    request = GenerationRequest(query=args.prompt, max_new_tokens=args.max_tokens, temperature=0)

    def direct() -> str:
        if args.stream:
            return "".join(backend.stream(request))
        return backend.generate(request).text

    def served() -> str:
        if args.stream:
            chunks = client.chat.completions.create(
                model="bench", messages=messages, max_tokens=args.max_tokens, temperature=0, stream=True
            )
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        reply = client.chat.completions.create(
            model="bench", messages=messages, max_tokens=args.max_tokens, temperature=0
        )
        return reply.choices[0].message.content or ""

    # warm-up (first-call costs on both sides), and a check that both do the same work
    assert direct() == served(), "the server and the direct call generated different text"
    times: dict[str, list[float]] = {"direct": [], "server": []}
    for _ in range(args.repeats):
        for name, fn in (("direct", direct), ("server", served)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    server.should_exit = True
    thread.join(timeout=10)

    d, s = statistics.median(times["direct"]), statistics.median(times["server"])
    mode = "streamed" if args.stream else "non-streamed"
    print(f"model {spec!r}, {args.max_tokens} new tokens max, {args.repeats} repeats, {mode}")
    print(f"direct backend call : {d * 1000:8.1f} ms (median)")
    print(f"through the server  : {s * 1000:8.1f} ms (median)")
    print(f"ratio server/direct : {s / d:8.3f}x  (target <= 1.10x)")


if __name__ == "__main__":
    main()
