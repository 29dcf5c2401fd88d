"""Data sources (`sources`): every spec form parses, and every reader `load` dispatches to yields the one layout
per task (all four detection sources through one `DetectionInput`; every instance_segmentation source gives the
generator's masks); bad specs stop with one line naming the flag. Each reader's own tests are in its mirrored file
(builtin_reader_test, coco_reader_test, tfrecord_reader_test, tfds_reader_test).

Golden values come from `builtin_shapes.generate_example` (the generator), never from the reader under test.
"""

import functools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import data_testing
from spinenet_tf.data import bad_data, builtin_shapes_coco, builtin_shapes_dataset, sources, tfrecord_writer
from spinenet_tf.data import builtin_shapes as bs
from spinenet_tf.data import detection_input as di
from spinenet_tf.detection import anchors as anchors_lib

SIZE = data_testing.SIZE
BUILTIN_SIZE = data_testing.BUILTIN_SIZE


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    builtin_shapes_coco.write_coco_json("validation", root / "annotations.json", root / "images", num_examples=2,
                                        image_size=SIZE)
    return root


def test_tfds_parse_keeps_a_version_apart_from_the_split():
    source = sources.parse("tfds:coco/2017:1.1.0:validation[:10]")
    assert (source.name, source.split) == ("coco/2017:1.1.0", "validation[:10]")
    assert sources.parse("tfds:coco/2017").split == "train"


def _detection_sources(tmp_path):
    builtin_shapes_coco.write_coco_json("validation", tmp_path / "a.json", tmp_path / "images", num_examples=2,
                                        image_size=SIZE)
    examples = data_testing.examples(builtin_shapes_dataset.as_dataset("validation", num_examples=2, image_size=SIZE))
    tfrecord_writer.write_tfrecord(examples, tmp_path / "r.tfrecord", "detection")
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
    with tfds.testing.mock_data(as_dataset_fn=data_testing.coco_as_dataset(2)):
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

def test_every_source_yields_the_generators_masks(tmp_path):
    # builtin: the generator itself; coco: compressed RLE of its masks; tfrecord: image/object/mask PNGs written
    # by coco_to_tfrecord from that JSON; tfds: lvis's objects/segmentation PNGs.
    builtin_shapes_coco.write_coco_json("validation", tmp_path / "a.json", tmp_path / "images", num_examples=3,
                                        image_size=SIZE)
    files = tfrecord_writer.coco_to_tfrecord(str(tmp_path / "a.json"), str(tmp_path / "images"),
                                             tmp_path / "r.tfrecord", image_format="png", task="instance_segmentation")
    specs = [("builtin:shapes:validation[:3]", BUILTIN_SIZE), (data_testing.coco_spec(tmp_path, "a.json"), SIZE),
             (f"tfrecord:{files[0]}", SIZE), ("tfds:lvis:validation", SIZE)]
    with tfds.testing.mock_data(as_dataset_fn=data_testing.coco_as_dataset(3)):
        for spec, size in specs:
            loaded = sources.load(sources.parse(spec), "instance_segmentation", training=False)
            spec_objects = loaded.dataset.element_spec["objects"]
            assert set(spec_objects) == {"bbox", "label", "is_crowd", "segmentation"}, spec
            assert spec_objects["segmentation"].dtype == tf.uint8 and spec_objects["segmentation"].shape.rank == 4
            examples = data_testing.examples(loaded.dataset)
            assert len(examples) == 3, spec
            for index, example in enumerate(examples):
                data_testing.assert_masks_of_generator(example, index, size)
            assert loaded.stats.summary() == "", spec
            # Boxes-only loads of the same sources carry no masks.
            assert "segmentation" not in sources.load(sources.parse(spec), "detection",
                                                      training=False).dataset.element_spec["objects"]


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
        sources.load(sources.parse(data_testing.coco_spec(coco_dir)), "classification", training=True)
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
