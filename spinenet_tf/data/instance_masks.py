"""Instance masks from annotations, checked and repaired: COCO polygons and RLE, PNG masks (TFRecord, TFDS).

Every reader of `sources` yields masks in one layout, that of TFDS `lvis` (and `builtin_shapes`): `objects/
segmentation` uint8 `[G, H, W, 1]`, 0 or 255, one mask per box. Readers turn what they find into it here:

- COCO `segmentation` (`coco_segmentation_to_rle`): polygons `[[x0, y0, x1, y1, ...], ...]`, uncompressed RLE
  `{"size": [h, w], "counts": [...]}` (COCO's crowd annotations) or compressed RLE (`"counts": "..."`) become one
  compressed RLE of the image's size, rasterised by pycocotools (`decode_rles` expands them);
- PNG masks (`decode_png_masks`): Model Garden's `image/object/mask` and TFDS `objects/segmentation`.

What is repaired or skipped (`bad_data.DataStats` kinds, one line each naming the annotation):

- `bad_polygon`: a polygon with fewer than 3 points, an odd number of coordinates, or non-finite ones, is left
  out of its mask (the annotation's other polygons still make it);
- `self_intersecting`: a polygon whose edges cross is kept and filled even-odd, as pycocotools rasterises it (a
  bow tie is two triangles, a pentagram has a hollow centre);
- `mask_clipped`: a polygon that reaches past the image is cut at the image edge (pycocotools rasterises inside
  the image only; vertices more than an image size away are first cut with Sutherland-Hodgman at that margin,
  since pycocotools' buffers grow with the polygon's perimeter);
- `bad_mask`: an annotation without a usable mask -- no segmentation, RLE of another size than the image or with
  counts that do not add up to its pixels (pycocotools would write past its buffer), undecodable PNG, a mask of
  another size, or one with no pixel inside the image -- is dropped, box and all, so no box trains without its
  mask.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from spinenet_tf.data import image_codec

_SELF_INTERSECTION_CHUNK = 256  # edges per block of the pairwise test, to bound its memory on long polygons


def _rle_string_counts(counts: bytes) -> list[int] | None:
    """The run lengths of a compressed COCO RLE string (pycocotools' `rleFrString`, in Python so that a malformed
    string is an answer, not a buffer overrun), or None if it is not one."""
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(counts):
                return None                       # the last run ends mid-number
            char = counts[position] - 48
            if not 0 <= char < 64:
                return None
            value |= (char & 0x1F) << shift
            more = bool(char & 0x20)
            position += 1
            shift += 5
            if not more and char & 0x10:
                value |= -1 << shift              # sign extension
        if len(runs) > 2:
            value += runs[-2]                     # runs after the second are coded against the one two back
        runs.append(value)
    return runs


def _straddles(starts: np.ndarray, steps: np.ndarray, vertices: np.ndarray, following: np.ndarray) -> np.ndarray:
    """`[E, V]`: whether the line of edge e (start + t * step) has vertex v and the vertex after it strictly on
    opposite sides."""
    def side(points):
        return np.sign(steps[:, None, 0] * (points[None, :, 1] - starts[:, None, 1])
                       - steps[:, None, 1] * (points[None, :, 0] - starts[:, None, 0]))

    return side(vertices) * side(following) < 0


def _self_intersects(points: np.ndarray) -> bool:
    """Whether two non-adjacent edges of the closed polygon `points` `[N, 2]` cross (touching does not count)."""
    count = len(points)
    if count < 4:
        return False
    following = np.concatenate([points[1:], points[:1]])     # edge k runs from vertex k to vertex k + 1
    steps = following - points
    for first in range(0, count, _SELF_INTERSECTION_CHUNK):
        rows = slice(first, min(first + _SELF_INTERSECTION_CHUNK, count))
        # Edges i (rows) and j cross when each one's line separates the other's two ends.
        crossing = (_straddles(points[rows], steps[rows], points, following)
                    & _straddles(points, steps, points[rows], following[rows]).T)
        i, j = np.arange(rows.start, rows.stop)[:, None], np.arange(count)[None]
        # Each pair once, not an edge with itself or a neighbour (which share a vertex).
        crossing &= (j > i + 1) & ~((i == 0) & (j == count - 1))
        if crossing.any():
            return True
    return False


def _clip_to_box(points: np.ndarray, low: tuple[float, float], high: tuple[float, float]) -> np.ndarray:
    """Sutherland-Hodgman: the polygon `points` `[N, 2]` (x, y) cut to the box [low, high] (x, y)."""
    for axis in (0, 1):
        for limit, below in ((low[axis], False), (high[axis], True)):
            if not len(points):
                return points
            inside = points[:, axis] <= limit if below else points[:, axis] >= limit
            following = np.roll(points, -1, axis=0)
            crossing = inside != np.roll(inside, -1)
            step = np.where(crossing, following[:, axis] - points[:, axis], 1.0)
            t = np.where(crossing, (limit - points[:, axis]) / step, 0.0)
            cut = points + t[:, None] * (following - points)
            cut[:, axis] = np.where(crossing, limit, cut[:, axis])
            # Each vertex is followed by the edge's cut point when the edge crosses the limit.
            points = np.stack([points, cut], axis=1).reshape(-1, 2)[np.stack([inside, crossing], axis=1).reshape(-1)]
    return points


def _polygons_to_rle(polygons: list, height: int, width: int, name: str, log) -> tuple[dict | None, list[int]]:
    """Checked polygons -> (one merged pycocotools RLE or None when no polygon is usable, the polygons that reach
    past the image)."""
    usable, clipped = [], []
    for k, polygon in enumerate(polygons):
        item = f"{name} polygon {k}"
        # One C-speed check of the numbers (COCO files hold millions): strings, booleans, None, nested lists
        # give another dtype than int or float.
        values = np.asarray(polygon) if isinstance(polygon, list) else None
        if values is None or values.ndim != 1 or values.dtype.kind not in "iuf" or not np.all(np.isfinite(values)):
            log.record("bad_polygon", item, "has non-numeric or non-finite coordinates; left out of the mask")
            continue
        if len(values) < 6 or len(values) % 2:
            log.record("bad_polygon", item, f"has {len(values)} coordinates, not an even count of at least 6 "
                       "(3 points); left out of the mask")
            continue
        points = values.astype(np.float64).reshape(-1, 2)
        if _self_intersects(points):
            log.record("self_intersecting", item, "self-intersects; filled even-odd, as pycocotools rasterises it")
        if np.any(points < 0) or np.any(points > [width, height]):
            clipped.append(k)
            margin = max(height, width)
            if np.any(points < -margin) or np.any(points > [width + margin, height + margin]):
                points = _clip_to_box(points, (-margin, -margin), (width + margin, height + margin))
                if len(points) < 3:
                    continue
        usable.append(points.reshape(-1).tolist())
    if not usable:
        return None, clipped
    # One polygon at a time: frPyObjects reads a list whose first entry has 4 numbers as boxes.
    return mask_utils.merge([mask_utils.frPyObjects([polygon], height, width)[0] for polygon in usable]), clipped


def _rle_to_rle(rle: dict, height: int, width: int, name: str, log) -> dict | None:
    """A checked RLE dict (compressed or not) -> a compressed pycocotools RLE, or None if it is malformed."""
    size, counts = rle.get("size"), rle.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        log.record("bad_mask", name, f"RLE size {size!r} is not [height, width]; dropped")
        return None
    if list(size) != [height, width]:
        log.record("bad_mask", name, f"RLE size {size} is not the image's [{height}, {width}]; dropped")
        return None
    if isinstance(counts, str):
        counts = counts.encode("ascii", "replace")
    if isinstance(counts, bytes):
        runs = _rle_string_counts(counts)
        if runs is None:
            log.record("bad_mask", name, "RLE counts is not a compressed RLE string; dropped")
            return None
    elif isinstance(counts, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
        runs = counts
    else:
        log.record("bad_mask", name, "RLE counts is neither a string nor a list of integers; dropped")
        return None
    if any(run < 0 for run in runs) or sum(runs) != height * width:
        log.record("bad_mask", name, f"RLE runs add up to {sum(runs)} pixels with {sum(r < 0 for r in runs)} "
                   f"negative, not the image's {height * width}; dropped")
        return None
    if isinstance(counts, bytes):
        return {"size": [height, width], "counts": counts}
    return mask_utils.frPyObjects({"size": [height, width], "counts": runs}, height, width)


def coco_segmentation_to_rle(segmentation, height: int, width: int, name: str, log) -> bytes | None:
    """One COCO annotation's `segmentation` -> compressed RLE counts of its `height x width` mask, or None.

    Args:
        segmentation: Polygons (a list of coordinate lists) or an RLE dict, compressed or not.
        height, width: The image's size (what the RLE must say and what polygons are rasterised in).
        name: The annotation in log lines, e.g. "annotation 17 (000000000139.jpg)".
        log: Where repairs are recorded (`DataStats` or anything with its `record(kind, item, message)`).

    Returns:
        pycocotools' compressed counts (bytes) of a mask with at least one pixel, or None (recorded as
        `bad_mask`) when there is no usable mask.
    """
    clipped = []
    if isinstance(segmentation, list) and segmentation and all(isinstance(p, list) for p in segmentation):
        rle, clipped = _polygons_to_rle(segmentation, height, width, name, log)
        if rle is None:
            log.record("bad_mask", name, "no usable polygon; dropped")
            return None
    elif isinstance(segmentation, dict):
        rle = _rle_to_rle(segmentation, height, width, name, log)
        if rle is None:
            return None
    else:
        shown = "none" if segmentation in (None, [], {}) else f"a {type(segmentation).__name__} of another form"
        log.record("bad_mask", name, f"segmentation is {shown}, not polygons or RLE; dropped")
        return None
    if not mask_utils.area(rle):
        log.record("bad_mask", name, f"the mask has no pixel inside the {height}x{width} px image; dropped")
        return None
    if clipped:
        log.record("mask_clipped", name, f"polygon{'s' if len(clipped) > 1 else ''} {', '.join(map(str, clipped))} "
                   f"reach{'es' if len(clipped) == 1 else ''} past the {height}x{width} px image; clipped to it")
    return rle["counts"]


def decode_rles(counts: list[bytes], height: int, width: int) -> np.ndarray:
    """Compressed RLE counts (`coco_segmentation_to_rle`) -> uint8 `[G, H, W, 1]` masks, 0 or 255."""
    if not counts:
        return np.zeros((0, height, width, 1), np.uint8)
    masks = mask_utils.decode([{"size": [height, width], "counts": c} for c in counts])   # [H, W, G], Fortran
    return np.ascontiguousarray(np.transpose(masks, (2, 0, 1))[..., None] * np.uint8(255))


def decode_png_masks(encoded: list[bytes], height: int, width: int, names: list[str], log
                     ) -> tuple[np.ndarray, np.ndarray]:
    """PNG (or any PIL-readable) instance masks -> (uint8 `[K, H, W, 1]` masks 0 or 255, bool `[G]` kept).

    A mask is nonzero where the image is (Model Garden writes 0/1, TFDS 0/255); one that does not decode, is not
    `height x width` or is empty is not kept (`bad_mask`, naming it with `names[k]`).
    """
    masks, kept = [], np.zeros(len(encoded), bool)
    for k, data in enumerate(encoded):
        try:
            with Image.open(io.BytesIO(data)) as image:
                array = np.asarray(image)
        except Exception as e:  # whatever PIL raises: this mask is unusable
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            log.record("bad_mask", names[k], f"cannot decode the mask ({reason}); dropped")
            continue
        array = array[..., 0] if array.ndim == 3 else array
        if array.shape != (height, width):
            log.record("bad_mask", names[k], f"the mask is {'x'.join(map(str, array.shape))}, not the image's "
                       f"{height}x{width}; dropped")
            continue
        if not array.any():
            log.record("bad_mask", names[k], "the mask is empty; dropped")
            continue
        masks.append((array > 0).astype(np.uint8) * np.uint8(255))
        kept[k] = True
    stacked = np.stack(masks)[..., None] if masks else np.zeros((0, height, width, 1), np.uint8)
    return stacked, kept


def encode_png_mask(mask: np.ndarray) -> bytes:
    """A `[H, W]` (or `[H, W, 1]`) mask -> PNG bytes of 0/1 values, as Model Garden's `encode_mask_as_png`."""
    mask = np.asarray(mask)
    mask = mask[..., 0] if mask.ndim == 3 else mask
    return image_codec.encode_image((mask > 0).astype(np.uint8), "png")
