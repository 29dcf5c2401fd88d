"""Pictures of detections: small images enlarged, boxes in a colour per class with a "name score" label, ground truth
in thin white, and a grid that tiles such pictures (the `predictions.png` of `make demo`).

Boxes are `[ymin, xmin, ymax, xmax]` in pixel-edge coordinates of the image given (pixel (r, c) covers
[r, r + 1) x [c, c + 1)), as the data and the detector's `to_original_pixels` give them. The picture enlarges the
image by a whole factor `scale` (nearest neighbour, so the pixels the model saw stay visible) and a box becomes the
outline of pixels `scale * xmin` to `scale * xmax - 1` (rows alike): the outline lies on the box's own border pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from spinenet_tf.visualization.fonts import font

Colour = tuple[int, int, int]

# Distinct box colours per class for detection pictures (cycled).
_DETECTION_COLOURS: tuple[Colour, ...] = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48),
                                          (145, 30, 180), (70, 240, 240), (240, 50, 230), (128, 128, 0))
_GROUND_TRUTH_COLOUR: Colour = (255, 255, 255)
MIN_PICTURE_SIZE = 384   # pixels on the long side; smaller images are enlarged by a whole factor up to it
LABEL_FONT_SIZE = 16     # pixels, for detection labels
_TRUTH_FONT_SIZE = 13    # pixels, for ground-truth class names
_BOX_WIDTH = 2           # pixels, detection outlines (ground truth: 1)
_LABEL_PADDING = 2       # pixels between a label's text and the edge of its background


def class_colour(class_index: int) -> Colour:
    """The box and label colour of a class (cycled over eight distinct colours)."""
    return _DETECTION_COLOURS[int(class_index) % len(_DETECTION_COLOURS)]


def upscale_factor(width: int, height: int, min_size: int = MIN_PICTURE_SIZE) -> int:
    """The whole factor (at least 1) that brings the long side of a `width x height` image to `min_size` or more."""
    return max(1, math.ceil(min_size / max(width, height)))


def _text_colour(background: Colour) -> Colour:
    """Black on light backgrounds, white on dark ones (ITU-R BT.601 luma)."""
    luma = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return (0, 0, 0) if luma > 140 else (255, 255, 255)


def _class_name(class_names: Sequence[str], class_index: int) -> str:
    return class_names[class_index] if 0 <= class_index < len(class_names) else str(class_index)


def _outline(box, scale: int, width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), inclusive, of the pixels on the border of `box` in the enlarged picture, clipped to it."""
    ymin, xmin, ymax, xmax = (float(v) * scale for v in box)
    x0, y0 = min(max(round(xmin), 0), width - 1), min(max(round(ymin), 0), height - 1)
    x1, y1 = min(max(round(xmax) - 1, x0), width - 1), min(max(round(ymax) - 1, y0), height - 1)
    return x0, y0, x1, y1


def draw_detections(image, boxes, classes, scores, class_names: Sequence[str], *, score_threshold: float = 0.5,
                    ground_truth=None, ground_truth_classes=None, min_size: int = MIN_PICTURE_SIZE) -> Image.Image:
    """An RGB picture of `image`, enlarged, with its detections and optional ground truth.

    Detections at or above `score_threshold` are drawn as 2 px outlines in their class colour (`class_colour`), each
    with a "name score" label in 16 px text on a filled background of that colour (black or white text, whichever
    contrasts), above the box where there is room, else just inside its top. Higher scores are drawn last (on top).
    Ground truth is drawn first, in 1 px white, with its class name in small outlined white text under the box's
    bottom-left corner when `ground_truth_classes` is given.

    Args:
        image: [H, W, 3] uint8 array.
        boxes: [K, 4] (ymin, xmin, ymax, xmax) in pixels of `image`; classes [K] class indices; scores [K].
        class_names: Name per class index (an index outside it is written as the number).
        score_threshold: Detections below it are not drawn.
        ground_truth: Optional [G, 4] boxes in the same pixels.
        ground_truth_classes: Optional [G] class indices of `ground_truth`, to write their names.
        min_size: The picture's long side is at least this: the image is enlarged by `upscale_factor`.

    Returns:
        The picture, `upscale_factor(W, H, min_size)` times the image's size.
    """
    picture = Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
    scale = upscale_factor(*picture.size, min_size)
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    width, height = picture.size
    draw = ImageDraw.Draw(picture)

    truth = np.zeros((0, 4)) if ground_truth is None else np.asarray(ground_truth, np.float32).reshape(-1, 4)
    truth_classes = [None] * len(truth) if ground_truth_classes is None else [int(c) for c in ground_truth_classes]
    truth_font = font(_TRUTH_FONT_SIZE)
    for box, cls in zip(truth, truth_classes):
        x0, y0, x1, y1 = _outline(box, scale, width, height)
        draw.rectangle([x0, y0, x1, y1], outline=_GROUND_TRUTH_COLOUR, width=1)
        if cls is not None:  # below the box (detection labels go above), or inside its bottom at the picture's edge
            below = y1 + 3 + _TRUTH_FONT_SIZE <= height
            draw.text((x0 + 2, y1 + 3 if below else y1 - 2), _class_name(class_names, cls),
                      fill=_GROUND_TRUTH_COLOUR, font=truth_font, anchor="lt" if below else "ld", stroke_width=2,
                      stroke_fill=(0, 0, 0))

    label_font = font(LABEL_FONT_SIZE)
    # One label height for every text: from the top of the capitals to the bottom of the descenders.
    _, top, _, bottom = label_font.getbbox("Ag", anchor="lt")
    text_height = bottom - top
    kept = [(float(score), int(cls), box) for box, cls, score in zip(boxes, classes, scores)
            if float(score) >= score_threshold]
    for score, cls, box in sorted(kept, key=lambda detection: detection[0]):
        colour = class_colour(cls)
        x0, y0, x1, y1 = _outline(box, scale, width, height)
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=_BOX_WIDTH)
        text = f"{_class_name(class_names, cls)} {score:.2f}"
        left, _, right, _ = draw.textbbox((0, 0), text, font=label_font, anchor="lt")
        label_width, label_height = right - left + 2 * _LABEL_PADDING, text_height + 2 * _LABEL_PADDING
        label_x = min(x0, max(width - label_width, 0))
        label_y = y0 - label_height if y0 >= label_height else y0  # above the box, else inside its top
        draw.rectangle([label_x, label_y, label_x + label_width - 1, label_y + label_height - 1], fill=colour)
        draw.text((label_x + _LABEL_PADDING - left, label_y + _LABEL_PADDING - top), text, fill=_text_colour(colour),
                  font=label_font, anchor="lt")
    return picture


def image_grid(images: Sequence[Image.Image], columns: int, spacing: int = 0) -> Image.Image:
    """Tiles equally sized pictures left to right, top to bottom, `spacing` white pixels apart."""
    width, height = images[0].size
    rows = -(-len(images) // columns)
    grid = Image.new("RGB", (columns * width + (columns - 1) * spacing, rows * height + (rows - 1) * spacing),
                     (255, 255, 255))
    for i, picture in enumerate(images):
        grid.paste(picture, ((i % columns) * (width + spacing), (i // columns) * (height + spacing)))
    return grid
