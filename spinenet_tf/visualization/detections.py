"""Pictures of detections: boxes with "name score" labels on an image, ground truth in thin white, and a grid
that tiles such pictures (the `predictions.png` of `make demo`)."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

from spinenet_tf.visualization.fonts import font

Colour = tuple[int, int, int]

# Distinct box colours per class for detection pictures (cycled).
_DETECTION_COLOURS: tuple[Colour, ...] = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48),
                                          (145, 30, 180), (70, 240, 240), (240, 50, 230), (128, 128, 0))


def draw_detections(image, boxes, classes, scores, class_names: Sequence[str], min_score: float = 0.3,
                    ground_truth=None) -> Image.Image:
    """An RGB uint8 image with detections (solid boxes, "name score") and optional ground truth (thin white).

    Args:
        image: [H, W, 3] uint8 array.
        boxes: [K, 4] (ymin, xmin, ymax, xmax) pixels of `image`; classes [K]; scores [K].
        class_names: Name per class index.
        min_score: Detections below it are not drawn.
        ground_truth: Optional [G, 4] boxes in the same pixels.
    """
    picture = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(picture)
    label_font = font(11)
    for box in [] if ground_truth is None else ground_truth:
        ymin, xmin, ymax, xmax = (float(v) for v in box)
        draw.rectangle([xmin, ymin, xmax, ymax], outline=(255, 255, 255), width=1)
    for box, cls, score in zip(boxes, classes, scores):
        if score < min_score:
            continue
        ymin, xmin, ymax, xmax = (float(v) for v in box)
        colour = _DETECTION_COLOURS[int(cls) % len(_DETECTION_COLOURS)]
        draw.rectangle([xmin, ymin, xmax, ymax], outline=colour, width=2)
        name = class_names[int(cls)] if 0 <= int(cls) < len(class_names) else str(int(cls))
        draw.text((xmin + 2, max(0.0, ymin - 12)), f"{name} {score:.2f}", fill=colour, font=label_font)
    return picture


def image_grid(images: Sequence[Image.Image], columns: int) -> Image.Image:
    """Tiles equally sized pictures left to right, top to bottom."""
    width, height = images[0].size
    rows = -(-len(images) // columns)
    grid = Image.new("RGB", (columns * width, rows * height), (255, 255, 255))
    for i, picture in enumerate(images):
        grid.paste(picture, ((i % columns) * width, (i // columns) * height))
    return grid
