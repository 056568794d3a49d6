"""Built-in plugin: image fetchers for PIL images, local paths / ``file://``, ``http(s)://`` and ``data:`` URLs.

Each fetcher decides whether a source is its kind, enforces the :class:`~qvl_agent.messages.ImageLimits`
policy (allowed folders, size cap, timeout, content type) and decodes through the model core's
:func:`qvl_agent.model.image_processing.load_image` (imported lazily, so listing plugins stays fast). Every
failure is an :class:`~qvl_agent.model.errors.ImageLoadError` naming the source and the problem.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PIL import Image

from qvl_agent.hookspecs import hookimpl
from qvl_agent.messages import ImageLimits
from qvl_agent.model.errors import ImageLoadError

_SHORT = 80


def _name(source: Any) -> str:
    text = str(source)
    return text if len(text) <= _SHORT else f"{text[:48]}...{text[-16:]} ({len(text)} chars)"


def _scheme(source: str) -> str:
    head, sep, _ = source.partition(":")
    # "C:\\x" is a Windows drive, not a scheme
    return head.lower() if sep and len(head) > 1 and head.replace("+", "").replace("-", "").isalnum() else ""


def _load(source: Any, limits: ImageLimits) -> Image.Image:
    from qvl_agent.model.image_processing import load_image

    image = load_image(source, timeout=limits.timeout, max_bytes=limits.max_bytes)
    return _check_pixels(image, limits, _name(source) if not isinstance(source, bytes) else "<bytes>")


def _check_pixels(image: Image.Image, limits: ImageLimits, name: str) -> Image.Image:
    if image.width * image.height > limits.max_pixels:
        raise ImageLoadError(
            f"image {name} is too large: {image.width}x{image.height} pixels (limit {limits.max_pixels} pixels)"
        )
    return image


@hookimpl
def fetch_image(source: Any, limits: ImageLimits) -> Image.Image | None:
    if isinstance(source, Image.Image):
        return _check_pixels(source.convert("RGB") if source.mode != "RGB" else source, limits, "<PIL image>")
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _load(bytes(source), limits)
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        return None
    text = source.strip()
    if not text:
        raise ImageLoadError("cannot load an image from an empty string")
    scheme = _scheme(text)
    if scheme == "data":
        if not limits.allow_data:
            raise ImageLoadError(f"data: URLs are not allowed here ({_name(text)})")
        return _load(text, limits)
    if scheme in ("http", "https"):
        if not limits.allow_http:
            raise ImageLoadError(f"fetching images over HTTP is not allowed here ({_name(text)})")
        data = fetch_http(text, limits)
        try:
            return _load(data, limits)
        except ImageLoadError as exc:
            raise ImageLoadError(f"image downloaded from {_name(text)} is unusable: {exc}") from exc
    if scheme == "file":
        from qvl_agent.model.image_processing import file_url_to_path

        return _load_local(file_url_to_path(text, _name(text)), text, limits)
    if scheme:
        return None  # another plugin may know this scheme (s3://, ...)
    return _load_local(Path(text).expanduser(), text, limits)


def check_allowed(path: Path, limits: ImageLimits, name: str) -> Path:
    """Resolve ``path`` (symlinks and ``..`` included) and refuse it unless it lies under an allowed folder."""
    if not limits.allow_local:
        raise ImageLoadError(f"reading local image files is not allowed here ({name})")
    resolved = path.resolve()
    if limits.allowed_dirs is None:
        return resolved
    for folder in limits.allowed_dirs:
        base = Path(folder).expanduser().resolve()
        if resolved == base or base in resolved.parents:
            return resolved
    allowed = ", ".join(str(d) for d in limits.allowed_dirs) or "none"
    raise ImageLoadError(f"image path {name} is outside the allowed directories ({allowed})")


def _load_local(path: Path, name: str, limits: ImageLimits) -> Image.Image:
    resolved = check_allowed(path, limits, _name(name))
    if not resolved.exists():
        raise ImageLoadError(f"image file not found: {_name(name)}")
    return _load(resolved, limits)


def fetch_http(url: str, limits: ImageLimits) -> bytes:
    """Download ``url`` with httpx: timeout, redirects, an image content type and at most ``max_bytes``."""
    import httpx

    name = _name(url)
    try:
        with httpx.stream("GET", url, timeout=limits.timeout, follow_redirects=True) as response:
            if response.status_code >= 400:
                raise ImageLoadError(
                    f"cannot fetch image {name}: HTTP {response.status_code} {response.reason_phrase}".rstrip()
                )
            content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type and not (
                content_type.startswith("image/") or content_type == "application/octet-stream"
            ):
                raise ImageLoadError(
                    f"cannot fetch image {name}: content type {content_type!r} is not an image"
                )
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limits.max_bytes:
                raise ImageLoadError(
                    f"image {name} is too large: {declared} bytes (limit {limits.max_bytes} bytes)"
                )
            chunks, received = [], 0
            for chunk in response.iter_bytes():
                received += len(chunk)
                if received > limits.max_bytes:  # the declared length may be absent or wrong
                    raise ImageLoadError(f"image {name} is too large: over {limits.max_bytes} bytes")
                chunks.append(chunk)
    except httpx.TimeoutException as exc:
        raise ImageLoadError(f"cannot fetch image {name}: timed out after {limits.timeout} s") from exc
    except httpx.HTTPError as exc:
        raise ImageLoadError(f"cannot fetch image {name}: {type(exc).__name__}: {exc}") from exc
    data = b"".join(chunks)
    if not data:
        raise ImageLoadError(f"cannot fetch image {name}: the response is empty")
    return data
