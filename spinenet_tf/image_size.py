"""The `--image_size` flag's text, "H" or "H,W", as the (H, W) the models take: one parser for every command."""

from __future__ import annotations


def parse_image_size(text: str) -> tuple[int, int]:
    """"640" -> (640, 640); "640,512" -> (640, 512) (H, W).

    Raises:
        ValueError: One line naming `--image_size` when the text is not one or two comma-separated integers.
    """
    try:
        sides = tuple(int(side) for side in str(text).split(","))
    except ValueError:
        raise ValueError(f"--image_size={text}: give H or H,W (integers)") from None
    if len(sides) == 1:
        sides *= 2
    if len(sides) != 2:
        raise ValueError(f"--image_size={text}: give H or H,W (integers)")
    return sides
