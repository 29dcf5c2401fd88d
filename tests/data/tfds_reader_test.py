"""The `tfds:NAME[:split]` source (`tfds_reader`), on `tfds.testing.mock_data` (no data is downloaded): COCO
2017 and LVIS serve the generator's examples and masks through their real features; classification datasets
give their class count; bad images and masks are skipped and named; a dataset that is not prepared is one line."""

import logging

import numpy as np
import pytest
import tensorflow_datasets as tfds

import data_testing
from spinenet_tf.data import builtin_shapes as bs
from spinenet_tf.data import sources, tfds_reader

SIZE = data_testing.SIZE


def test_tfds_coco_2017_reads_the_generator_examples(caplog):
    caplog.set_level(logging.WARNING)
    with tfds.testing.mock_data(as_dataset_fn=data_testing.coco_as_dataset(4, corrupt_index=2)):
        source = sources.parse("tfds:coco/2017:validation", flag="--eval_data")
        assert (source.name, source.split) == ("coco/2017", "validation")
        loaded = sources.load(source, "detection", training=False)
        data_testing.assert_detection_layout(loaded.dataset)
        read = data_testing.examples(loaded.dataset)
    assert [int(e["image/id"]) for e in read] == [10_000_001, 10_000_002, 10_000_004]
    for index, example in zip((0, 1, 3), read):
        data_testing.assert_matches_generator(example, index, jpeg=True)  # TFDS coco/2017 stores JPEG
    assert loaded.info.num_classes == 80 and len(loaded.info.class_names) == 80
    assert loaded.stats.count("corrupt_image") == 1
    assert any("coco/2017:validation coco-validation.tfrecord__2 (000010000003.jpg)" in m and "cannot decode" in m
               for m in data_testing.warning_messages(caplog))


@pytest.mark.parametrize("spec", ["tfds:imagenet2012", "tfds:imagenet2012:validation[:3]",
                                  "tfds:i_naturalist2017:validation"])
def test_tfds_classification_with_mock_data(spec):
    # imagenet2012's and i_naturalist2017's metadata are not in the TFDS package: mock_data falls back to
    # MockPolicy.USE_CODE (features from the builder's code), random JPEG / PNG images, labels in range.
    with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
        loaded = sources.load(sources.parse(spec), "classification", training=True, seed=0)
        data_testing.assert_classification_layout(loaded.dataset)
        read = data_testing.examples(loaded.dataset)
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


def test_tfds_masks_bad_pngs_are_dropped_and_coco_2017_has_none(caplog):
    caplog.set_level(logging.WARNING)
    with tfds.testing.mock_data(as_dataset_fn=data_testing.coco_as_dataset(2, corrupt_mask_index=1)):
        loaded = sources.load(sources.parse("tfds:lvis:validation"), "instance_segmentation", training=False)
        first, second = data_testing.examples(loaded.dataset)
        with pytest.raises(ValueError, match=r"^--eval_data='tfds:coco/2017': TFDS dataset coco/2017 has no "
                                             r"objects/segmentation \(instance masks\); for COCO masks read its "
                                             r"instances_\*.json with coco:ANNOTATIONS.json:IMAGE_DIR$"):
            sources.load(sources.parse("tfds:coco/2017", flag="--eval_data"), "instance_segmentation",
                         training=False)
    data_testing.assert_masks_of_generator(first, 0, SIZE)
    expected = bs.generate_example(1, "validation", SIZE)
    np.testing.assert_array_equal(second["objects"]["segmentation"][..., 0], expected["masks"][1:] * 255)
    np.testing.assert_array_equal(second["objects"]["bbox"] * SIZE, expected["boxes"][1:])
    assert loaded.stats.count("bad_mask") == 1
    assert any("lvis:validation coco-validation.tfrecord__1 box 0" in m and "cannot decode the mask" in m
               for m in data_testing.warning_messages(caplog))


def test_the_builtin_shapes_builder_is_registered_for_tfds_sources(tmp_path):
    source = sources.parse("tfds:builtin_shapes/classification:validation[:2]", data_dir=str(tmp_path))
    builder = tfds_reader.builder(source)
    assert builder.name == "builtin_shapes" and builder.info.features["label"].names == list(bs.CLASS_NAMES)
