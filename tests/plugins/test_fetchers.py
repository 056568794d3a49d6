"""Built-in image fetchers: every source kind returns an RGB picture; every failure is a clear ImageLoadError."""

from __future__ import annotations

import base64
import http.server
import io
import threading

import pytest
from PIL import Image

from qvl_agent import plugins
from qvl_agent.messages import ImageLimits
from qvl_agent.model.errors import ImageLoadError


def png_bytes(size=(12, 9), mode="RGBA", color=(10, 20, 30, 128)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, "PNG")
    return buffer.getvalue()


class Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, str, bytes]] = {}

    def do_GET(self):  # noqa: N802 (http.server's naming)
        status, content_type, body = self.routes.get(self.path, (404, "text/plain", b"not found"))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    Handler.routes = {
        "/ok.png": (200, "image/png", png_bytes()),
        "/big.png": (200, "image/png", png_bytes((600, 600), "RGB", (1, 2, 3))),
        "/page.html": (200, "text/html; charset=utf-8", b"<html>hi</html>"),
        "/corrupt.png": (200, "image/png", b"\x89PNG\r\n\x1a\n garbage"),
    }
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def assert_rgb(image: Image.Image, size=(12, 9)) -> None:
    assert image.mode == "RGB" and image.size == size
    assert image.getpixel((0, 0)) == (10, 20, 30)  # alpha dropped without compositing, as the original


def test_local_path_and_file_url(pm, tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes())
    assert_rgb(plugins.fetch_image(str(path)))
    assert_rgb(plugins.fetch_image(path))  # os.PathLike
    assert_rgb(plugins.fetch_image(path.as_uri()))


def test_allowed_directories(pm, tmp_path):
    inside, outside = tmp_path / "public", tmp_path / "private"
    inside.mkdir()
    outside.mkdir()
    (inside / "a.png").write_bytes(png_bytes())
    (outside / "b.png").write_bytes(png_bytes())
    (inside / "link.png").symlink_to(outside / "b.png")
    limits = ImageLimits(allowed_dirs=[str(inside)])
    assert_rgb(plugins.fetch_image(str(inside / "a.png"), limits))
    for forbidden in (outside / "b.png", inside / ".." / "private" / "b.png", inside / "link.png"):
        with pytest.raises(ImageLoadError, match="outside the allowed directories"):
            plugins.fetch_image(str(forbidden), limits)
    with pytest.raises(ImageLoadError, match="outside the allowed directories"):
        plugins.fetch_image((outside / "b.png").as_uri(), limits)
    with pytest.raises(ImageLoadError, match="not allowed"):
        plugins.fetch_image(str(inside / "a.png"), ImageLimits(allow_local=False))


def test_missing_file_and_remote_file_url(pm, tmp_path):
    with pytest.raises(ImageLoadError, match="not found"):
        plugins.fetch_image(str(tmp_path / "nope.png"))
    with pytest.raises(ImageLoadError, match="remote host"):
        plugins.fetch_image("file://example.com/x.png")


def test_http(pm, server):
    assert_rgb(plugins.fetch_image(f"{server}/ok.png"))


@pytest.mark.parametrize(
    ("path", "limits", "message"),
    [
        ("/missing.png", ImageLimits(), "HTTP 404"),
        ("/page.html", ImageLimits(), "content type 'text/html' is not an image"),
        ("/big.png", ImageLimits(max_bytes=1000), "too large"),
        ("/corrupt.png", ImageLimits(), "unusable.*(corrupt|not a recognised)"),
    ],
)
def test_http_failures(pm, server, path, limits, message):
    with pytest.raises(ImageLoadError, match=message):
        plugins.fetch_image(f"{server}{path}", limits)


def test_http_unreachable_and_disabled(pm):
    with socket_port() as port:
        pass  # the port is free again: nothing listens there
    with pytest.raises(ImageLoadError, match="cannot fetch image http://127.0.0.1"):
        plugins.fetch_image(f"http://127.0.0.1:{port}/x.png", ImageLimits(timeout=2))
    with pytest.raises(ImageLoadError, match="not allowed"):
        plugins.fetch_image("http://127.0.0.1/x.png", ImageLimits(allow_http=False))


class socket_port:  # noqa: N801 (a tiny context manager)
    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.sock.close()


def test_data_url(pm):
    url = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    assert_rgb(plugins.fetch_image(url))
    with pytest.raises(ImageLoadError, match="not an image type"):
        plugins.fetch_image("data:text/plain;base64,aGVsbG8=")
    with pytest.raises(ImageLoadError, match="base64"):
        plugins.fetch_image("data:image/png;base64,@@@@")
    with pytest.raises(ImageLoadError, match="too large"):
        plugins.fetch_image(url, ImageLimits(max_bytes=10))
    with pytest.raises(ImageLoadError, match="not allowed"):
        plugins.fetch_image(url, ImageLimits(allow_data=False))


def test_pil_images_and_bytes(pm):
    rgba = Image.new("RGBA", (12, 9), (10, 20, 30, 128))
    assert_rgb(plugins.fetch_image(rgba))
    rgb = Image.new("RGB", (4, 4))
    assert plugins.fetch_image(rgb) is rgb
    assert_rgb(plugins.fetch_image(png_bytes()))
    with pytest.raises(ImageLoadError, match="too large"):
        plugins.fetch_image(rgb, ImageLimits(max_pixels=10))


def test_corrupt_and_wrong_type_local_files(pm, tmp_path):
    (tmp_path / "bad.png").write_bytes(png_bytes()[:40])
    (tmp_path / "notes.txt").write_text("not a picture")
    with pytest.raises(ImageLoadError, match="bad.png"):
        plugins.fetch_image(str(tmp_path / "bad.png"))
    with pytest.raises(ImageLoadError, match="not a recognised image format"):
        plugins.fetch_image(str(tmp_path / "notes.txt"))
    with pytest.raises(ImageLoadError, match="empty string"):
        plugins.fetch_image("  ")
