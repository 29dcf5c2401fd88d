"""Helpers shared by the tests of `spinenet_tf.data`'s readers and writers (tests/data/): what the generator
(`builtin_shapes.generate_example`, the golden of every reader) says an example holds, the layouts of `sources`,
hand-written COCO annotations and tf.Example records, and a TFDS mock that serves generator examples through a
dataset's real features. Test files import it as `import data_testing` (tests/conftest.py puts tests/ on sys.path).
"""

import functools
import io
import json
import logging

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image
from pycocotools import mask as mask_utils

from spinenet_tf.data import builtin_shapes as bs
from spinenet_tf.data import tfrecord_writer

SIZE = 128          # COCO / TFRecord test images: a power of two, so normalised boxes are exact in float32
BUILTIN_SIZE = 256  # what `builtin:shapes` generates


def examples(dataset):
    """A dataset's elements as numpy."""
    return list(dataset.as_numpy_iterator())


def by_id(items):
    """Examples by image id (readers that interleave files do not keep the order)."""
    return {int(e["image/id"]): e for e in items}


def assert_matches_generator(example, index, split="validation", size=SIZE, jpeg=False):
    """The example is generator example `index`: pixels (close, if they went through JPEG), id, boxes (exactly,
    normalised), labels."""
    expected = bs.generate_example(index, split, size)
    if jpeg:  # the fine grain costs a few levels; another image would be tens of levels off
        assert example["image"].shape == expected["image"].shape
        assert np.abs(example["image"].astype(int) - expected["image"]).mean() < 5.0
    else:
        np.testing.assert_array_equal(example["image"], expected["image"])
    assert example["image/id"] == expected["image_id"]
    np.testing.assert_array_equal(example["objects"]["bbox"] * size, expected["boxes"])
    np.testing.assert_array_equal(example["objects"]["label"], expected["classes"])
    assert not example["objects"]["is_crowd"].any()


def assert_detection_layout(dataset):
    """The element spec is the detection layout of `sources` (no masks)."""
    spec = dataset.element_spec
    assert spec["image"].dtype == tf.uint8 and spec["image"].shape.as_list()[-1] == 3
    assert spec["image/id"] == tf.TensorSpec([], tf.int64)
    assert set(spec) == {"image", "image/id", "objects"}
    assert spec["objects"] == {"bbox": tf.TensorSpec([None, 4], tf.float32), "label": tf.TensorSpec([None], tf.int64),
                               "is_crowd": tf.TensorSpec([None], tf.bool)}


def assert_classification_layout(dataset):
    """The element spec is the classification layout of `sources`."""
    spec = dataset.element_spec
    assert set(spec) == {"image", "label"}
    assert spec["image"].dtype == tf.uint8 and spec["image"].shape.as_list()[-1] == 3
    assert spec["label"] == tf.TensorSpec([], tf.int64)


def png_bytes(array, **options):
    """PNG bytes of a uint8 array (PIL `save` options)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="png", **options)
    return buffer.getvalue()


def warning_messages(caplog):
    """The WARNING lines logged (`bad_data` logs one per skipped or repaired item)."""
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def coco_as_dataset(count, corrupt_index=None, corrupt_mask_index=None):
    """A `mock_data(as_dataset_fn=...)` that serves generator examples through the dataset's real TFDS features
    (coco/2017's, lvis's): encoded by `FeaturesDict.encode_example` and decoded by `decode_example` with the
    caller's decoders, as TFDS does with its records (the default mock draws object fields of unequal lengths,
    which these datasets never have). Features the dataset lacks are left out (lvis: is_crowd, image/filename);
    `corrupt_mask_index` breaks the PNG of that example's first mask."""

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        del kwargs
        features = full = self.info.features
        if isinstance(decoders, tfds.decode.PartialDecoding):
            features, decoders = decoders.extract_features(full), decoders.decoders
        serialized = features.get_serialized_info()

        def pick(value, spec):  # the features `PartialDecoding` kept
            return {key: pick(value[key], sub) for key, sub in spec.items()} if isinstance(spec, dict) else value

        def generate():
            for index in range(count):
                example = bs.generate_example(index, "validation", SIZE)
                values = {
                    "image": example["image"], "image/id": example["image_id"],
                    "image/filename": f"{example['image_id']:012d}.jpg",
                    "neg_category_ids": [], "not_exhaustive_category_ids": [],
                    "objects": {"bbox": example["boxes"] / SIZE, "label": example["classes"],
                                "is_crowd": np.zeros(len(example["classes"]), bool),
                                "area": example["masks"].sum(axis=(1, 2)),
                                "id": np.arange(len(example["classes"])),
                                "segmentation": example["masks"][..., None] * np.uint8(255)}}
                values = {key: value for key, value in values.items() if key in full}
                values["objects"] = {key: value for key, value in values["objects"].items()
                                     if key in full["objects"].feature}
                encoded = full.encode_example(values)
                if index == corrupt_index:
                    encoded["image"] = b"\xff\xd8\xff\xe0 truncated"
                if index == corrupt_mask_index:
                    encoded["objects"]["segmentation"][0] = b"\x89PNG broken"
                yield pick(encoded, serialized)

        specs = tf.nest.map_structure(lambda info: tf.TensorSpec(info.shape, info.tf_dtype), serialized)
        dataset = tf.data.Dataset.from_generator(generate, output_signature=specs)
        dataset = dataset.map(functools.partial(features.decode_example, decoders=decoders))
        if read_config and read_config.add_tfds_id:
            ids = tf.data.Dataset.range(count).map(lambda i: tf.strings.format(f"coco-{split}.tfrecord__{{}}", i))
            dataset = tf.data.Dataset.zip(dataset, ids).map(lambda example, i: {**example, "tfds_id": i})
        return dataset

    return as_dataset


def assert_masks_of_generator(example, index, size, split="validation"):
    """Boxes, labels and masks are the generator's, masks exactly (0 or 255)."""
    expected = bs.generate_example(index, split, size)
    np.testing.assert_array_equal(example["objects"]["bbox"] * size, expected["boxes"])
    np.testing.assert_array_equal(example["objects"]["label"], expected["classes"])
    masks = example["objects"]["segmentation"]
    assert masks.dtype == np.uint8 and masks.shape == (len(expected["classes"]), size, size, 1)
    np.testing.assert_array_equal(masks[..., 0], expected["masks"] * 255)


def coco_spec(root, annotations="annotations.json"):
    """The `coco:` spec of `root / annotations` and its `root / "images"` folder."""
    return f"coco:{root / annotations}:{root / 'images'}"


def polygon_coco(tmp_path, annotations, count=2):
    """Generator images with hand-written annotations (category 1)."""
    (tmp_path / "images").mkdir(exist_ok=True)
    images = []
    for index in range(count):
        example = bs.generate_example(index, "validation", SIZE)
        Image.fromarray(example["image"]).save(tmp_path / "images" / f"{index}.png")
        images.append({"id": index + 1, "file_name": f"{index}.png", "height": SIZE, "width": SIZE})
    coco = {"images": images, "categories": [{"id": 1, "name": "thing"}], "annotations": annotations}
    (tmp_path / "a.json").write_text(json.dumps(coco))
    return coco, f"coco:{tmp_path / 'a.json'}:{tmp_path / 'images'}"


def annotation(annotation_id, image_id, segmentation, iscrowd=0, bbox=None):
    """A COCO annotation; its bbox and area are pycocotools' of the segmentation unless `bbox` is given."""
    area = 0
    if bbox is None:
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, SIZE, SIZE)) if isinstance(segmentation, list) \
            else mask_utils.frPyObjects(segmentation, SIZE, SIZE)
        bbox, area = mask_utils.toBbox(rle).tolist(), int(mask_utils.area(rle))
    return {"id": annotation_id, "image_id": image_id, "category_id": 1, "iscrowd": iscrowd, "bbox": bbox,
            "area": area, "segmentation": segmentation}


def column_runs(mask):
    """COCO's uncompressed RLE counts of a mask, by numpy (column-major runs, starting with zeros)."""
    flat = mask.flatten(order="F")
    edges = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    return ([] if flat[0] == 0 else [0]) + np.diff(edges).tolist()


def mask_records(count=5):
    """Generator examples 0..count-1 (validation, SIZE) and their instance_segmentation tf.Example records."""
    generated = [bs.generate_example(i, "validation", SIZE) for i in range(count)]
    items = [{"image": e["image"], "image/id": e["image_id"],
              "objects": {"bbox": e["boxes"] / SIZE, "label": e["classes"], "is_crowd": np.zeros(len(e["classes"])),
                          "segmentation": e["masks"][..., None]}} for e in generated]
    return generated, [tfrecord_writer.tf_example(item, "instance_segmentation") for item in items]


def assert_builtin_features(element, index, split, with_masks=True):
    """A `builtin_shapes_dataset` / TFDS `builtin_shapes` element is generator example `index` (256 x 256), with
    every feature of the layout."""
    expected = bs.generate_example(index, split)
    objects = element["objects"]
    np.testing.assert_array_equal(element["image"], expected["image"])
    assert element["image/id"] == expected["image_id"]
    assert element["image/filename"] == f"{expected['image_id']:012d}.png".encode()
    np.testing.assert_array_equal(objects["bbox"] * BUILTIN_SIZE, expected["boxes"])  # multiples of 1/256
    np.testing.assert_array_equal(objects["label"], expected["classes"])
    np.testing.assert_array_equal(objects["area"], expected["masks"].sum(axis=(1, 2)))
    assert not objects["is_crowd"].any()
    np.testing.assert_array_equal(objects["id"], expected["image_id"] * 100 + 1 + np.arange(len(objects["id"])))
    if with_masks:
        np.testing.assert_array_equal(objects["segmentation"][..., 0], expected["masks"] * 255)
