"""Image loading and Qwen-VL vision preprocessing.

``load_image`` turns a path, URL, data URL, raw bytes or PIL image into a fully decoded RGB picture, raising
:class:`~qvl_agent.model.errors.ImageLoadError` with the source and the problem on any failure.
``QWenImageProcessor`` reproduces the original preprocessing bit for bit: RGB conversion (alpha dropped without
compositing), a square bicubic resize that ignores the aspect ratio, ``/255`` and the CLIP mean/std.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import urllib.parse
import urllib.request
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
from PIL import Image

from qvl_agent.model.errors import ImageLoadError, InputError

if TYPE_CHECKING:  # torch is imported on first use, so load_image alone stays light
    import torch

ImageSource = str | os.PathLike | Image.Image | bytes | bytearray | memoryview

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_BYTES = 50 * 2**20

_SHORT_SOURCE_CHARS = 80


def describe_source(source: object) -> str:
    """A short, printable name for an image source (long data URLs and byte strings are abbreviated)."""
    if isinstance(source, Image.Image):
        return f"<PIL image {source.mode} {source.width}x{source.height}>"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    text = os.fspath(source) if isinstance(source, os.PathLike) else str(source)
    if len(text) > _SHORT_SOURCE_CHARS:
        return f"{text[:48]}...{text[-16:]} ({len(text)} chars)"
    return text


def load_image(
    source: ImageSource,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Image.Image:
    """Load a picture as a fully decoded RGB ``PIL.Image``.

    ``source`` may be a local path (``str`` or ``os.PathLike``), a ``file://``, ``http(s)://`` or
    ``data:image/...;base64,`` URL, raw encoded bytes, or a PIL image. Remote fetches use ``timeout`` seconds
    and every encoded payload is limited to ``max_bytes``. Like the original Qwen-VL code the result is
    ``convert("RGB")``: alpha is dropped without compositing and L/P images are expanded.
    """
    if isinstance(source, Image.Image):
        return _finish(source, describe_source(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        _check_size(len(data), max_bytes, describe_source(source))
        return _decode(data, describe_source(source))
    if isinstance(source, os.PathLike):
        return _load_path(Path(os.fspath(source)), max_bytes, describe_source(source))
    if not isinstance(source, str):
        raise ImageLoadError(
            f"cannot load an image from a {type(source).__name__}: expected a path, URL, bytes or PIL image"
        )

    name = describe_source(source)
    text = source.strip()
    if not text:
        raise ImageLoadError("cannot load an image from an empty string")
    scheme = text.split(":", 1)[0].lower() if ":" in text else ""
    if scheme == "data":
        return _decode(_read_data_url(text, max_bytes, name), name)
    if scheme in ("http", "https"):
        return _decode(_fetch_http(text, timeout, max_bytes, name), name)
    if scheme == "file":
        return _load_path(file_url_to_path(text, name), max_bytes, name)
    return _load_path(Path(text).expanduser(), max_bytes, name)


def _check_size(size: int, max_bytes: int, name: str) -> None:
    if size > max_bytes:
        raise ImageLoadError(f"image {name} is too large: {size} bytes (limit {max_bytes} bytes)")


def _load_path(path: Path, max_bytes: int, name: str) -> Image.Image:
    if not path.exists():
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise ImageLoadError(f"image file not found: {name}{where}")
    if not path.is_file():
        raise ImageLoadError(f"image path is not a file: {name}")
    _check_size(path.stat().st_size, max_bytes, name)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageLoadError(f"cannot read image file {name}: {exc}") from exc
    return _decode(data, name)


def file_url_to_path(url: str, name: str | None = None) -> Path:
    """The local path of a ``file://`` URL (``file:///tmp/x.png`` or ``file://localhost/tmp/x.png``); a remote
    host or an empty path raises ImageLoadError naming the URL (as ``name``, if given)."""
    name = name or describe_source(url)
    parsed = urllib.parse.urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise ImageLoadError(
            f"file URL {name} names a remote host {parsed.netloc!r}; only local files are supported"
        )
    if not parsed.path:
        raise ImageLoadError(f"file URL {name} has no path")
    return Path(urllib.request.url2pathname(parsed.path))


def _read_data_url(url: str, max_bytes: int, name: str) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep:
        raise ImageLoadError(f"bad data URL {name}: no ',' separating the header from the data")
    params = header[len("data:") :].split(";")
    media_type = params[0].strip().lower()
    if media_type and not (media_type.startswith("image/") or media_type == "application/octet-stream"):
        raise ImageLoadError(f"bad data URL {name}: media type {media_type!r} is not an image type")
    if "base64" not in (p.strip().lower() for p in params[1:]):
        raise ImageLoadError(f"bad data URL {name}: only base64-encoded data URLs (';base64,') are supported")
    payload = "".join(urllib.parse.unquote(payload).split())
    # 4 base64 characters encode 3 bytes: refuse oversize payloads before decoding them.
    _check_size(len(payload) * 3 // 4, max_bytes, name)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageLoadError(f"bad data URL {name}: invalid base64 data ({exc})") from exc
    if not data:
        raise ImageLoadError(f"bad data URL {name}: the data is empty")
    return data


def _fetch_http(url: str, timeout: float, max_bytes: int, name: str) -> bytes:
    try:
        with httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as response:
            if response.status_code >= 400:
                raise ImageLoadError(
                    f"cannot fetch image {name}: HTTP {response.status_code} {response.reason_phrase}".rstrip()
                )
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit():
                _check_size(int(declared), max_bytes, name)
            chunks: list[bytes] = []
            received = 0
            for chunk in response.iter_bytes():
                received += len(chunk)
                # The declared length may be missing or wrong, so count what really arrives.
                _check_size(received, max_bytes, name)
                chunks.append(chunk)
    except httpx.InvalidURL as exc:
        raise ImageLoadError(f"bad image URL {name}: {exc}") from exc
    except httpx.TimeoutException as exc:
        raise ImageLoadError(f"cannot fetch image {name}: timed out after {timeout} s") from exc
    except httpx.HTTPError as exc:
        raise ImageLoadError(f"cannot fetch image {name}: {type(exc).__name__}: {exc}") from exc
    return b"".join(chunks)


def _decode(data: bytes, name: str) -> Image.Image:
    if not data:
        raise ImageLoadError(f"cannot load image {name}: the data is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError as exc:
        raise ImageLoadError(f"cannot load image {name}: not a recognised image format") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(f"cannot load image {name}: too many pixels ({exc})") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageLoadError(f"cannot load image {name}: the file is corrupt or truncated ({exc})") from exc
    return _finish(image, name)


def _finish(image: Image.Image, name: str) -> Image.Image:
    """Decode every pixel now (so truncated or corrupt files fail here, not deep inside torch), then RGB."""
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageLoadError(f"cannot load image {name}: the file is corrupt or truncated ({exc})") from exc
    try:
        return image.convert("RGB")
    except (OSError, ValueError) as exc:
        raise ImageLoadError(f"cannot convert image {name} (mode {image.mode}) to RGB: {exc}") from exc


def bicubic_resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """PIL bicubic resize to ``size`` (width, height) with the pass order of Pillow >= 13, on any Pillow.

    Pillow resamples in two separable passes rounded to 8 bits in between, so the pass order changes a few
    pixels by one level. Pillow 13 runs the vertical pass first when the height shrinks by more than twice as
    many pixels as the width (horizontal first otherwise); the reference vectors were recorded with it. Doing
    the two single-axis passes explicitly reproduces it bit for bit on older Pillow too.
    """
    width, height = image.size
    new_width, new_height = size
    if width == new_width or height == new_height:
        return image.resize(size, resample=Image.Resampling.BICUBIC)  # one pass (or a copy): no order
    if height > new_height and height - new_height > 2 * (width - new_width):
        intermediate = image.resize((width, new_height), resample=Image.Resampling.BICUBIC)
    else:
        intermediate = image.resize((new_width, height), resample=Image.Resampling.BICUBIC)
    return intermediate.resize(size, resample=Image.Resampling.BICUBIC)


class QWenImageProcessor:
    """Qwen-VL's image preprocessing: RGB, ``(S, S)`` bicubic resize, ``/255``, CLIP mean/std, float32.

    ``processor(images)`` returns a ``[N, 3, S, S]`` float32 tensor, bit-exact with the original
    torchvision pipeline. Inputs are anything :func:`load_image` accepts.
    """

    def __init__(
        self,
        image_size: int = 448,
        image_mean: Sequence[float] = OPENAI_CLIP_MEAN,
        image_std: Sequence[float] = OPENAI_CLIP_STD,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if int(image_size) <= 0:
            raise InputError(f"image_size must be a positive integer, got {image_size!r}")
        if len(image_mean) != 3 or len(image_std) != 3:
            raise InputError("image_mean and image_std must each have 3 values (R, G, B)")
        self.image_size = int(image_size)
        self.image_mean = tuple(float(m) for m in image_mean)
        self.image_std = tuple(float(s) for s in image_std)
        self.timeout = timeout
        self.max_bytes = max_bytes

    def __repr__(self) -> str:
        return f"{type(self).__name__}(image_size={self.image_size})"

    def load(self, image: ImageSource) -> Image.Image:
        """Load ``image`` as RGB with this processor's fetch limits."""
        return load_image(image, timeout=self.timeout, max_bytes=self.max_bytes)

    def resize(self, image: ImageSource) -> Image.Image:
        """The RGB picture resized to ``(S, S)`` with PIL bicubic, aspect ratio ignored (as the original)."""
        return bicubic_resize(self.load(image), (self.image_size, self.image_size))

    def normalize(self, resized: Image.Image) -> torch.Tensor:
        """``[3, S, S]`` float32 pixel values from an already resized picture."""
        import torch

        if resized.mode != "RGB":
            resized = resized.convert("RGB")
        pixels = torch.from_numpy(np.array(resized, dtype=np.uint8))  # [S, S, 3]
        # Same op order as torchvision's ToTensor + Normalize, so results are bit-identical.
        pixels = pixels.permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        mean = torch.tensor(self.image_mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.image_std, dtype=torch.float32).view(3, 1, 1)
        return pixels.sub(mean).div(std)

    def preprocess(self, image: ImageSource) -> torch.Tensor:
        """One picture to its ``[3, S, S]`` pixel values."""
        return self.normalize(self.resize(image))

    def __call__(self, images: ImageSource | Sequence[ImageSource]) -> torch.Tensor:
        """A list of pictures (or a single one) to a ``[N, 3, S, S]`` float32 batch."""
        import torch

        if isinstance(images, (str, os.PathLike, Image.Image, bytes, bytearray, memoryview)):
            images = [images]
        images = list(images)
        if not images:
            raise InputError("QWenImageProcessor needs at least one image, got an empty list")
        return torch.stack([self.preprocess(image) for image in images], dim=0)
