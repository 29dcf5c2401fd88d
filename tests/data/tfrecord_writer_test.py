"""TFRecord writing (`tfrecord_writer`): our records decode with Model Garden's decoders (the oracle) to the
generator's values, and `coco_to_tfrecord` writes a COCO file's examples with contiguous class indices and their
names."""

import numpy as np
import pytest
import tensorflow as tf

import data_testing
from spinenet_tf.data import builtin_shapes as bs
from spinenet_tf.data import builtin_shapes_coco, tfrecord_writer

SIZE = data_testing.SIZE


def _detection_example(generated):
    """A generator example in the detection layout of `sources`."""
    return {"image": generated["image"], "image/id": generated["image_id"],
            "objects": {"bbox": generated["boxes"] / SIZE, "label": generated["classes"],
                        "is_crowd": np.zeros(len(generated["classes"]), bool)}}


@pytest.mark.oracle
def test_records_decode_with_model_gardens_decoders(tmp_path):
    """Our detection and classification records decode with Model Garden's TfExampleDecoder / classification
    Decoder to the generator's values (MG's records through our reader: tfrecord_reader_test)."""
    from official.vision.dataloaders import classification_input, tf_example_decoder

    generated = [bs.generate_example(i, "validation", SIZE) for i in range(3)]
    decoder = tf_example_decoder.TfExampleDecoder()
    tfrecord_writer.write_tfrecord([_detection_example(e) for e in generated], tmp_path / "ours.tfrecord", "detection")
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
    tfrecord_writer.write_tfrecord([{"image": image["image"], "label": image["label"]}], tmp_path / "c",
                                   "classification")
    decoded = classification_input.Decoder().decode(next(iter(tf.data.TFRecordDataset(str(tmp_path / "c")))))
    assert decoded["image/class/label"].numpy() == image["label"]
    np.testing.assert_array_equal(tf.io.decode_png(decoded["image/encoded"]).numpy(), image["image"])


@pytest.mark.oracle
def test_mask_records_decode_with_model_gardens_decoder():
    """Our instance_segmentation records decode with MG's TfExampleDecoder(include_mask=True) to the generator's
    masks, with the masks' pixel counts as areas."""
    from official.vision.dataloaders import tf_example_decoder

    generated, records = data_testing.mask_records(2)
    decoder = tf_example_decoder.TfExampleDecoder(include_mask=True)
    for record, truth in zip(records, generated):
        decoded = decoder.decode(tf.constant(record))
        np.testing.assert_array_equal(decoded["groundtruth_instance_masks"].numpy(), truth["masks"])
        np.testing.assert_array_equal(decoded["groundtruth_area"].numpy(), truth["masks"].sum(axis=(1, 2)))


def test_shards_are_filled_round_robin_and_named_with_their_count(tmp_path):
    examples = [_detection_example(bs.generate_example(i, "validation", SIZE)) for i in range(3)]
    files = tfrecord_writer.write_tfrecord(examples, tmp_path / "r", "detection", num_shards=2)
    assert files == [f"{tmp_path}/r-00000-of-00002", f"{tmp_path}/r-00001-of-00002"]
    source_ids = [[tf.train.Example.FromString(record.numpy()).features.feature["image/source_id"].bytes_list.value[0]
                   for record in tf.data.TFRecordDataset(path)] for path in files]
    assert source_ids == [[b"10000001", b"10000003"], [b"10000002"]]


def test_coco_to_tfrecord_writes_class_indices_and_category_names(tmp_path):
    # Category ids are class index + 1 in the generator's COCO file; the records hold the class indices.
    builtin_shapes_coco.write_coco_json("validation", tmp_path / "a.json", tmp_path / "images", num_examples=2,
                                        image_size=SIZE)
    (path,) = tfrecord_writer.coco_to_tfrecord(str(tmp_path / "a.json"), str(tmp_path / "images"),
                                               tmp_path / "r.tfrecord")
    for index, record in enumerate(tf.data.TFRecordDataset(path)):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        expected = bs.generate_example(index, "validation", SIZE)
        assert list(feature["image/object/class/label"].int64_list.value) == expected["classes"].tolist()
        assert [t.decode() for t in feature["image/object/class/text"].bytes_list.value] == [
            bs.CLASS_NAMES[c] for c in expected["classes"]]
        assert feature["image/format"].bytes_list.value == [b"jpeg"]
    with pytest.raises(ValueError, match="image_format='gif'"):
        tfrecord_writer.write_tfrecord([], tmp_path / "x", "detection", image_format="gif")
