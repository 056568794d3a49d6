"""Synthetic scenes: a few simple objects (shapes and short words) on a plain background, drawn with Pillow.

A :class:`Scene` is pure data (JSON-serialisable); :func:`render_scene` turns it into a picture and
:func:`random_scene` samples one from a :class:`SceneConfig` with a seeded ``random.Random``. Objects never
overlap, so every box is unambiguous.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 195, 20),
    "purple": (140, 60, 180),
    "orange": (245, 130, 30),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond")
#: object side as a fraction of the picture side, per size word
SIZES: dict[str, tuple[float, float]] = {
    "tiny": (0.04, 0.06),
    "small": (0.10, 0.14),
    "medium": (0.17, 0.22),
    "large": (0.26, 0.32),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250),
    "grey": (222, 222, 222),
    "beige": (240, 230, 208),
    "light blue": (218, 232, 245),
}
WORDS: tuple[str, ...] = (
    "cat",
    "dog",
    "sun",
    "box",
    "car",
    "map",
    "key",
    "hat",
    "A1",
    "B2",
    "42",
    "7",
    "ok",
    "go",
)
#: how box coordinates are snapped to a coarser step (:func:`normalize_coord`)
COORD_SNAPS: tuple[str, ...] = ("down", "nearest")
#: 3x3 grid of position words, indexed [row][column]
POSITIONS: tuple[tuple[str, ...], ...] = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)


@dataclass
class SceneObject:
    """One object: a shape (or ``"text"`` for a short word), its colour, size word and pixel box."""

    shape: str
    colour: str
    size: str
    box: tuple[int, int, int, int]
    text: str | None = None
    font_size: int | None = None

    @property
    def center(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2, (y1 + y2) / 2

    @property
    def is_text(self) -> bool:
        return self.shape == "text"

    def noun(self) -> str:
        """``red circle`` / ``word "cat"``."""
        return f'word "{self.text}"' if self.is_text else f"{self.colour} {self.shape}"

    def description(self) -> str:
        """``a large red circle`` / ``the word "cat" in red``."""
        if self.is_text:
            return f'the word "{self.text}" in {self.colour}'
        article = "an" if self.size[0] in "aeiou" else "a"
        return f"{article} {self.size} {self.colour} {self.shape}"


@dataclass
class Scene:
    """A picture's content: size, background and objects."""

    width: int
    height: int
    background: str
    objects: list[SceneObject] = field(default_factory=list)

    def position_of(self, obj: SceneObject) -> str:
        """The 3x3-grid position word of an object's centre."""
        cx, cy = obj.center
        col = min(int(3 * cx / self.width), 2)
        row = min(int(3 * cy / self.height), 2)
        return POSITIONS[row][col]

    def norm_box(self, obj: SceneObject, step: int = 1, snap: str = "down") -> tuple[int, int, int, int]:
        """The object's box in Qwen-VL's [0,1000) coordinates, optionally snapped to multiples of ``step``
        (``snap``: see :func:`normalize_coord`)."""
        x1, y1, x2, y2 = obj.box
        return (
            normalize_coord(x1, self.width, step, snap),
            normalize_coord(y1, self.height, step, snap),
            normalize_coord(x2, self.width, step, snap),
            normalize_coord(y2, self.height, step, snap),
        )

    def reading_order(self) -> list[SceneObject]:
        """Objects sorted top-to-bottom by grid row, then left-to-right."""

        def key(o: SceneObject) -> tuple[int, float]:
            return min(int(3 * o.center[1] / self.height), 2), o.center[0]

        return sorted(self.objects, key=key)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        objects = [SceneObject(**{**o, "box": tuple(o["box"])}) for o in data["objects"]]
        return cls(data["width"], data["height"], data["background"], objects)


def normalize_coord(value: float, extent: int, step: int = 1, snap: str = "down") -> int:
    """Pixel coordinate -> integer in [0, 1000) (Qwen-VL's convention), snapped to a multiple of ``step``:
    ``"down"`` (the multiple below, on average ``step / 2`` below the unsnapped value) or ``"nearest"``."""
    if snap not in COORD_SNAPS:
        raise ValueError(f"snap must be one of {list(COORD_SNAPS)}, got {snap!r}")
    v = min(max(int(value / extent * 1000), 0), 999)
    if snap == "nearest":
        return min((v + step // 2) // step * step, 999 - 999 % step)
    return v - v % step


@dataclass
class SceneConfig:
    """What random scenes may contain."""

    width: int = 256
    height: int = 256
    min_objects: int = 1
    max_objects: int = 5
    shapes: tuple[str, ...] = SHAPES
    colours: tuple[str, ...] = tuple(COLOURS)
    sizes: tuple[str, ...] = ("small", "medium", "large")
    backgrounds: tuple[str, ...] = tuple(BACKGROUNDS)
    tiny_prob: float = 0.15
    text_prob: float = 0.15
    #: chance that a new shape copies the shape of an earlier one, and (a second, independent draw) the colour
    #: of one: more scenes with 2-3 squares or 2-3 red shapes to count (0 keeps every split as it was)
    repeat_prob: float = 0.0

    def __post_init__(self) -> None:
        for name, values, known in (
            ("shapes", self.shapes, SHAPES),
            ("colours", self.colours, COLOURS),
            ("sizes", self.sizes, SIZES),
            ("backgrounds", self.backgrounds, BACKGROUNDS),
        ):
            unknown = [v for v in values if v not in known]
            if unknown or not values:
                raise ValueError(
                    f"SceneConfig.{name}: unknown or empty {unknown or values}; choose from {list(known)}"
                )
        if not 0.0 <= self.repeat_prob <= 1.0:
            raise ValueError(f"SceneConfig.repeat_prob must be in [0, 1], got {self.repeat_prob}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"SceneConfig: need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _text_extent(text: str, font_size: int) -> tuple[int, int, int, int]:
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    return tuple(int(v) for v in probe.textbbox((0, 0), text, font=_font(font_size)))  # type: ignore[return-value]


def random_scene(
    rng: random.Random, config: SceneConfig | None = None, n_objects: int | None = None
) -> Scene:
    """Sample a scene: non-overlapping objects with random shape, colour, size and place."""
    config = config or SceneConfig()
    w, h = config.width, config.height
    scene = Scene(w, h, rng.choice(config.backgrounds))
    n = n_objects if n_objects is not None else rng.randint(config.min_objects, config.max_objects)
    margin = max(2, w // 64)
    for _ in range(n):
        earlier = [o for o in scene.objects if not o.is_text] if config.repeat_prob else []
        for _attempt in range(50):
            size = "tiny" if rng.random() < config.tiny_prob else rng.choice(config.sizes)
            colour = rng.choice(config.colours)
            lo, hi = SIZES[size]
            side = max(4, int(rng.uniform(lo, hi) * min(w, h)))
            if rng.random() < config.text_prob:
                text = rng.choice(WORDS)
                font_size = max(8, int(side * 0.9))
                ox1, oy1, ox2, oy2 = _text_extent(text, font_size)
                bw, bh = ox2 - ox1, oy2 - oy1
                if bw >= w - 2 * margin or bh >= h - 2 * margin:
                    continue
                x = rng.randint(margin, w - margin - bw)
                y = rng.randint(margin, h - margin - bh)
                obj = SceneObject("text", colour, size, (x, y, x + bw, y + bh), text, font_size)
            else:
                x = rng.randint(margin, w - margin - side)
                y = rng.randint(margin, h - margin - side)
                shape = rng.choice(config.shapes)
                if earlier and rng.random() < config.repeat_prob:
                    shape = rng.choice(earlier).shape
                if earlier and rng.random() < config.repeat_prob:
                    colour = rng.choice(earlier).colour
                obj = SceneObject(shape, colour, size, (x, y, x + side, y + side))
            if not any(_overlaps(obj.box, o.box, margin) for o in scene.objects):
                scene.objects.append(obj)
                break
    return scene


def _overlaps(a: tuple[int, ...], b: tuple[int, ...], margin: int) -> bool:
    return not (
        a[2] + margin <= b[0] or b[2] + margin <= a[0] or a[3] + margin <= b[1] or b[3] + margin <= a[1]
    )


def _star(box: tuple[int, int, int, int]) -> list[tuple[float, float]]:
    x1, y1, x2, y2 = box
    cx, cy, r = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2
    points = []
    for i in range(10):
        radius = r if i % 2 == 0 else r * 0.45
        angle = -math.pi / 2 + i * math.pi / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def render_scene(scene: Scene) -> Image.Image:
    """Draw the scene as an RGB picture."""
    image = Image.new("RGB", (scene.width, scene.height), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        colour = COLOURS[obj.colour]
        x1, y1, x2, y2 = obj.box
        if obj.is_text:
            font_size = obj.font_size or 12
            ox1, oy1, _, _ = _text_extent(obj.text or "", font_size)
            draw.text((x1 - ox1, y1 - oy1), obj.text or "", fill=colour, font=_font(font_size))
        elif obj.shape == "circle":
            draw.ellipse((x1, y1, x2 - 1, y2 - 1), fill=colour)
        elif obj.shape == "square":
            draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=colour)
        elif obj.shape == "triangle":
            draw.polygon([((x1 + x2) / 2, y1), (x2 - 1, y2 - 1), (x1, y2 - 1)], fill=colour)
        elif obj.shape == "diamond":
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            draw.polygon([(cx, y1), (x2 - 1, cy), (cx, y2 - 1), (x1, cy)], fill=colour)
        elif obj.shape == "star":
            draw.polygon(_star(obj.box), fill=colour)
        else:
            raise ValueError(f"unknown shape {obj.shape!r}")
    return image
