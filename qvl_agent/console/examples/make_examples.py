"""Re-create the console's bundled example pictures (``python -m qvl_agent.console.examples.make_examples``).

They are synthetic scenes like the ones the embedded demo model was trained on, so clicking an example shows
the demo model describing, grounding and calling tools on pictures it can actually read. Kept tiny (256 px).
"""

from __future__ import annotations

from pathlib import Path

from qvl_agent.data.scenes import Scene, SceneObject, render_scene

HERE = Path(__file__).resolve().parent

SCENES: dict[str, Scene] = {
    "shapes.png": Scene(
        256,
        256,
        "white",
        [
            SceneObject("circle", "red", "medium", (24, 28, 74, 78)),
            SceneObject("square", "blue", "large", (150, 40, 222, 112)),
            SceneObject("triangle", "green", "medium", (40, 160, 96, 216)),
            SceneObject("star", "yellow", "medium", (160, 168, 214, 222)),
        ],
    ),
    "circles.png": Scene(
        256,
        256,
        "light blue",
        [
            SceneObject("diamond", "purple", "large", (30, 30, 102, 102)),
            SceneObject("circle", "orange", "small", (176, 44, 206, 74)),
            SceneObject("square", "red", "small", (60, 170, 92, 202)),
            SceneObject("circle", "blue", "medium", (168, 160, 218, 210)),
        ],
    ),
    "tiny.png": Scene(
        256,
        256,
        "beige",
        [
            SceneObject("square", "green", "large", (28, 120, 104, 196)),
            SceneObject("star", "purple", "tiny", (214, 26, 227, 39)),
            SceneObject("circle", "orange", "medium", (140, 150, 190, 200)),
        ],
    ),
}


def main() -> None:
    for name, scene in SCENES.items():
        render_scene(scene).save(HERE / name, optimize=True)
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
