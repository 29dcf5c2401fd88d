"""Data sources: every spec form parses and loads into the one layout; COCO JSON, TFRecord and TFDS readers give
back the generator's boxes and labels; bad data is skipped or repaired with a count and a named log line; bad
specs stop with one line naming the flag.

Golden values come from `builtin_shapes.generate_example` (the generator), from Model Garden's tf.Example
builder and decoder (the oracle for the TFRecord layout), or from pixel arithmetic in the test, never from the
reader under test.
"""

import functools
import io
import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image
from pycocotools import mask as mask_utils

from spinenet_tf.data import builtin_shapes as bs
from spinenet_tf.data import detection_input as di
from spinenet_tf.data import bad_data, sources, tfrecord
from spinenet_tf.detection import anchors as anchors_lib

SIZE = 128          # COCO / TFRecord test images: a power of two, so normalised boxes are exact in float32
BUILTIN_SIZE = 256  # what `builtin:shapes` generates
NUM = 6


def _examples(dataset):
    return list(dataset.as_numpy_iterator())


def _by_id(examples):
    return {int(e["image/id"]): e for e in examples}


def _assert_matches_generator(example, index, split="validation", size=SIZE, jpeg=False):
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


def _assert_detection_layout(dataset):
    spec = dataset.element_spec
    assert spec["image"].dtype == tf.uint8 and spec["image"].shape.as_list()[-1] == 3
    assert spec["image/id"] == tf.TensorSpec([], tf.int64)
    assert set(spec) == {"image", "image/id", "objects"}
    assert spec["objects"] == {"bbox": tf.TensorSpec([None, 4], tf.float32), "label": tf.TensorSpec([None], tf.int64),
                               "is_crowd": tf.TensorSpec([None], tf.bool)}


def _assert_classification_layout(dataset):
    spec = dataset.element_spec
    assert set(spec) == {"image", "label"}
    assert spec["image"].dtype == tf.uint8 and spec["image"].shape.as_list()[-1] == 3
    assert spec["label"] == tf.TensorSpec([], tf.int64)


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    bs.write_coco_json("validation", root / "annotations.json", root / "images", num_examples=NUM, image_size=SIZE)
    return root


def _coco_spec(root, annotations="annotations.json"):
    return f"coco:{root / annotations}:{root / 'images'}"


# === builtin:shapes ===

def test_builtin_detection_is_the_generator_with_slicing():
    source = sources.parse("builtin:shapes:validation[2:5]")
    assert (source.kind, source.name, source.split) == ("builtin", "shapes", "validation[2:5]")
    loaded = sources.load(source, "detection", training=False)
    _assert_detection_layout(loaded.dataset)
    examples = _examples(loaded.dataset)
    assert len(examples) == 3
    for index, example in zip(range(2, 5), examples):
        _assert_matches_generator(example, index, size=BUILTIN_SIZE)
    assert loaded.info == sources.DataInfo(num_classes=6, class_names=bs.CLASS_NAMES, num_examples=3,
                                           category_ids=(1, 2, 3, 4, 5, 6))
    assert loaded.stats.summary() == ""


def test_builtin_defaults_to_train_and_accepts_val():
    assert sources.parse("builtin:shapes").split == "train"
    assert sources.load(sources.parse("builtin:shapes"), "detection", training=False).info.num_examples == 2000
    examples = _examples(sources.load(sources.parse("builtin:shapes:val[:2]"), "detection", training=False).dataset)
    assert [int(e["image/id"]) for e in examples] == [10_000_001, 10_000_002]


def test_builtin_classification_is_the_generator():
    loaded = sources.load(sources.parse("builtin:shapes:train[:3]"), "classification", training=False)
    _assert_classification_layout(loaded.dataset)
    for index, example in enumerate(_examples(loaded.dataset)):
        expected = bs.generate_classification_example(index, "train")
        np.testing.assert_array_equal(example["image"], expected["image"])
        assert example["label"] == expected["label"]


def test_training_order_is_shuffled_reproducibly_and_shards_are_disjoint():
    source = sources.parse("builtin:shapes:validation[:12]")

    def order(**kwargs):
        dataset = sources.load(source, "detection", **kwargs).dataset
        return [int(e["image/id"]) for e in dataset.as_numpy_iterator()]

    plain = order(training=False)
    assert plain == list(range(10_000_001, 10_000_013))
    first, again = order(training=True, seed=5), order(training=True, seed=5)
    assert first == again and first != plain and sorted(first) == plain
    shards = [order(training=True, seed=5, input_context=tf.distribute.InputContext(2, k, 1)) for k in range(2)]
    assert sorted(shards[0] + shards[1]) == plain and not set(shards[0]) & set(shards[1])


# === coco:ANNOTATIONS.json:IMAGE_DIR ===

def test_coco_json_round_trips_to_the_generator(coco_dir):
    source = sources.parse(_coco_spec(coco_dir), flag="--eval_data")
    assert source.annotation_file.endswith("annotations.json") and source.image_dir.endswith("images")
    loaded = sources.load(source, "detection", training=False)
    _assert_detection_layout(loaded.dataset)
    examples = _examples(loaded.dataset)
    assert len(examples) == NUM
    for index, example in enumerate(examples):
        _assert_matches_generator(example, index)
    assert loaded.info.class_names == bs.CLASS_NAMES and loaded.info.category_ids == (1, 2, 3, 4, 5, 6)
    assert loaded.info.num_classes == 6 and loaded.info.num_examples == NUM
    assert loaded.stats.summary() == "" and set(loaded.stats.as_dict()) == set(bad_data.STAT_KINDS)


def test_coco_categories_map_to_contiguous_indices_in_id_order(tmp_path):
    # Sparse, unsorted category ids (COCO's own run 1..90 with gaps): class index = rank of the id.
    image = bs.generate_example(0, "validation", SIZE)
    (tmp_path / "images").mkdir()
    Image.fromarray(image["image"]).save(tmp_path / "images" / "a.png")
    sparse = {0: 90, 1: 7, 2: 13, 3: 42, 4: 3, 5: 55}   # class index in the generator -> category id in the file
    coco = {"images": [{"id": 77, "file_name": "a.png", "height": SIZE, "width": SIZE}],
            "categories": [{"id": cid, "name": f"{bs.CLASS_NAMES[k]}!"} for k, cid in sparse.items()],
            "annotations": [{"id": k + 1, "image_id": 77, "category_id": sparse[int(c)], "iscrowd": int(k == 0),
                             "bbox": [float(b[1]), float(b[0]), float(b[3] - b[1]), float(b[2] - b[0])]}
                            for k, (b, c) in enumerate(zip(image["boxes"], image["classes"]))]}
    (tmp_path / "a.json").write_text(json.dumps(coco))
    loaded = sources.load(sources.parse(f"coco:{tmp_path / 'a.json'}:{tmp_path / 'images'}"), "detection",
                          training=False)
    ids_in_order = sorted(sparse.values())
    assert loaded.info.category_ids == tuple(ids_in_order)
    assert loaded.info.class_names == tuple(f"{bs.CLASS_NAMES[k]}!" for k in
                                            sorted(sparse, key=lambda k: sparse[k]))
    (example,) = _examples(loaded.dataset)
    assert example["image/id"] == 77
    expected = [ids_in_order.index(sparse[int(c)]) for c in image["classes"]]
    np.testing.assert_array_equal(example["objects"]["label"], expected)
    np.testing.assert_array_equal(example["objects"]["is_crowd"], np.arange(len(expected)) == 0)


def test_coco_json_with_jpeg_images_keeps_boxes(tmp_path):
    bs.write_coco_json("train", tmp_path / "a.json", tmp_path / "images", num_examples=2, image_size=SIZE,
                       image_format="jpeg")
    examples = _examples(sources.load(sources.parse(f"coco:{tmp_path / 'a.json'}:{tmp_path / 'images'}"),
                                      "detection", training=False).dataset)
    for index, example in enumerate(examples):
        expected = bs.generate_example(index, "train", SIZE)
        np.testing.assert_array_equal(example["objects"]["bbox"] * SIZE, expected["boxes"])
        # JPEG at quality 95: close to the pixels, not equal.
        assert np.abs(example["image"].astype(int) - expected["image"]).mean() < 3.0


# === Bad data: COCO JSON ===

def _png_bytes(array, **options):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="png", **options)
    return buffer.getvalue()


@pytest.fixture()
def bad_coco(tmp_path):
    """Ten generator images as COCO JSON, then one defect per image (see the test)."""
    count = 10
    coco = bs.write_coco_json("validation", tmp_path / "a.json", tmp_path / "images", num_examples=count,
                              image_size=SIZE)
    files = [tmp_path / "images" / entry["file_name"] for entry in coco["images"]]
    originals = [bs.generate_example(i, "validation", SIZE)["image"] for i in range(count)]
    # 0: corrupt JPEG (truncated), 1: missing, 2: grayscale, 3: RGBA, 4: palette, 5: 16-bit grayscale PNG.
    jpeg = io.BytesIO()
    Image.fromarray(originals[0]).save(jpeg, format="jpeg")
    files[0].write_bytes(jpeg.getvalue()[:len(jpeg.getvalue()) // 2])
    files[1].unlink()
    gray = originals[2][..., 1]
    files[2].write_bytes(_png_bytes(gray))
    files[3].write_bytes(_png_bytes(np.dstack([originals[3], np.full((SIZE, SIZE), 7, np.uint8)])))
    palette_image = Image.fromarray(originals[4]).quantize(colors=16)
    palette_image.save(files[4])
    gray16 = (np.arange(SIZE * SIZE, dtype=np.uint32).reshape(SIZE, SIZE) * 4).astype(np.uint16)
    Image.fromarray(gray16).save(files[5])
    expected_pixels = {
        2: np.repeat(gray[..., None], 3, axis=-1),
        3: originals[3],                                      # alpha dropped
        4: np.array(palette_image.getpalette()[:48], np.uint8).reshape(16, 3)[np.asarray(palette_image)],
        5: np.repeat(np.round(gray16 * (255 / 65535)).astype(np.uint8)[..., None], 3, axis=-1),
    }
    # 6: a box past the right edge, a zero-area box and an unknown category; 7: no annotations at all.
    annotations = coco["annotations"]
    six = [a for a in annotations if a["image_id"] == coco["images"][6]["id"]]
    x, y, w, h = six[0]["bbox"]
    six[0]["bbox"] = [x, y, SIZE + 10 - x, h]
    annotations.append({"id": 900001, "image_id": coco["images"][6]["id"], "category_id": 1,
                        "bbox": [10.0, 10.0, 0.0, 5.0], "area": 0, "iscrowd": 0})
    annotations.append({"id": 900002, "image_id": coco["images"][6]["id"], "category_id": 99,
                        "bbox": [10.0, 10.0, 5.0, 5.0], "area": 25, "iscrowd": 0})
    coco["annotations"] = [a for a in annotations if a["image_id"] != coco["images"][7]["id"]]
    (tmp_path / "a.json").write_text(json.dumps(coco))
    return {"spec": f"coco:{tmp_path / 'a.json'}:{tmp_path / 'images'}", "files": files, "coco": coco,
            "pixels": expected_pixels, "six": six[0]}


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_bad_coco_data_is_skipped_or_repaired_counted_and_named(bad_coco, caplog):
    caplog.set_level(logging.WARNING)
    loaded = sources.load(sources.parse(bad_coco["spec"]), "detection", training=False)
    epochs = [_by_id(_examples(loaded.dataset)) for _ in range(2)]
    assert epochs[0].keys() == epochs[1].keys()
    examples = epochs[0]
    ids = [entry["id"] for entry in bad_coco["coco"]["images"]]
    assert sorted(examples) == ids[2:]                                # 0 (corrupt) and 1 (missing) skipped
    for index in (2, 3, 4, 5):
        np.testing.assert_array_equal(examples[ids[index]]["image"], bad_coco["pixels"][index], err_msg=index)
    for index in (2, 3, 4, 5, 8, 9):                                 # boxes of the converted images are intact
        expected = bs.generate_example(index, "validation", SIZE)
        np.testing.assert_array_equal(examples[ids[index]]["objects"]["bbox"] * SIZE, expected["boxes"])
        np.testing.assert_array_equal(examples[ids[index]]["objects"]["label"], expected["classes"])
    for index in (8, 9):
        _assert_matches_generator(examples[ids[index]], index)
    # Image 6: the generator's boxes, the first one clipped at the right edge; the two bad extras dropped.
    expected = bs.generate_example(6, "validation", SIZE)["boxes"].copy()
    expected[0, 3] = SIZE
    np.testing.assert_array_equal(examples[ids[6]]["objects"]["bbox"] * SIZE, expected)
    assert len(examples[ids[7]]["objects"]["label"]) == 0            # kept as a negative

    assert loaded.stats.as_dict() == {
        "missing_image": 1, "corrupt_image": 1, "size_mismatch": 0, "bad_record": 0, "bad_annotation": 0,
        "unknown_category": 1, "missing_label": 0, "degenerate_box": 1, "box_clipped": 1, "converted_to_rgb": 4,
        "no_annotations": 1, "bad_mask": 0, "bad_polygon": 0, "self_intersecting": 0, "mask_clipped": 0}
    summary = loaded.stats.summary()
    assert "1 undecodable images skipped" in summary and "4 images converted to RGB" in summary
    assert "\n" not in summary
    # One line per item, naming it, however many epochs read it.
    messages = _warnings(caplog)
    files = bad_coco["files"]

    def lines(*fragments):
        return [m for m in messages if all(f in m for f in fragments)]

    assert len(lines(str(files[0]), "cannot decode")) == 1
    assert len(lines(str(files[1]), "cannot read")) == 1
    assert len(lines(str(files[2]), "grayscale image converted to RGB")) == 1
    assert len(lines(str(files[3]), "RGBA image converted")) == 1
    assert len(lines(str(files[4]), "palette image converted")) == 1
    assert len(lines(str(files[5]), "16-bit grayscale image converted")) == 1
    assert len(lines(f"annotation {bad_coco['six']['id']} ", "clipped")) == 1
    assert len(lines("annotation 900001 ", "no area")) == 1
    assert len(lines("annotation 900002 ", "unknown category_id 99")) == 1
    assert all(m.startswith("--train_data: ") for m in messages)


def test_coco_image_of_another_size_than_annotated_is_skipped(tmp_path, caplog):
    coco = bs.write_coco_json("validation", tmp_path / "a.json", tmp_path / "images", num_examples=2,
                              image_size=SIZE)
    path = tmp_path / "images" / coco["images"][0]["file_name"]
    Image.fromarray(np.zeros((SIZE, SIZE // 2, 3), np.uint8)).save(path)
    loaded = sources.load(sources.parse(f"coco:{tmp_path / 'a.json'}:{tmp_path / 'images'}"), "detection",
                          training=False)
    assert list(_by_id(_examples(loaded.dataset))) == [coco["images"][1]["id"]]
    assert loaded.stats.count("size_mismatch") == 1
    assert any(str(path) in m and "128x64" in m and "128x128" in m for m in _warnings(caplog))


def test_coco_file_that_is_not_coco_json_is_one_line(tmp_path):
    (tmp_path / "images").mkdir()
    for text, fragment in [("{not json", "is not JSON"), ('{"annotations": []}', "has no 'images' list"),
                           ('{"images": [], "categories": []}', "needs a 'categories' list")]:
        (tmp_path / "a.json").write_text(text)
        source = sources.parse(f"coco:{tmp_path / 'a.json'}:{tmp_path / 'images'}", flag="--eval_data")
        with pytest.raises(ValueError, match=fragment) as error:
            sources.load(source, "detection", training=False)
        assert str(error.value).startswith(f"--eval_data='coco:{tmp_path / 'a.json'}") and "\n" not in str(error.value)


# === tfrecord:GLOB ===

def test_tfrecord_round_trips_builtin_detection_examples(tmp_path):
    examples = _examples(sources.load(sources.parse("builtin:shapes:validation[:5]"), "detection",
                                      training=False).dataset)
    files = tfrecord.write_tfrecord(examples, tmp_path / "val.tfrecord", "detection", num_shards=2,
                                   class_names=bs.CLASS_NAMES)
    assert [os.path.basename(f) for f in files] == ["val.tfrecord-00000-of-00002", "val.tfrecord-00001-of-00002"]
    loaded = sources.load(sources.parse(f"tfrecord:{tmp_path}/val.tfrecord-*"), "detection", training=False)
    _assert_detection_layout(loaded.dataset)
    read = _by_id(_examples(loaded.dataset))
    assert sorted(read) == list(range(10_000_001, 10_000_006))
    for index, image_id in enumerate(sorted(read)):
        _assert_matches_generator(read[image_id], index, size=BUILTIN_SIZE)
    assert loaded.info.num_classes is None and loaded.stats.summary() == ""


def test_tfrecord_round_trips_classification_examples(tmp_path):
    examples = _examples(sources.load(sources.parse("builtin:shapes:train[:4]"), "classification",
                                      training=False).dataset)
    tfrecord.write_tfrecord(examples, tmp_path / "c.tfrecord", "classification")
    loaded = sources.load(sources.parse(f"tfrecord:{tmp_path / 'c.tfrecord'}"), "classification", training=False)
    _assert_classification_layout(loaded.dataset)
    read = _examples(loaded.dataset)
    assert len(read) == 4
    for index, example in enumerate(read):
        expected = bs.generate_classification_example(index, "train")
        np.testing.assert_array_equal(example["image"], expected["image"])
        assert example["label"] == expected["label"]


def test_tfrecord_shards_by_file_or_by_record(tmp_path):
    examples = _examples(sources.load(sources.parse("builtin:shapes:validation[:6]"), "detection",
                                      training=False).dataset)
    tfrecord.write_tfrecord(examples, tmp_path / "two", "detection", num_shards=2)
    tfrecord.write_tfrecord(examples, tmp_path / "one", "detection")
    everything = list(range(10_000_001, 10_000_007))
    for spec, pipelines in [(f"tfrecord:{tmp_path}/two-*", 2), (f"tfrecord:{tmp_path}/one", 2),
                            (f"tfrecord:{tmp_path}/two-*", 3)]:
        shards = [sorted(_by_id(_examples(sources.load(
            sources.parse(spec), "detection", training=True, seed=1,
            input_context=tf.distribute.InputContext(pipelines, k, 1)).dataset))) for k in range(pipelines)]
        assert sorted(sum(shards, [])) == everything, (spec, pipelines, shards)
        assert all(shards), (spec, pipelines, shards)


@pytest.mark.oracle
def test_tfrecord_layout_is_model_gardens(tmp_path):
    """Records from Model Garden's TfExampleBuilder read back as the generator's examples, and our records decode
    with Model Garden's TfExampleDecoder / classification Decoder to the same values."""
    from official.vision.data import tf_example_builder
    from official.vision.dataloaders import classification_input, tf_example_decoder

    generated = [bs.generate_example(i, "validation", SIZE) for i in range(3)]
    with tf.io.TFRecordWriter(str(tmp_path / "mg.tfrecord")) as writer:
        for example in generated:
            ymin, xmin, ymax, xmax = (example["boxes"] / SIZE).T.tolist()
            builder = tf_example_builder.TfExampleBuilder()
            builder.add_image_matrix_feature(example["image"], image_source_id=str(example["image_id"]).encode())
            builder.add_boxes_feature(xmin, xmax, ymin, ymax, example["classes"].tolist())
            builder.add_ints_feature("image/object/is_crowd", [0] * len(example["classes"]))
            writer.write(builder.example.SerializeToString())
    read = _examples(sources.load(sources.parse(f"tfrecord:{tmp_path / 'mg.tfrecord'}"), "detection",
                                  training=False).dataset)
    for index, example in enumerate(read):
        _assert_matches_generator(example, index)

    decoder = tf_example_decoder.TfExampleDecoder()
    tfrecord.write_tfrecord(read, tmp_path / "ours.tfrecord", "detection")
    for record, example in zip(tf.data.TFRecordDataset(str(tmp_path / "ours.tfrecord")), generated):
        decoded = decoder.decode(record)
        np.testing.assert_array_equal(decoded["image"].numpy(), example["image"])
        assert decoded["source_id"].numpy() == str(example["image_id"]).encode()
        assert (decoded["height"].numpy(), decoded["width"].numpy()) == (SIZE, SIZE)
        np.testing.assert_array_equal(decoded["groundtruth_boxes"].numpy() * SIZE, example["boxes"])
        np.testing.assert_array_equal(decoded["groundtruth_classes"].numpy(), example["classes"])
        assert not decoded["groundtruth_is_crowd"].numpy().any()
        np.testing.assert_allclose(decoded["groundtruth_area"].numpy(),
                                   np.prod(example["boxes"][:, 2:] - example["boxes"][:, :2], axis=1))

    image = bs.generate_classification_example(0, "train")
    tfrecord.write_tfrecord([{"image": image["image"], "label": image["label"]}], tmp_path / "c", "classification")
    decoded = classification_input.Decoder().decode(next(iter(tf.data.TFRecordDataset(str(tmp_path / "c")))))
    assert decoded["image/class/label"].numpy() == image["label"]
    np.testing.assert_array_equal(tf.io.decode_png(decoded["image/encoded"]).numpy(), image["image"])


def test_bad_tfrecords_are_skipped_or_repaired_counted_and_named(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    generated = [bs.generate_example(i, "validation", SIZE) for i in range(6)]
    good = [{"image": e["image"], "image/id": e["image_id"],
             "objects": {"bbox": e["boxes"] / SIZE, "label": e["classes"], "is_crowd": np.zeros(len(e["classes"]))}}
            for e in generated]
    records = [tfrecord.tf_example(example, "detection") for example in good]
    # 1: undecodable image bytes; 2: not a tf.Example; 3: 2 ymins for 1 label; 4: box past the edge, an empty box
    # and a negative label next to a good box.
    corrupt = tf.train.Example.FromString(records[1])
    corrupt.features.feature["image/encoded"].bytes_list.value[0] = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
    records[1] = corrupt.SerializeToString()
    records[2] = b"\x0a\xff\xff not a proto"
    mismatched = tf.train.Example.FromString(records[3])
    mismatched.features.feature["image/object/bbox/ymin"].float_list.value.append(0.5)
    records[3] = mismatched.SerializeToString()
    repaired = dict(good[4], objects={"bbox": np.array([[0.5, 0.5, 1.25, 0.75], [0.2, 0.2, 0.2, 0.4],
                                                        [0.1, 0.1, 0.3, 0.3], [0.1, 0.1, 0.6, 0.6]], np.float32),
                                      "label": np.array([1, 2, 3, -1]), "is_crowd": np.zeros(4, bool)})
    records[4] = tfrecord.tf_example(repaired, "detection")
    with tf.io.TFRecordWriter(str(tmp_path / "bad.tfrecord")) as writer:
        for record in records:
            writer.write(record)
    loaded = sources.load(sources.parse(f"tfrecord:{tmp_path / 'bad.tfrecord'}"), "detection", training=False)
    read = _by_id(_examples(loaded.dataset))
    ids = [e["image_id"] for e in generated]
    assert sorted(read) == [ids[0], ids[4], ids[5]]
    _assert_matches_generator(read[ids[0]], 0)
    _assert_matches_generator(read[ids[5]], 5)
    np.testing.assert_array_equal(read[ids[4]]["objects"]["bbox"],
                                  np.array([[0.5, 0.5, 1.0, 0.75], [0.1, 0.1, 0.3, 0.3]], np.float32))
    np.testing.assert_array_equal(read[ids[4]]["objects"]["label"], [1, 3])
    counts = loaded.stats.as_dict()
    assert (counts["corrupt_image"], counts["bad_record"], counts["bad_annotation"], counts["box_clipped"],
            counts["degenerate_box"], counts["unknown_category"]) == (1, 1, 1, 1, 1, 1)
    messages = _warnings(caplog)
    path = str(tmp_path / "bad.tfrecord")
    assert any(f"{path} record 1 (source_id {ids[1]})" in m and "cannot decode" in m for m in messages)
    assert any(f"{path} record 2" in m and "not a tf.Example" in m for m in messages)
    assert any(f"{path} record 3 (source_id {ids[3]})" in m and "different lengths" in m for m in messages)
    assert any(f"record 4 (source_id {ids[4]}) box 0" in m and "clipped" in m for m in messages)
    assert any(f"record 4 (source_id {ids[4]}) box 1" in m and "no area" in m for m in messages)
    assert any(f"record 4 (source_id {ids[4]}) box 3" in m and "label -1" in m for m in messages)


def test_a_record_with_a_bad_checksum_ends_its_file_not_the_run(tmp_path):
    examples = [{"image": np.full((8, 8, 3), k, np.uint8), "label": k} for k in range(6)]
    first, second = tfrecord.write_tfrecord(examples, tmp_path / "c", "classification", num_shards=2)
    data = bytearray(open(second, "rb").read())
    data[len(data) // 2] ^= 0xFF        # inside record 1 of 3 of the second file (labels 1, 3, 5)
    open(second, "wb").write(bytes(data))
    loaded = sources.load(sources.parse(f"tfrecord:{tmp_path}/c-*"), "classification", training=False)
    labels = sorted(int(e["label"]) for e in _examples(loaded.dataset))
    assert labels == [0, 1, 2, 4]       # the first file whole, the second up to the bad record


def test_num_classes_drops_labels_beyond_it(tmp_path):
    example = bs.generate_example(0, "validation", SIZE)
    labels = np.arange(len(example["classes"])) + 4          # 4, 5, 6, ...: with num_classes=6, 6+ are unknown
    tfrecord.write_tfrecord([{"image": example["image"], "image/id": 1,
                             "objects": {"bbox": example["boxes"] / SIZE, "label": labels}}], tmp_path / "r",
                           "detection")
    loaded = sources.load(sources.parse(f"tfrecord:{tmp_path / 'r'}"), "detection", training=False, num_classes=6)
    (read,) = _examples(loaded.dataset)
    np.testing.assert_array_equal(read["objects"]["label"], labels[labels < 6])
    assert loaded.stats.count("unknown_category") == int(np.sum(labels >= 6))


# === tfds:NAME[:split] (tfds.testing.mock_data; no data is downloaded) ===

def _coco_as_dataset(count, corrupt_index=None, corrupt_mask_index=None):
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


def test_tfds_coco_2017_reads_the_generator_examples(caplog):
    caplog.set_level(logging.WARNING)
    with tfds.testing.mock_data(as_dataset_fn=_coco_as_dataset(4, corrupt_index=2)):
        source = sources.parse("tfds:coco/2017:validation", flag="--eval_data")
        assert (source.name, source.split) == ("coco/2017", "validation")
        loaded = sources.load(source, "detection", training=False)
        _assert_detection_layout(loaded.dataset)
        read = _examples(loaded.dataset)
    assert [int(e["image/id"]) for e in read] == [10_000_001, 10_000_002, 10_000_004]
    for index, example in zip((0, 1, 3), read):
        _assert_matches_generator(example, index, jpeg=True)  # TFDS coco/2017 stores JPEG
    assert loaded.info.num_classes == 80 and len(loaded.info.class_names) == 80
    assert loaded.stats.count("corrupt_image") == 1
    assert any("coco/2017:validation coco-validation.tfrecord__2 (000010000003.jpg)" in m and "cannot decode" in m
               for m in _warnings(caplog))


@pytest.mark.parametrize("spec", ["tfds:imagenet2012", "tfds:imagenet2012:validation[:3]",
                                  "tfds:i_naturalist2017:validation"])
def test_tfds_classification_with_mock_data(spec):
    # imagenet2012's and i_naturalist2017's metadata are not in the TFDS package: mock_data falls back to
    # MockPolicy.USE_CODE (features from the builder's code), random JPEG / PNG images, labels in range.
    with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
        loaded = sources.load(sources.parse(spec), "classification", training=True, seed=0)
        _assert_classification_layout(loaded.dataset)
        read = _examples(loaded.dataset)
    assert len(read) == 3
    expected_classes = 1000 if "imagenet" in spec else 5089
    assert loaded.info.num_classes == expected_classes and len(loaded.info.class_names) == expected_classes
    assert all(0 <= e["label"] < expected_classes and e["image"].ndim == 3 and e["image"].size for e in read)
    assert loaded.stats.summary() == ""


def test_tfds_dataset_that_is_not_prepared_is_one_line(tmp_path):
    source = sources.parse("tfds:imagenet2012:validation", flag="--eval_data")
    with pytest.raises(ValueError, match=r"^--eval_data='tfds:imagenet2012:validation': TFDS dataset imagenet2012 "
                                         r"is not prepared in .*") as error:
        sources.load(source, "classification", training=False, data_dir=str(tmp_path))
    assert "\n" not in str(error.value)


def test_tfds_parse_keeps_a_version_apart_from_the_split():
    source = sources.parse("tfds:coco/2017:1.1.0:validation[:10]")
    assert (source.name, source.split) == ("coco/2017:1.1.0", "validation[:10]")
    assert sources.parse("tfds:coco/2017").split == "train"


# === Every detection source through DetectionInput ===

def _detection_sources(tmp_path):
    bs.write_coco_json("validation", tmp_path / "a.json", tmp_path / "images", num_examples=2, image_size=SIZE)
    examples = _examples(bs.as_dataset("validation", num_examples=2, image_size=SIZE))
    tfrecord.write_tfrecord(examples, tmp_path / "r.tfrecord", "detection")
    return [("builtin:shapes:validation[:2]", BUILTIN_SIZE),
            (f"coco:{tmp_path / 'a.json'}:{tmp_path / 'images'}", SIZE),
            (f"tfrecord:{tmp_path / 'r.tfrecord'}", SIZE),
            ("tfds:coco/2017:validation", SIZE)]


def test_every_detection_source_feeds_detection_input(tmp_path):
    # One layout: the four sources concatenate into one dataset, and one parser serves them all. No scale jitter:
    # at a random 0.5x, about 3% of these images keep no object large enough to match an anchor.
    config = di.DetectionInputConfig((128, 128), max_instances=8, aug_scale_min=1.0, aug_scale_max=1.0)
    anchors = anchors_lib.concat_anchors(anchors_lib.generate_anchors(3, 7, 3, [0.5, 1.0, 2.0], 4.0, (128, 128)))
    parser = di.DetectionInput(config, anchors)
    with tfds.testing.mock_data(as_dataset_fn=_coco_as_dataset(2)):
        specs, sizes = zip(*_detection_sources(tmp_path))
        loaded = [sources.load(sources.parse(spec), "detection", training=False).dataset for spec in specs]
        dataset = functools.reduce(tf.data.Dataset.concatenate, loaded)
        images, targets = next(iter(dataset.map(parser.train_fn).batch(8)))
        assert images.shape == (8, 128, 128, 3) and images.dtype == tf.float32
        assert np.all(np.any(targets["positive"].numpy(), axis=1))     # every image has matched anchors
        images, labels = next(iter(dataset.map(parser.eval_fn).batch(8)))
    for b in range(8):
        spec, size = specs[b // 2], sizes[b // 2]
        expected = bs.generate_example(b % 2, "validation", size)
        count = len(expected["classes"])
        assert int(labels["image_id"][b]) == expected["image_id"], spec
        np.testing.assert_allclose(labels["gt_boxes"][b, :count].numpy(), expected["boxes"], atol=1e-4, err_msg=spec)
        np.testing.assert_array_equal(labels["gt_classes"][b, :count].numpy(), expected["classes"], err_msg=spec)
        assert np.all(labels["gt_classes"][b, count:].numpy() == -1), spec


# === Instance masks (task "instance_segmentation") ===

def _assert_masks_of_generator(example, index, size, split="validation"):
    """Boxes, labels and masks are the generator's, masks exactly (0 or 255)."""
    expected = bs.generate_example(index, split, size)
    np.testing.assert_array_equal(example["objects"]["bbox"] * size, expected["boxes"])
    np.testing.assert_array_equal(example["objects"]["label"], expected["classes"])
    masks = example["objects"]["segmentation"]
    assert masks.dtype == np.uint8 and masks.shape == (len(expected["classes"]), size, size, 1)
    np.testing.assert_array_equal(masks[..., 0], expected["masks"] * 255)


def test_every_source_yields_the_generators_masks(tmp_path):
    # builtin: the generator itself; coco: compressed RLE of its masks; tfrecord: image/object/mask PNGs written
    # by coco_to_tfrecord from that JSON; tfds: lvis's objects/segmentation PNGs.
    bs.write_coco_json("validation", tmp_path / "a.json", tmp_path / "images", num_examples=3, image_size=SIZE)
    files = tfrecord.coco_to_tfrecord(str(tmp_path / "a.json"), str(tmp_path / "images"), tmp_path / "r.tfrecord",
                                      image_format="png", task="instance_segmentation")
    specs = [("builtin:shapes:validation[:3]", BUILTIN_SIZE), (_coco_spec(tmp_path, "a.json"), SIZE),
             (f"tfrecord:{files[0]}", SIZE), ("tfds:lvis:validation", SIZE)]
    with tfds.testing.mock_data(as_dataset_fn=_coco_as_dataset(3)):
        for spec, size in specs:
            loaded = sources.load(sources.parse(spec), "instance_segmentation", training=False)
            spec_objects = loaded.dataset.element_spec["objects"]
            assert set(spec_objects) == {"bbox", "label", "is_crowd", "segmentation"}, spec
            assert spec_objects["segmentation"].dtype == tf.uint8 and spec_objects["segmentation"].shape.rank == 4
            examples = _examples(loaded.dataset)
            assert len(examples) == 3, spec
            for index, example in enumerate(examples):
                _assert_masks_of_generator(example, index, size)
            assert loaded.stats.summary() == "", spec
            # Boxes-only loads of the same sources carry no masks.
            assert "segmentation" not in sources.load(sources.parse(spec), "detection",
                                                      training=False).dataset.element_spec["objects"]


def _polygon_coco(tmp_path, annotations, count=2):
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


def _annotation(annotation_id, image_id, segmentation, iscrowd=0, bbox=None):
    """A COCO annotation; its bbox and area are pycocotools' of the segmentation unless `bbox` is given."""
    area = 0
    if bbox is None:
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, SIZE, SIZE)) if isinstance(segmentation, list) \
            else mask_utils.frPyObjects(segmentation, SIZE, SIZE)
        bbox, area = mask_utils.toBbox(rle).tolist(), int(mask_utils.area(rle))
    return {"id": annotation_id, "image_id": image_id, "category_id": 1, "iscrowd": iscrowd, "bbox": bbox,
            "area": area, "segmentation": segmentation}


def _column_runs(mask):
    """COCO's uncompressed RLE counts of a mask, by numpy (column-major runs, starting with zeros)."""
    flat = mask.flatten(order="F")
    edges = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    return ([] if flat[0] == 0 else [0]) + np.diff(edges).tolist()


def test_coco_polygons_and_crowd_rle_are_the_annotations_rasterisation(tmp_path):
    star = [64, 10, 74, 40, 105, 40, 80, 58, 90, 90, 64, 70, 38, 90, 48, 58, 23, 40, 54, 40]
    crowd = np.zeros((SIZE, SIZE), np.uint8)
    crowd[5:30, 90:125] = 1
    crowd[100:120, 0:20] = 1
    square = np.zeros((SIZE, SIZE), np.uint8)
    square[70:100, 20:60] = 1
    _, spec = _polygon_coco(tmp_path, [
        _annotation(1, 1, [star, [100, 100, 120, 100, 120, 125, 100, 125]]),
        _annotation(2, 1, {"size": [SIZE, SIZE], "counts": _column_runs(crowd)}, iscrowd=1),
        _annotation(3, 2, [[20, 70, 60, 70, 60, 100, 20, 100]])])
    loaded = sources.load(sources.parse(spec), "instance_segmentation", training=False)
    first, second = _examples(loaded.dataset)
    star_mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([star], SIZE, SIZE)))
    rectangle = np.zeros((SIZE, SIZE), np.uint8)
    rectangle[100:125, 100:120] = 1
    np.testing.assert_array_equal(first["objects"]["segmentation"][..., 0] // 255,
                                  [np.maximum(star_mask, rectangle), crowd])
    np.testing.assert_array_equal(first["objects"]["is_crowd"], [False, True])
    np.testing.assert_array_equal(second["objects"]["segmentation"][..., 0] // 255, [square])
    assert loaded.stats.summary() == ""


@pytest.fixture()
def bad_mask_coco(tmp_path):
    """One good polygon, and one defect per annotation after it (see the test)."""
    good = [10, 10, 40, 10, 40, 30, 10, 30]
    bow_tie = [60, 60, 90, 90, 90, 60, 60, 90]
    annotations = [
        _annotation(1, 1, [good]),
        _annotation(2, 1, [[1, 2, 3, 4], good], bbox=[10, 10, 30, 20]),             # a 2-point polygon left out
        _annotation(3, 1, [bow_tie]),                                               # self-intersecting, kept
        _annotation(4, 1, [[100, 100, 140, 100, 140, 120, 100, 120]], bbox=[100, 100, 40, 20]),  # past the edge
        _annotation(5, 1, [], bbox=[5, 5, 10, 10]),                                 # no segmentation
        _annotation(6, 1, {"size": [SIZE, SIZE], "counts": [10, 20]}, bbox=[5, 5, 10, 10]),   # runs too short
        _annotation(7, 2, {"size": [64, 64], "counts": [4096]}, bbox=[5, 5, 10, 10]),          # another size
        _annotation(8, 2, {"size": [SIZE, SIZE], "counts": "!!bad"}, bbox=[5, 5, 10, 10]),      # not RLE
        _annotation(9, 2, [[200, 200, 220, 200, 220, 220]], bbox=[5, 5, 10, 10]),   # all outside the image
        _annotation(10, 2, [good], iscrowd=1),
    ]
    return _polygon_coco(tmp_path, annotations)


def test_bad_coco_masks_are_repaired_or_dropped_counted_and_named(bad_mask_coco, caplog):
    caplog.set_level(logging.WARNING)
    coco, spec = bad_mask_coco
    loaded = sources.load(sources.parse(spec), "instance_segmentation", training=False)
    epochs = [_examples(loaded.dataset) for _ in range(2)]
    first, second = epochs[0]
    good = np.zeros((SIZE, SIZE), np.uint8)
    good[10:30, 10:40] = 1
    bow_tie = mask_utils.decode(mask_utils.frPyObjects([coco["annotations"][2]["segmentation"][0]], SIZE, SIZE)[0])
    past = np.zeros((SIZE, SIZE), np.uint8)
    past[100:120, 100:128] = 1
    np.testing.assert_array_equal(first["objects"]["segmentation"][..., 0] // 255, [good, good, bow_tie, past])
    np.testing.assert_array_equal(second["objects"]["segmentation"][..., 0] // 255, [good])   # the crowd one
    np.testing.assert_array_equal(second["objects"]["is_crowd"], [True])
    counts = loaded.stats.as_dict()
    assert (counts["bad_polygon"], counts["self_intersecting"], counts["mask_clipped"], counts["bad_mask"],
            counts["box_clipped"]) == (1, 1, 1, 5, 1)
    messages = _warnings(caplog)

    def one_line(*fragments):
        return len([m for m in messages if all(f in m for f in fragments)]) == 1

    assert one_line("annotation 2 (0.png) polygon 0", "4 coordinates")
    assert one_line("annotation 3 (0.png) polygon 0", "self-intersects")
    assert one_line("annotation 4 (0.png)", "polygon 0 reaches past the 128x128 px image; clipped")
    assert one_line("annotation 5 (0.png)", "segmentation is none")
    assert one_line("annotation 6 (0.png)", "RLE runs add up to 30 pixels")
    assert one_line("annotation 7 (1.png)", "RLE size [64, 64] is not the image's [128, 128]")
    assert one_line("annotation 8 (1.png)", "not a compressed RLE string")
    assert one_line("annotation 9 (1.png)", "no pixel inside the 128x128 px image")
    # The same file read for boxes only keeps every box and looks at no mask.
    boxes_only = sources.load(sources.parse(spec), "detection", training=False)
    assert [len(e["objects"]["label"]) for e in _examples(boxes_only.dataset)] == [6, 4]
    assert not any(boxes_only.stats.count(kind) for kind in ("bad_mask", "bad_polygon", "self_intersecting",
                                                             "mask_clipped"))


def _mask_records(count=5):
    generated = [bs.generate_example(i, "validation", SIZE) for i in range(count)]
    examples = [{"image": e["image"], "image/id": e["image_id"],
                 "objects": {"bbox": e["boxes"] / SIZE, "label": e["classes"], "is_crowd": np.zeros(len(e["classes"])),
                             "segmentation": e["masks"][..., None]}} for e in generated]
    return generated, [tfrecord.tf_example(example, "instance_segmentation") for example in examples]


def test_bad_tfrecord_masks_are_skipped_counted_and_named(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    generated, records = _mask_records()
    ids = [e["image_id"] for e in generated]
    # 1: one mask fewer than boxes (record skipped); 2: mask 0 undecodable, mask 1 of another size (instances
    # dropped); 3: no masks at all (skipped, but fine for a boxes-only load).
    def edit(k, change):
        example = tf.train.Example.FromString(records[k])
        change(example.features.feature["image/object/mask"].bytes_list.value)
        records[k] = example.SerializeToString()

    edit(1, lambda masks: masks.pop())
    edit(2, lambda masks: (masks.__setitem__(0, b"\x89PNG broken"),
                           masks.__setitem__(1, _png_bytes(np.ones((SIZE, SIZE // 2), np.uint8)))))
    edit(3, lambda masks: masks.__delitem__(slice(None)))
    with tf.io.TFRecordWriter(str(tmp_path / "m.tfrecord")) as writer:
        for record in records:
            writer.write(record)
    spec = f"tfrecord:{tmp_path / 'm.tfrecord'}"
    loaded = sources.load(sources.parse(spec), "instance_segmentation", training=False)
    read = _by_id(_examples(loaded.dataset))
    assert sorted(read) == [ids[0], ids[2], ids[4]]
    _assert_masks_of_generator(read[ids[0]], 0, SIZE)
    _assert_masks_of_generator(read[ids[4]], 4, SIZE)
    expected = bs.generate_example(2, "validation", SIZE)
    np.testing.assert_array_equal(read[ids[2]]["objects"]["segmentation"][..., 0], expected["masks"][2:] * 255)
    np.testing.assert_array_equal(read[ids[2]]["objects"]["bbox"] * SIZE, expected["boxes"][2:])
    assert (loaded.stats.count("bad_annotation"), loaded.stats.count("bad_mask")) == (2, 2)
    messages = _warnings(caplog)
    path = str(tmp_path / "m.tfrecord")
    count = len(generated[1]["classes"])
    assert any(f"{path} record 1 (source_id {ids[1]})" in m and f"{count} boxes but {count - 1} image/object/mask"
               in m for m in messages)
    assert any(f"record 2 (source_id {ids[2]}) box 0" in m and "cannot decode the mask" in m for m in messages)
    assert any(f"record 2 (source_id {ids[2]}) box 1" in m and "the mask is 128x64" in m for m in messages)
    assert any(f"record 3 (source_id {ids[3]})" in m and "but 0 image/object/mask" in m for m in messages)
    assert len(_examples(sources.load(sources.parse(spec), "detection", training=False).dataset)) == 5


@pytest.mark.oracle
def test_tfrecord_masks_are_model_gardens(tmp_path):
    """Model Garden's COCO converter (create_tf_example, include_masks) writes records whose masks we read as the
    annotations' rasterisation; our records decode with MG's TfExampleDecoder(include_mask=True) to the
    generator's masks."""
    from official.vision.data import create_coco_tf_record
    from official.vision.dataloaders import tf_example_decoder

    crowd = np.zeros((SIZE, SIZE), np.uint8)
    crowd[40:60, 70:110] = 1
    polygons = [[10, 10, 40, 12, 30, 50, 12, 40], [60, 5, 90, 5, 75, 30]]
    coco, _ = _polygon_coco(tmp_path, [_annotation(1, 1, [polygons[0]]), _annotation(2, 1, [polygons[1]]),
                                       _annotation(3, 1, {"size": [SIZE, SIZE], "counts": _column_runs(crowd)},
                                                   iscrowd=1)], count=1)
    example, skipped = create_coco_tf_record.create_tf_example(
        coco["images"][0], [str(tmp_path / "images")], bbox_annotations=coco["annotations"],
        id_to_name_map={1: "thing"}, include_masks=True)
    assert skipped == 0
    tfrecord_file = tmp_path / "mg.tfrecord"
    with tf.io.TFRecordWriter(str(tfrecord_file)) as writer:
        writer.write(example.SerializeToString())
    (read,) = _examples(sources.load(sources.parse(f"tfrecord:{tfrecord_file}"), "instance_segmentation",
                                     training=False).dataset)
    expected = [mask_utils.decode(mask_utils.frPyObjects([p], SIZE, SIZE)[0]) for p in polygons] + [crowd]
    np.testing.assert_array_equal(read["objects"]["segmentation"][..., 0] // 255, expected)
    np.testing.assert_array_equal(read["objects"]["is_crowd"], [False, False, True])

    generated, records = _mask_records(2)
    decoder = tf_example_decoder.TfExampleDecoder(include_mask=True)
    for record, truth in zip(records, generated):
        decoded = decoder.decode(tf.constant(record))
        np.testing.assert_array_equal(decoded["groundtruth_instance_masks"].numpy(), truth["masks"])
        np.testing.assert_array_equal(decoded["groundtruth_area"].numpy(), truth["masks"].sum(axis=(1, 2)))


def test_tfds_masks_bad_pngs_are_dropped_and_coco_2017_has_none(caplog):
    caplog.set_level(logging.WARNING)
    with tfds.testing.mock_data(as_dataset_fn=_coco_as_dataset(2, corrupt_mask_index=1)):
        loaded = sources.load(sources.parse("tfds:lvis:validation"), "instance_segmentation", training=False)
        first, second = _examples(loaded.dataset)
        with pytest.raises(ValueError, match=r"^--eval_data='tfds:coco/2017': TFDS dataset coco/2017 has no "
                                             r"objects/segmentation \(instance masks\); for COCO masks read its "
                                             r"instances_\*.json with coco:ANNOTATIONS.json:IMAGE_DIR$"):
            sources.load(sources.parse("tfds:coco/2017", flag="--eval_data"), "instance_segmentation",
                         training=False)
    _assert_masks_of_generator(first, 0, SIZE)
    expected = bs.generate_example(1, "validation", SIZE)
    np.testing.assert_array_equal(second["objects"]["segmentation"][..., 0], expected["masks"][1:] * 255)
    np.testing.assert_array_equal(second["objects"]["bbox"] * SIZE, expected["boxes"][1:])
    assert loaded.stats.count("bad_mask") == 1
    assert any("lvis:validation coco-validation.tfrecord__1 box 0" in m and "cannot decode the mask" in m
               for m in _warnings(caplog))


# === Bad specs: one line naming the flag ===

@pytest.mark.parametrize("spec, fragment", [
    ("", "unknown data source; valid forms are builtin:shapes[:split], tfds:NAME[:split], "
         "coco:ANNOTATIONS.json:IMAGE_DIR, tfrecord:GLOB"),
    ("shapes", "unknown data source; valid forms are"),
    ("s3:bucket/x", "unknown data source; valid forms are"),
    ("builtin:", "nothing after 'builtin'; expected builtin:shapes[:split]"),
    ("builtin:circles", "unknown built-in dataset 'circles'; valid: shapes"),
    ("builtin:shapes:test", "bad split 'test'"),
    ("builtin:shapes:train[:x]", "bad split 'train[:x]'"),
    ("builtin:shapes:train[5000:]", "bad split 'train[5000:]'"),
    ("builtin:shapes:train+validation", "one split at a time"),
    ("tfds:no_such_dataset_anywhere", "unknown TFDS dataset 'no_such_dataset_anywhere'"),
    ("tfds:coco/2099", "unknown TFDS dataset 'coco/2099'"),
    ("tfds:coco/2017:valid ation", "bad split 'valid ation'"),
    ("coco:x.json:imgs", "annotation file x.json does not exist"),
    ("coco:annotations.json", "expected coco:ANNOTATIONS.json:IMAGE_DIR"),
    ("tfrecord:/no/such/dir/*.tfrecord", "no files match '/no/such/dir/*.tfrecord'"),
])
def test_bad_specs_are_one_line_naming_the_flag(spec, fragment):
    with pytest.raises(ValueError) as error:
        sources.parse(spec, flag="--train_data")
    message = str(error.value)
    assert message.startswith(f"--train_data={spec!r}: ") and fragment in message and "\n" not in message


def test_missing_image_folder_and_wrong_task_name_the_flag(coco_dir, tmp_path):
    with pytest.raises(ValueError, match=r"^--eval_data='coco:.*': image folder .*nowhere does not exist$"):
        sources.parse(f"coco:{coco_dir / 'annotations.json'}:{tmp_path / 'nowhere'}", flag="--eval_data")
    with pytest.raises(ValueError, match=r"^--train_data='coco:.*': COCO annotation files hold detection data"):
        sources.load(sources.parse(_coco_spec(coco_dir)), "classification", training=True)
    with pytest.raises(ValueError, match=r"^--train_data='tfds:imagenet2012': TFDS dataset imagenet2012 has no "
                                         r"objects/bbox"):
        with tfds.testing.mock_data(num_examples=1, policy=tfds.testing.MockPolicy.USE_CODE):
            sources.load(sources.parse("tfds:imagenet2012"), "detection", training=False)
    with pytest.raises(ValueError, match="task='segmentation'"):
        sources.load(sources.parse("builtin:shapes"), "segmentation", training=False)


# === DataStats ===

def test_data_stats_count_each_item_once_from_many_threads():
    import concurrent.futures

    stats = bad_data.DataStats("--x", max_logged=3)
    items = [f"file{k % 50}" for k in range(1000)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        new = list(pool.map(lambda item: stats.record("corrupt_image", item, "bad", log=False), items))
    assert sum(new) == 50 and stats.count("corrupt_image") == 50
    assert stats.summary() == "50 undecodable images skipped"
    with pytest.raises(ValueError, match="unknown DataStats kind 'oops'"):
        stats.record("oops", "x")
