"""Ask the model where something is and save the picture with the boxes it found drawn on it.

python examples/grounding.py --model demo --out boxes.png
python examples/grounding.py --model /path/to/Qwen-VL-Chat --image photo.jpg --query "the dog"
"""

from __future__ import annotations

import argparse

from PIL import Image, ImageDraw

from qvl_agent import Agent
from qvl_agent.plugins import format_output


def example_scene() -> Image.Image:
    """A green triangle and a small orange circle on grey."""
    image = Image.new("RGB", (400, 300), (200, 200, 200))
    draw = ImageDraw.Draw(image)
    draw.polygon([(60, 240), (160, 60), (260, 240)], fill="green")
    draw.ellipse((300, 40, 340, 80), fill="orange")
    return image


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="demo, a checkpoint directory or a URL spec")
    parser.add_argument("--image", help="a picture (default: a generated scene)")
    parser.add_argument("--query", default="the orange circle", help="what to find")
    parser.add_argument("--out", default="grounding.png", help="where to save the annotated picture")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args(argv)

    picture = args.image or example_scene()
    result = Agent(model=args.model).run(
        f"Find {args.query} and give its bounding box.", images=[picture], max_new_tokens=args.max_new_tokens
    )
    print(format_output(result, "text"))
    for box in result.boxes:
        print(f"{box.label or '?'}: {box.norm} in [0,1000) -> pixels {box.pixels}")
    if not result.boxes:
        print("(no boxes in the answer)")
    format_output(result, "image").save(args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
