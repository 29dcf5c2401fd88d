"""The built-in shapes (`builtin_shapes`) as a COCO dataset on disk: image files plus one COCO instances JSON
file, the format of users' own data (the `coco:ANNOTATIONS.json:IMAGE_DIR` source) and of pycocotools' COCOeval."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils

from spinenet_tf.data import builtin_shapes, builtin_shapes_dataset, image_codec


def write_coco_json(split: str, path: str | os.PathLike, image_dir: str | os.PathLike,
                    num_examples: int | None = None,
                    image_size: int | Sequence[int] = builtin_shapes.DEFAULT_IMAGE_SIZE,
                    image_format: str = "png") -> dict:
    """Writes detection examples of `split` as image files plus one COCO instances JSON file.

    The JSON has `images` (id, file_name relative to `image_dir`, height, width), `annotations` (id, image_id,
    category_id = class index + 1, bbox `[x, y, w, h]` in pixels, area = visible mask pixels, iscrowd 0,
    segmentation as compressed RLE) and `categories` (ids 1..NUM_CLASSES, names `builtin_shapes.CLASS_NAMES`). It
    loads with `pycocotools.coco.COCO(path)`, for COCOeval, and is the format users have for their own data.

    Args:
        split, num_examples, image_size: As `builtin_shapes_dataset.as_dataset`.
        path: The JSON file to write; its folder is created.
        image_dir: Where images go (created), named f"{image_id:012d}.png" (or ".jpg").
        image_format: "png" (lossless: pixels equal `generate_example`'s) or "jpeg" (quality 95).

    Returns:
        The COCO dict that was written.
    """
    if image_format not in image_codec.EXTENSIONS:
        raise ValueError(f"image_format={image_format!r}: must be 'png' or 'jpeg'")
    extension = image_codec.EXTENSIONS[image_format]
    split = builtin_shapes.canonical_split(split)
    size = builtin_shapes.checked_image_size(image_size)
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    for index in range(builtin_shapes.split_size(split, num_examples)):
        example = builtin_shapes.generate_example(index, split, size)
        features = builtin_shapes_dataset.detection_features(example, with_masks=False)
        file_name = builtin_shapes_dataset.file_name(example["image_id"], extension)
        with open(os.path.join(image_dir, file_name), "wb") as f:
            f.write(image_codec.encode_image(example["image"], image_format))
        images.append({"id": example["image_id"], "file_name": file_name, "height": size[0], "width": size[1]})
        objects = features["objects"]
        for k, (ymin, xmin, ymax, xmax) in enumerate(example["boxes"].tolist()):
            rle = mask_utils.encode(np.asfortranarray(example["masks"][k]))
            annotations.append({
                "id": int(objects["id"][k]), "image_id": example["image_id"],
                "category_id": int(example["classes"][k]) + 1,
                "bbox": [xmin, ymin, xmax - xmin, ymax - ymin], "area": int(objects["area"][k]), "iscrowd": 0,
                "segmentation": {"size": [int(n) for n in rle["size"]], "counts": rle["counts"].decode("ascii")},
            })
    coco = {
        "info": {"description": f"spinenet_tf builtin_shapes, {split} split", "version": "1.0.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"}
                       for i, name in enumerate(builtin_shapes.CLASS_NAMES)],
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(coco, f)
    return coco
