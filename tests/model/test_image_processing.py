"""Image loading (every source kind and its failures) and bit-exact Qwen-VL preprocessing."""

from __future__ import annotations

import base64
import http.server
import io
import socket
import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file

from qvl_agent.model.errors import ImageLoadError, InputError
from qvl_agent.model.image_processing import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    QWenImageProcessor,
    bicubic_resize,
    describe_source,
    load_image,
)

IMAGES = ["img_a", "img_b", "img_c", "img_d"]


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def sample() -> Image.Image:
    """A small RGB picture with distinct pixel values."""
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (23, 31, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def sample_png(sample) -> bytes:
    return png_bytes(sample)


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


# ------------------------------------------------------------------------------------ reference vectors


@pytest.mark.testdata
@pytest.mark.parametrize("name", IMAGES)
def test_resize_and_pixel_values_are_bit_exact(qwen_vl_testdata, name):
    tiny = qwen_vl_testdata / "tiny"
    vectors = load_file(tiny / "vectors.safetensors")
    path = tiny / "images" / f"{name}.png"
    processor = QWenImageProcessor(image_size=56)

    resized = processor.resize(path)
    assert resized.mode == "RGB" and resized.size == (56, 56)
    assert torch.equal(torch.from_numpy(np.array(resized)), vectors[f"{name}.resized_uint8"])

    pixel_values = processor([str(path)])
    assert pixel_values.shape == (1, 3, 56, 56) and pixel_values.dtype == torch.float32
    assert torch.equal(pixel_values[0], vectors[f"{name}.pixel_values"])


@pytest.mark.testdata
def test_reference_images_cover_the_conversions(qwen_vl_testdata):
    """The four inputs are RGB, RGBA, L and P; loading gives RGB exactly like ``convert("RGB")``."""
    modes = []
    for name in IMAGES:
        path = qwen_vl_testdata / "tiny" / "images" / f"{name}.png"
        with Image.open(path) as original:
            modes.append(original.mode)
            expected = original.convert("RGB")
        loaded = load_image(path)
        assert loaded.mode == "RGB" and same_pixels(loaded, expected)
    assert modes == ["RGB", "RGBA", "L", "P"]


@pytest.mark.testdata
def test_batch_of_mixed_sources(qwen_vl_testdata):
    tiny = qwen_vl_testdata / "tiny"
    vectors = load_file(tiny / "vectors.safetensors")
    path_a = tiny / "images" / "img_a.png"
    path_b = tiny / "images" / "img_b.png"
    data_url = "data:image/png;base64," + base64.b64encode(path_b.read_bytes()).decode()
    batch = QWenImageProcessor(56)([path_a.as_uri(), data_url, Image.open(path_a)])
    assert batch.shape == (3, 3, 56, 56)
    assert torch.equal(batch[0], vectors["img_a.pixel_values"])
    assert torch.equal(batch[1], vectors["img_b.pixel_values"])
    assert torch.equal(batch[2], vectors["img_a.pixel_values"])


# ------------------------------------------------------------------------------------ preprocessing


def test_normalisation_formula(sample):
    processor = QWenImageProcessor(image_size=16)
    resized = processor.resize(sample)
    raw = torch.from_numpy(np.array(resized)).permute(2, 0, 1).float() / 255
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(3, 1, 1)
    assert torch.equal(processor.preprocess(sample), (raw - mean) / std)
    assert processor(sample).shape == (1, 3, 16, 16)  # a single picture is accepted as a batch of one


@pytest.mark.parametrize(
    ("source_size", "target"),
    [
        ((31, 23), (16, 16)),
        ((40, 200), (56, 56)),
        ((200, 40), (56, 56)),
        ((10, 10), (56, 56)),
        ((56, 90), (56, 56)),
    ],
)
def test_bicubic_resize_is_two_single_axis_passes(source_size, target):
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (source_size[1], source_size[0], 3), dtype=np.uint8))
    width, height = source_size
    out = bicubic_resize(image, target)
    assert out.size == target and out.mode == "RGB"
    if width == target[0] or height == target[1]:
        assert same_pixels(out, image.resize(target, Image.Resampling.BICUBIC))
        return
    vertical_first = height > target[1] and height - target[1] > 2 * (width - target[0])
    first = (width, target[1]) if vertical_first else (target[0], height)
    expected = image.resize(first, Image.Resampling.BICUBIC).resize(target, Image.Resampling.BICUBIC)
    assert same_pixels(out, expected)


def test_processor_rejects_bad_arguments():
    with pytest.raises(InputError, match="at least one image"):
        QWenImageProcessor(16)([])
    with pytest.raises(InputError, match="image_size"):
        QWenImageProcessor(0)
    with pytest.raises(InputError, match="3 values"):
        QWenImageProcessor(16, image_mean=(0.5, 0.5))


def test_processor_reports_the_failing_image(tmp_path, sample):
    missing = tmp_path / "nope.png"
    with pytest.raises(ImageLoadError, match="nope.png"):
        QWenImageProcessor(16)([sample, str(missing)])


# ------------------------------------------------------------------------------------ load_image sources


def test_load_from_path_str_and_pathlike(tmp_path, sample, sample_png):
    path = tmp_path / "pic.png"
    path.write_bytes(sample_png)
    for source in (path, str(path)):
        image = load_image(source)
        assert image.mode == "RGB" and same_pixels(image, sample)


def test_load_from_file_url(tmp_path, sample, sample_png):
    path = tmp_path / "with space.png"
    path.write_bytes(sample_png)
    assert same_pixels(load_image(path.as_uri()), sample)  # percent-encoded space
    assert same_pixels(load_image("file://localhost" + path.as_posix()), sample)
    with pytest.raises(ImageLoadError, match="remote host"):
        load_image("file://example.com/pic.png")


def test_load_from_data_url(sample, sample_png):
    encoded = base64.b64encode(sample_png).decode()
    assert same_pixels(load_image("data:image/png;base64," + encoded), sample)
    # Line breaks inside the payload are tolerated.
    wrapped = "\n".join(encoded[i : i + 60] for i in range(0, len(encoded), 60))
    assert same_pixels(load_image("data:image/png;base64," + wrapped), sample)


def test_load_from_bytes(sample, sample_png):
    for source in (sample_png, bytearray(sample_png), memoryview(sample_png)):
        assert same_pixels(load_image(source), sample)


def test_load_from_pil_drops_alpha_without_compositing():
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 200, 100, 50, 0  # fully transparent
    image = load_image(Image.fromarray(rgba, mode="RGBA"))
    assert image.mode == "RGB"
    assert np.array_equal(np.asarray(image), rgba[..., :3])  # not blended with black or white


def test_load_expands_grey_and_palette():
    grey = Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4) * 20, mode="L")
    loaded = np.asarray(load_image(png_bytes(grey)))
    assert loaded.shape == (3, 4, 3) and np.array_equal(loaded[..., 1], np.asarray(grey))
    palette = grey.convert("RGB").quantize(colors=4)
    assert np.array_equal(np.asarray(load_image(palette)), np.asarray(palette.convert("RGB")))


# ------------------------------------------------------------------------------------ failures


def test_missing_file(tmp_path):
    with pytest.raises(ImageLoadError, match=r"not found: .*missing\.png"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageLoadError, match="not found"):
        load_image((tmp_path / "missing.png").as_uri())
    with pytest.raises(ImageLoadError, match=r"not found: no/such\.png \(relative to "):
        load_image("no/such.png")


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(ImageLoadError, match="not a file"):
        load_image(tmp_path)


def test_truncated_png_fails_at_load_time(tmp_path, sample_png):
    path = tmp_path / "cut.png"
    path.write_bytes(sample_png[: len(sample_png) // 2])
    with pytest.raises(ImageLoadError, match=r"cut\.png.*(corrupt|truncated)"):
        load_image(path)
    with pytest.raises(ImageLoadError, match="corrupt or truncated"):
        load_image(sample_png[:-30])


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("definitely not a picture")
    with pytest.raises(ImageLoadError, match=r"notes\.png: not a recognised image format"):
        load_image(path)
    with pytest.raises(ImageLoadError, match="not a recognised image format"):
        load_image(b"\x00\x01garbage")
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(b"")


def test_oversize_inputs(tmp_path, sample_png):
    path = tmp_path / "big.png"
    path.write_bytes(sample_png)
    limit = len(sample_png) - 1
    with pytest.raises(ImageLoadError, match=rf"too large: {len(sample_png)} bytes \(limit {limit} bytes\)"):
        load_image(path, max_bytes=limit)
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(sample_png, max_bytes=limit)
    data_url = "data:image/png;base64," + base64.b64encode(sample_png).decode()
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(data_url, max_bytes=limit)
    assert load_image(path, max_bytes=len(sample_png)).size == (31, 23)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("data:image/png;base64", "no ','"),
        ("data:image/png;base64,@@@not-base64@@@", "invalid base64"),
        ("data:image/png;base64,", "empty"),
        ("data:image/png,rawtext", "only base64"),
        ("data:text/plain;base64,aGVsbG8=", "not an image type"),
        ("data:image/png;base64,aGVsbG8gd29ybGQ=", "not a recognised image format"),
    ],
)
def test_bad_data_urls(url, problem):
    with pytest.raises(ImageLoadError, match=problem):
        load_image(url)


def test_long_data_url_is_shortened_in_messages():
    url = "data:image/png;base64," + "A" * 5000 + "!"
    with pytest.raises(ImageLoadError) as info:
        load_image(url)
    message = str(info.value)
    assert "invalid base64" in message
    assert len(message) < 300 and "5023 chars" in message and message.count("A") < 100


def test_wrong_source_types():
    with pytest.raises(ImageLoadError, match="from a int"):
        load_image(42)
    with pytest.raises(ImageLoadError, match="empty string"):
        load_image("  ")


def test_describe_source():
    assert describe_source("short.png") == "short.png"
    assert describe_source(b"12345") == "<5 bytes>"
    assert describe_source(Image.new("RGB", (3, 2))) == "<PIL image RGB 3x2>"
    long = describe_source("data:image/png;base64," + "x" * 1000)
    assert long.startswith("data:image/png;base64,") and "(1022 chars)" in long and len(long) < 100


# ------------------------------------------------------------------------------------ http(s)


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, bytes, bool]] = {}

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        status, body, send_length = self.routes.get(self.path, (404, b"no such picture", True))
        self.send_response(status)
        self.send_header("Content-Type", "image/png" if status == 200 else "text/plain")
        if send_length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.close_connection = True  # body ends when the connection closes
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


@pytest.fixture(scope="module")
def http_base(sample_png):
    _Handler.routes = {
        "/pic.png": (200, sample_png, True),
        "/nolength.png": (200, sample_png, False),
        "/broken.png": (200, b"<html>not an image</html>", True),
        "/boom.png": (500, b"server trouble", True),
    }
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_http_fetch(http_base, sample):
    assert same_pixels(load_image(f"{http_base}/pic.png"), sample)
    assert same_pixels(load_image(f"{http_base}/nolength.png"), sample)


def test_http_errors(http_base, sample_png):
    with pytest.raises(ImageLoadError, match=r"/missing\.png: HTTP 404"):
        load_image(f"{http_base}/missing.png")
    with pytest.raises(ImageLoadError, match="HTTP 500"):
        load_image(f"{http_base}/boom.png")
    with pytest.raises(ImageLoadError, match=r"broken\.png: not a recognised image format"):
        load_image(f"{http_base}/broken.png")
    limit = len(sample_png) - 1
    # Refused from the declared Content-Length, and by counting when there is none.
    for path in ("/pic.png", "/nolength.png"):
        with pytest.raises(ImageLoadError, match=rf"{path}.*too large"):
            load_image(f"{http_base}{path}", max_bytes=limit)


def test_http_connection_failure():
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(
        ImageLoadError, match=rf"cannot fetch image http://127\.0\.0\.1:{port}/x\.png: Connect"
    ):
        load_image(f"http://127.0.0.1:{port}/x.png", timeout=2.0)


@pytest.mark.parametrize(
    ("url", "problem"), [("https://[::1", "bad image URL"), ("http://", "cannot fetch image")]
)
def test_malformed_http_urls(url, problem):
    with pytest.raises(ImageLoadError, match=problem):
        load_image(url, timeout=1.0)


def test_http_timeout(sample_png):
    stalled = threading.Event()

    class Slow(_Handler):
        def do_GET(self) -> None:  # noqa: N802
            stalled.wait(5)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(ImageLoadError, match="timed out after 0.3 s"):
            load_image(f"http://127.0.0.1:{server.server_address[1]}/slow.png", timeout=0.3)
    finally:
        stalled.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_processor_passes_its_limits(tmp_path, sample_png):
    path = tmp_path / "pic.png"
    path.write_bytes(sample_png)
    with pytest.raises(ImageLoadError, match="too large"):
        QWenImageProcessor(16, max_bytes=10)([path])


@settings(max_examples=40, deadline=None)
@given(
    mode=st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "I;16", "1"]),
    width=st.integers(1, 40),
    height=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_png_round_trip_matches_convert_rgb(mode, width, height, seed):
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), mode="RGBA")
    image = base.convert(mode) if mode != "P" else base.convert("RGB").quantize(colors=7)
    data = png_bytes(image)
    loaded = load_image(data)
    with Image.open(io.BytesIO(data)) as reopened:
        expected = reopened.convert("RGB")
    assert loaded.mode == "RGB" and same_pixels(loaded, expected)
    pixels = QWenImageProcessor(14)(data)
    assert pixels.shape == (1, 3, 14, 14) and torch.isfinite(pixels).all()


def test_lazily_opened_truncated_pil_image(tmp_path, sample_png):
    path = tmp_path / "cut.png"
    path.write_bytes(sample_png[: len(sample_png) // 2])
    with Image.open(path) as lazy:  # PIL only read the header so far
        with pytest.raises(ImageLoadError, match=r"<PIL image RGB 31x23>.*corrupt or truncated"):
            load_image(lazy)
