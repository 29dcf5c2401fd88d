"""The `tfrecord:GLOB` source (`tfrecord_reader`): records round-trip to the generator's examples, shard by file
or by record, and read Model Garden's records (its TfExampleBuilder and COCO converter are the oracle); bad records,
boxes and masks are skipped or repaired, counted and named once."""

import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from pycocotools import mask as mask_utils

import data_testing
from spinenet_tf.data import builtin_shapes as bs
from spinenet_tf.data import sources, tfrecord_writer

SIZE = data_testing.SIZE
BUILTIN_SIZE = data_testing.BUILTIN_SIZE


def test_tfrecord_round_trips_builtin_detection_examples(tmp_path):
    examples = data_testing.examples(sources.load(sources.parse("builtin:shapes:validation[:5]"), "detection",
                                                  training=False).dataset)
    files = tfrecord_writer.write_tfrecord(examples, tmp_path / "val.tfrecord", "detection", num_shards=2,
                                          class_names=bs.CLASS_NAMES)
    assert [os.path.basename(f) for f in files] == ["val.tfrecord-00000-of-00002", "val.tfrecord-00001-of-00002"]
    loaded = sources.load(sources.parse(f"tfrecord:{tmp_path}/val.tfrecord-*"), "detection", training=False)
    data_testing.assert_detection_layout(loaded.dataset)
    read = data_testing.by_id(data_testing.examples(loaded.dataset))
    assert sorted(read) == list(range(10_000_001, 10_000_006))
    for index, image_id in enumerate(sorted(read)):
        data_testing.assert_matches_generator(read[image_id], index, size=BUILTIN_SIZE)
    assert loaded.info.num_classes is None and loaded.stats.summary() == ""


def test_tfrecord_round_trips_classification_examples(tmp_path):
    examples = data_testing.examples(sources.load(sources.parse("builtin:shapes:train[:4]"), "classification",
                                                  training=False).dataset)
    tfrecord_writer.write_tfrecord(examples, tmp_path / "c.tfrecord", "classification")
    loaded = sources.load(sources.parse(f"tfrecord:{tmp_path / 'c.tfrecord'}"), "classification", training=False)
    data_testing.assert_classification_layout(loaded.dataset)
    read = data_testing.examples(loaded.dataset)
    assert len(read) == 4
    for index, example in enumerate(read):
        expected = bs.generate_classification_example(index, "train")
        np.testing.assert_array_equal(example["image"], expected["image"])
        assert example["label"] == expected["label"]


def test_tfrecord_shards_by_file_or_by_record(tmp_path):
    examples = data_testing.examples(sources.load(sources.parse("builtin:shapes:validation[:6]"), "detection",
                                                  training=False).dataset)
    tfrecord_writer.write_tfrecord(examples, tmp_path / "two", "detection", num_shards=2)
    tfrecord_writer.write_tfrecord(examples, tmp_path / "one", "detection")
    everything = list(range(10_000_001, 10_000_007))
    for spec, pipelines in [(f"tfrecord:{tmp_path}/two-*", 2), (f"tfrecord:{tmp_path}/one", 2),
                            (f"tfrecord:{tmp_path}/two-*", 3)]:
        shards = [sorted(data_testing.by_id(data_testing.examples(sources.load(
            sources.parse(spec), "detection", training=True, seed=1,
            input_context=tf.distribute.InputContext(pipelines, k, 1)).dataset))) for k in range(pipelines)]
        assert sorted(sum(shards, [])) == everything, (spec, pipelines, shards)
        assert all(shards), (spec, pipelines, shards)


def test_bad_tfrecords_are_skipped_or_repaired_counted_and_named(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    generated = [bs.generate_example(i, "validation", SIZE) for i in range(6)]
    good = [{"image": e["image"], "image/id": e["image_id"],
             "objects": {"bbox": e["boxes"] / SIZE, "label": e["classes"], "is_crowd": np.zeros(len(e["classes"]))}}
            for e in generated]
    records = [tfrecord_writer.tf_example(example, "detection") for example in good]
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
    records[4] = tfrecord_writer.tf_example(repaired, "detection")
    with tf.io.TFRecordWriter(str(tmp_path / "bad.tfrecord")) as writer:
        for record in records:
            writer.write(record)
    loaded = sources.load(sources.parse(f"tfrecord:{tmp_path / 'bad.tfrecord'}"), "detection", training=False)
    read = data_testing.by_id(data_testing.examples(loaded.dataset))
    ids = [e["image_id"] for e in generated]
    assert sorted(read) == [ids[0], ids[4], ids[5]]
    data_testing.assert_matches_generator(read[ids[0]], 0)
    data_testing.assert_matches_generator(read[ids[5]], 5)
    np.testing.assert_array_equal(read[ids[4]]["objects"]["bbox"],
                                  np.array([[0.5, 0.5, 1.0, 0.75], [0.1, 0.1, 0.3, 0.3]], np.float32))
    np.testing.assert_array_equal(read[ids[4]]["objects"]["label"], [1, 3])
    counts = loaded.stats.as_dict()
    assert (counts["corrupt_image"], counts["bad_record"], counts["bad_annotation"], counts["box_clipped"],
            counts["degenerate_box"], counts["unknown_category"]) == (1, 1, 1, 1, 1, 1)
    messages = data_testing.warning_messages(caplog)
    path = str(tmp_path / "bad.tfrecord")
    assert any(f"{path} record 1 (source_id {ids[1]})" in m and "cannot decode" in m for m in messages)
    assert any(f"{path} record 2" in m and "not a tf.Example" in m for m in messages)
    assert any(f"{path} record 3 (source_id {ids[3]})" in m and "different lengths" in m for m in messages)
    assert any(f"record 4 (source_id {ids[4]}) box 0" in m and "clipped" in m for m in messages)
    assert any(f"record 4 (source_id {ids[4]}) box 1" in m and "no area" in m for m in messages)
    assert any(f"record 4 (source_id {ids[4]}) box 3" in m and "label -1" in m for m in messages)


def test_a_record_with_a_bad_checksum_ends_its_file_not_the_run(tmp_path):
    examples = [{"image": np.full((8, 8, 3), k, np.uint8), "label": k} for k in range(6)]
    first, second = tfrecord_writer.write_tfrecord(examples, tmp_path / "c", "classification", num_shards=2)
    data = bytearray(open(second, "rb").read())
    data[len(data) // 2] ^= 0xFF        # inside record 1 of 3 of the second file (labels 1, 3, 5)
    open(second, "wb").write(bytes(data))
    loaded = sources.load(sources.parse(f"tfrecord:{tmp_path}/c-*"), "classification", training=False)
    labels = sorted(int(e["label"]) for e in data_testing.examples(loaded.dataset))
    assert labels == [0, 1, 2, 4]       # the first file whole, the second up to the bad record


def test_num_classes_drops_labels_beyond_it(tmp_path):
    example = bs.generate_example(0, "validation", SIZE)
    labels = np.arange(len(example["classes"])) + 4          # 4, 5, 6, ...: with num_classes=6, 6+ are unknown
    tfrecord_writer.write_tfrecord([{"image": example["image"], "image/id": 1,
                                    "objects": {"bbox": example["boxes"] / SIZE, "label": labels}}], tmp_path / "r",
                                  "detection")
    loaded = sources.load(sources.parse(f"tfrecord:{tmp_path / 'r'}"), "detection", training=False, num_classes=6)
    (read,) = data_testing.examples(loaded.dataset)
    np.testing.assert_array_equal(read["objects"]["label"], labels[labels < 6])
    assert loaded.stats.count("unknown_category") == int(np.sum(labels >= 6))


@pytest.mark.oracle
def test_model_gardens_records_read_as_the_generators_examples(tmp_path):
    """Records from Model Garden's TfExampleBuilder read back as the generator's examples (the other way round, our
    records through MG's decoders: tfrecord_writer_test)."""
    from official.vision.data import tf_example_builder

    generated = [bs.generate_example(i, "validation", SIZE) for i in range(3)]
    with tf.io.TFRecordWriter(str(tmp_path / "mg.tfrecord")) as writer:
        for example in generated:
            ymin, xmin, ymax, xmax = (example["boxes"] / SIZE).T.tolist()
            builder = tf_example_builder.TfExampleBuilder()
            builder.add_image_matrix_feature(example["image"], image_source_id=str(example["image_id"]).encode())
            builder.add_boxes_feature(xmin, xmax, ymin, ymax, example["classes"].tolist())
            builder.add_ints_feature("image/object/is_crowd", [0] * len(example["classes"]))
            writer.write(builder.example.SerializeToString())
    read = data_testing.examples(sources.load(sources.parse(f"tfrecord:{tmp_path / 'mg.tfrecord'}"), "detection",
                                              training=False).dataset)
    for index, example in enumerate(read):
        data_testing.assert_matches_generator(example, index)


def test_bad_tfrecord_masks_are_skipped_counted_and_named(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    generated, records = data_testing.mask_records()
    ids = [e["image_id"] for e in generated]
    # 1: one mask fewer than boxes (record skipped); 2: mask 0 undecodable, mask 1 of another size (instances
    # dropped); 3: no masks at all (skipped, but fine for a boxes-only load).
    def edit(k, change):
        example = tf.train.Example.FromString(records[k])
        change(example.features.feature["image/object/mask"].bytes_list.value)
        records[k] = example.SerializeToString()

    edit(1, lambda masks: masks.pop())
    edit(2, lambda masks: (masks.__setitem__(0, b"\x89PNG broken"),
                           masks.__setitem__(1, data_testing.png_bytes(np.ones((SIZE, SIZE // 2), np.uint8)))))
    edit(3, lambda masks: masks.__delitem__(slice(None)))
    with tf.io.TFRecordWriter(str(tmp_path / "m.tfrecord")) as writer:
        for record in records:
            writer.write(record)
    spec = f"tfrecord:{tmp_path / 'm.tfrecord'}"
    loaded = sources.load(sources.parse(spec), "instance_segmentation", training=False)
    read = data_testing.by_id(data_testing.examples(loaded.dataset))
    assert sorted(read) == [ids[0], ids[2], ids[4]]
    data_testing.assert_masks_of_generator(read[ids[0]], 0, SIZE)
    data_testing.assert_masks_of_generator(read[ids[4]], 4, SIZE)
    expected = bs.generate_example(2, "validation", SIZE)
    np.testing.assert_array_equal(read[ids[2]]["objects"]["segmentation"][..., 0], expected["masks"][2:] * 255)
    np.testing.assert_array_equal(read[ids[2]]["objects"]["bbox"] * SIZE, expected["boxes"][2:])
    assert (loaded.stats.count("bad_annotation"), loaded.stats.count("bad_mask")) == (2, 2)
    messages = data_testing.warning_messages(caplog)
    path = str(tmp_path / "m.tfrecord")
    count = len(generated[1]["classes"])
    assert any(f"{path} record 1 (source_id {ids[1]})" in m and f"{count} boxes but {count - 1} image/object/mask"
               in m for m in messages)
    assert any(f"record 2 (source_id {ids[2]}) box 0" in m and "cannot decode the mask" in m for m in messages)
    assert any(f"record 2 (source_id {ids[2]}) box 1" in m and "the mask is 128x64" in m for m in messages)
    assert any(f"record 3 (source_id {ids[3]})" in m and "but 0 image/object/mask" in m for m in messages)
    assert len(data_testing.examples(sources.load(sources.parse(spec), "detection", training=False).dataset)) == 5


@pytest.mark.oracle
def test_model_gardens_mask_records_read_as_the_annotations_rasterisation(tmp_path):
    """Model Garden's COCO converter (create_tf_example, include_masks) writes records whose masks we read as the
    annotations' rasterisation (our mask records through MG's decoder: tfrecord_writer_test)."""
    from official.vision.data import create_coco_tf_record

    crowd = np.zeros((SIZE, SIZE), np.uint8)
    crowd[40:60, 70:110] = 1
    polygons = [[10, 10, 40, 12, 30, 50, 12, 40], [60, 5, 90, 5, 75, 30]]
    annotation = data_testing.annotation
    coco, _ = data_testing.polygon_coco(tmp_path, [annotation(1, 1, [polygons[0]]), annotation(2, 1, [polygons[1]]),
                                                   annotation(3, 1, {"size": [SIZE, SIZE],
                                                                     "counts": data_testing.column_runs(crowd)},
                                                              iscrowd=1)], count=1)
    example, skipped = create_coco_tf_record.create_tf_example(
        coco["images"][0], [str(tmp_path / "images")], bbox_annotations=coco["annotations"],
        id_to_name_map={1: "thing"}, include_masks=True)
    assert skipped == 0
    tfrecord_file = tmp_path / "mg.tfrecord"
    with tf.io.TFRecordWriter(str(tfrecord_file)) as writer:
        writer.write(example.SerializeToString())
    (read,) = data_testing.examples(sources.load(sources.parse(f"tfrecord:{tfrecord_file}"), "instance_segmentation",
                                                 training=False).dataset)
    expected = [mask_utils.decode(mask_utils.frPyObjects([p], SIZE, SIZE)[0]) for p in polygons] + [crowd]
    np.testing.assert_array_equal(read["objects"]["segmentation"][..., 0] // 255, expected)
    np.testing.assert_array_equal(read["objects"]["is_crowd"], [False, False, True])
