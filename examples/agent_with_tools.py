"""An agent that looks at a picture and uses a tool.

python examples/agent_with_tools.py --model demo
python examples/agent_with_tools.py --model /path/to/Qwen-VL-Chat --image photo.jpg
"""

from __future__ import annotations

import argparse

from PIL import Image, ImageDraw

from qvl_agent import Agent, Tool


def multiply(a: float, b: float) -> float:
    """Multiply two numbers.

    :param a: the first number
    :param b: the second number
    """
    return a * b


def example_scene() -> Image.Image:
    """Three red circles and two blue squares on white."""
    image = Image.new("RGB", (448, 448), "white")
    draw = ImageDraw.Draw(image)
    for x in (60, 190, 320):
        draw.ellipse((x, 60, x + 70, 130), fill="red")
    for x in (110, 270):
        draw.rectangle((x, 260, x + 80, 340), fill="blue")
    return image


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="demo, a checkpoint directory or a URL spec")
    parser.add_argument("--image", help="a picture (default: a generated scene)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args(argv)

    picture = args.image or example_scene()
    agent = Agent(model=args.model, tools=[Tool.from_function(multiply)], max_steps=4)
    question = "How many red circles are there? Each is worth 2.5 points: how many points in total?"
    for event in agent.stream(question, images=[picture], max_new_tokens=args.max_new_tokens):
        if event.type == "tool_call_started":
            print(f"-> {event.tool}({event.arguments})")
        elif event.type == "tool_result":
            print(f"<- {event.content}")
        elif event.type == "final_answer":
            print(f"Answer: {event.text}")


if __name__ == "__main__":
    main()
