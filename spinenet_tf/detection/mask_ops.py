"""Instance masks in box frames, and the one bilinear sampler (`bilinear_sample`) that moves masks between frames.

A box-frame mask is `M x M` cells tiling its box `[ymin, xmin, ymax, xmax]`: cell (i, j) is centred at
`ymin + (i + 0.5) * h / M, xmin + (j + 0.5) * w / M` (`cell_centres`), where Mask R-CNN's RoIAlign samples its
bins (He et al., arXiv:1703.06870 §3). Image pixel (r, c) covers [r, r + 1) x [c, c + 1); its centre is at
(r + 0.5, c + 0.5).

- `crop_masks`: image-size masks -> box-frame masks (the input pipeline's ground truth);
- `paste_masks`: box-frame masks -> binary image-size masks (evaluation), the inverse of `crop_masks`.
Masks resampled from one box frame into another sample with `bilinear_sample` too: the serving signature's
`reframe_masks` (`spinenet_tf/serving/signatures.py`) and Mask R-CNN's mask targets
(`spinenet_tf/detection/maskrcnn/targets.py::crop_masks_in_boxes`). TensorFlow ops, except `paste_masks` (numpy
in and out).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

_PASTE_SAMPLES = 1 << 22  # float64 samples per `bilinear_sample` call of `paste_masks` (32 MB)


def _neighbours(position: tf.Tensor, limit) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Positions clamped to [0, limit - 1] -> (lower index, upper index, weight of the upper)."""
    last = tf.cast(limit - 1, position.dtype)
    position = tf.clip_by_value(position, tf.zeros([], position.dtype), last)
    low = tf.floor(position)
    high = tf.minimum(low + 1.0, last)
    return tf.cast(low, tf.int32), tf.cast(high, tf.int32), position - low


def bilinear_sample(values: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
    """Bilinear samples of N maps on a grid of positions per map, clamped to the map (its edge pixels extend
    outwards).

    Args:
        values: `[N, H, W]` float maps.
        rows: `[N, P]` positions along H, in index coordinates (the centre of row i is at i), the values' dtype.
        cols: `[N, Q]` positions along W.

    Returns:
        `[N, P, Q]`: sample (p, q) of map n is the map at (rows[n, p], cols[n, q]).
    """
    shape = tf.shape(values)
    count, height, width = shape[0], shape[1], shape[2]
    num_rows = rows.shape[-1] if rows.shape[-1] is not None else tf.shape(rows)[-1]
    num_cols = cols.shape[-1] if cols.shape[-1] is not None else tf.shape(cols)[-1]
    y0, y1, wy = _neighbours(rows, height)
    x0, x1, wx = _neighbours(cols, width)
    flat = tf.reshape(values, [count, -1])

    def gather(y, x):   # [N, P, Q] values at rows y x columns x
        index = y[:, :, None] * width + x[:, None, :]
        return tf.reshape(tf.gather(flat, tf.reshape(index, [count, -1]), batch_dims=1), [count, num_rows, num_cols])

    wy, wx = wy[:, :, None], wx[:, None, :]
    top = gather(y0, x0) * (1.0 - wx) + gather(y0, x1) * wx
    bottom = gather(y1, x0) * (1.0 - wx) + gather(y1, x1) * wx
    return top * (1.0 - wy) + bottom * wy


def cell_centres(start: tf.Tensor, length: tf.Tensor, size: int, offset: float = 0.5) -> tf.Tensor:
    """`[..., size]` positions `start + (i + offset) / size * length` along one axis of `[...]` boxes: the centres
    of the `size` cells that tile each box (offset 0.5), or other points of the cells."""
    steps = (tf.range(size, dtype=start.dtype) + offset) / size
    return start[..., None] + steps * length[..., None]


def crop_masks(masks: tf.Tensor, boxes: tf.Tensor, size: int) -> tf.Tensor:
    """Instance masks cropped to their boxes and resized: bilinear samples at the centres of the `size x size` cells
    that tile each box, coordinates clamped to the mask (its edge pixels extend outwards).

    Args:
        masks: `[G, H, W, 1]` (or `[G, H, W]`) masks, nonzero inside the instance (0/255 or 0/1).
        boxes: `[G, 4]` `[ymin, xmin, ymax, xmax]` in the masks' pixels, pixel-edge coordinates (pixel (r, c)
            covers [r, r + 1) x [c, c + 1)).
        size: M.

    Returns:
        float32 `[G, M, M]` in [0, 1].
    """
    shape = tf.shape(masks)
    inside = tf.cast(tf.reshape(masks, shape[:3]) > 0, tf.float32)
    boxes = tf.cast(boxes, tf.float32)
    # Pixel-edge coordinate of each cell centre -> index coordinate (the centre of pixel i is at i + 0.5).
    rows = cell_centres(boxes[:, 0], boxes[:, 2] - boxes[:, 0], size) - 0.5
    cols = cell_centres(boxes[:, 1], boxes[:, 3] - boxes[:, 1], size) - 0.5
    return bilinear_sample(inside, rows, cols)


def paste_masks(masks, boxes, height: int, width: int, threshold: float = 0.5) -> np.ndarray:
    """Inverse of `crop_masks` (numpy in and out, for evaluation): box-frame masks -> binary masks of a
    `height x width` image.

    Args:
        masks: `[G, M, M]` values in [0, 1] (cropped ground truth, or the mask head's probabilities).
        boxes: `[G, 4]` the boxes they fill, in the target image's pixels (pixel-edge coordinates).
        height, width: The target image's size.
        threshold: A pixel is in the mask when the bilinear sample at its centre is at least this.

    Returns:
        uint8 `[G, height, width]`, 1 inside; zero outside each box.
    """
    masks, boxes = np.asarray(masks, np.float32), np.asarray(boxes, np.float64).reshape(-1, 4)
    size = masks.shape[-1]
    pasted = np.zeros((len(boxes), height, width), np.uint8)
    windows = []   # (k, rows, cols): the pixels each box touches
    for k, (ymin, xmin, ymax, xmax) in enumerate(boxes):
        if ymax <= ymin or xmax <= xmin:
            continue
        rows = np.arange(max(int(np.floor(ymin)), 0), min(int(np.ceil(ymax)), height))
        cols = np.arange(max(int(np.floor(xmin)), 0), min(int(np.ceil(xmax)), width))
        if len(rows) and len(cols):
            windows.append((k, rows, cols))
    # Windows are padded to the largest of a chunk (the padding samples are dropped), chunks bounded in memory.
    while windows:
        count, num_rows, num_cols = 0, 0, 0
        for _, rows, cols in windows:
            grown = (count + 1) * max(num_rows, len(rows)) * max(num_cols, len(cols))
            if count and grown > _PASTE_SAMPLES:
                break
            count, num_rows, num_cols = count + 1, max(num_rows, len(rows)), max(num_cols, len(cols))
        chunk, windows = windows[:count], windows[count:]

        def cells(pixels, start, stop, length):   # pixel centres -> cell index coordinates, padded to `length`
            position = (pixels + 0.5 - start) / (stop - start) * size - 0.5
            return np.pad(position, (0, length - len(position)), mode="edge")

        y = np.stack([cells(rows, boxes[k, 0], boxes[k, 2], num_rows) for k, rows, _ in chunk])
        x = np.stack([cells(cols, boxes[k, 1], boxes[k, 3], num_cols) for k, _, cols in chunk])
        # float64 samples, so the threshold sees exact bilinear values.
        chunk_masks = masks[[k for k, _, _ in chunk]].astype(np.float64)
        values = bilinear_sample(tf.constant(chunk_masks), tf.constant(y), tf.constant(x)).numpy()
        for value, (k, rows, cols) in zip(values, chunk):
            ymin, xmin, ymax, xmax = boxes[k]
            value = value[:len(rows), :len(cols)]
            # Pixels whose centre is outside the box stay empty.
            inside = (((rows + 0.5 >= ymin) & (rows + 0.5 < ymax))[:, None]
                      & ((cols + 0.5 >= xmin) & (cols + 0.5 < xmax))[None, :])
            pasted[k, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = (value >= threshold) & inside
    return pasted

