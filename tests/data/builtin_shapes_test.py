"""The built-in shapes dataset: determinism, exact boxes and masks, the advertised ranges, and the three readers
(tf.data, `tfds.load`, COCO JSON) agreeing with `generate_example`."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from spinenet_tf.data import builtin_shapes as bs

SIZE = 256
NUM_SURVEY = 200  # examples for the statistics tests (about 1 s to generate)


def _assert_examples_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _pairwise_intersections(boxes):
    ymin = np.maximum(boxes[:, None, 0], boxes[None, :, 0])
    xmin = np.maximum(boxes[:, None, 1], boxes[None, :, 1])
    ymax = np.minimum(boxes[:, None, 2], boxes[None, :, 2])
    xmax = np.minimum(boxes[:, None, 3], boxes[None, :, 3])
    inter = np.clip(ymax - ymin, 0, None) * np.clip(xmax - xmin, 0, None)
    np.fill_diagonal(inter, 0)
    return inter


@pytest.fixture(scope="module")
def survey():
    return [bs.generate_example(i, "train") for i in range(NUM_SURVEY)]


# === Determinism ===

def test_an_example_is_the_same_whatever_else_was_generated_before():
    forward = [bs.generate_example(i, "train") for i in range(6)]
    backward = [bs.generate_example(i, "train") for i in reversed(range(6))][::-1]
    for a, b in zip(forward, backward):
        _assert_examples_equal(a, b)
    _assert_examples_equal(bs.generate_example(3, "train"), forward[3])
    _assert_examples_equal(bs.generate_example(2, "val"), bs.generate_example(2, "validation"))


def test_splits_and_tasks_are_seeded_apart():
    train, val = bs.generate_example(0, "train"), bs.generate_example(0, "validation")
    assert not np.array_equal(train["image"], val["image"])
    assert train["image_id"] == 1 and val["image_id"] == 10_000_001
    classification = bs.generate_classification_example(0, "train")
    assert not np.array_equal(classification["image"], train["image"])


# === Geometry: boxes, masks, ranges ===

def test_boxes_are_exactly_the_extent_of_the_visible_masks(survey):
    for example in survey[:60]:
        boxes, masks, classes = example["boxes"], example["masks"], example["classes"]
        assert example["image"].shape == (SIZE, SIZE, 3) and example["image"].dtype == np.uint8
        assert masks.shape == (len(boxes), SIZE, SIZE) and masks.dtype == np.uint8
        assert boxes.dtype == np.float32 and classes.dtype == np.int32
        assert masks.max() == 1 and masks.sum(axis=0).max() == 1  # binary and disjoint (visible parts)
        for box, mask in zip(boxes, masks):
            ys, xs = np.nonzero(mask)
            # Pixel-edge convention: pixel (r, c) covers [r, r + 1) x [c, c + 1).
            np.testing.assert_array_equal(box, [ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])


def test_masks_cover_exactly_the_pixels_of_one_flat_colour(survey):
    # Shapes are flat colours plus grain of at most 6 * 1.2 levels; anything else under a mask (background, a
    # shape painted over it) would show as a wider spread.
    for example in survey[:60]:
        image = example["image"].astype(np.int32)
        for mask in example["masks"]:
            pixels = image[mask.astype(bool)]
            spread = pixels.max(axis=0) - pixels.min(axis=0)
            assert spread.max() <= 15, spread


def test_sizes_aspect_ratios_and_counts_span_the_advertised_ranges(survey):
    boxes = np.concatenate([e["boxes"] for e in survey])
    heights, widths = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    long_side, aspect = np.maximum(heights, widths), widths / heights
    # Long sides from MIN_OBJECT_SIZE (12 px) up to MAX_OBJECT_FRACTION (60%) of 256 = 153.6 px.
    assert long_side.min() <= 16 and 0.5 * SIZE <= long_side.max() <= 0.6 * SIZE + 1
    # Drawn aspect ratios are ASPECT_RATIO_RANGE (0.4-2.5); occlusion and star rotation move a few visible boxes.
    assert np.percentile(aspect, 5) < 0.5 and np.percentile(aspect, 95) > 2.0
    assert np.percentile(aspect, 1) >= 0.35 and np.percentile(aspect, 99) <= 2.9
    counts = np.bincount([len(e["classes"]) for e in survey], minlength=bs.MAX_OBJECTS + 1)
    assert counts[0] == 0 and np.all(counts[1:] >= NUM_SURVEY // 10), counts


def test_every_class_occurs_and_some_boxes_overlap(survey):
    classes = np.concatenate([e["classes"] for e in survey])
    assert classes.min() >= 0 and classes.max() < bs.NUM_CLASSES
    assert np.all(np.bincount(classes, minlength=bs.NUM_CLASSES) >= 0.05 * len(classes))
    overlapping = sum(_pairwise_intersections(e["boxes"]).max() > 0 for e in survey)
    assert 0.1 * NUM_SURVEY <= overlapping <= 0.9 * NUM_SURVEY


@pytest.mark.parametrize("image_size", [(384, 384), (200, 320)])
def test_other_image_sizes(image_size):
    example = bs.generate_example(7, "train", image_size)
    assert example["image"].shape == (*image_size, 3) and example["masks"].shape[1:] == image_size
    assert np.all(example["boxes"][:, 2] <= image_size[0]) and np.all(example["boxes"][:, 3] <= image_size[1])


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="'train' and 'validation'"):
        bs.generate_example(0, "test")
    with pytest.raises(ValueError, match="at least 64"):
        bs.generate_example(0, "train", (32, 256))
    with pytest.raises(ValueError, match="index=-1"):
        bs.generate_example(-1, "train")


# === Classification ===

def _signature_holds(name, mask):
    """Geometric facts of each class, on an unoccluded mask and its tight box."""
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(bool)
    h, w = crop.shape
    fill = crop.mean()
    centre = crop[h // 2, w // 2]
    corners = [crop[0, 0], crop[0, -1], crop[-1, 0], crop[-1, -1]]
    edge_midpoints = [crop[0, w // 2], crop[-1, w // 2], crop[h // 2, 0], crop[h // 2, -1]]
    if name == "rectangle":
        return fill == 1.0
    if name == "ellipse":  # pi / 4 = 0.785 of the box
        return 0.72 < fill < 0.84 and centre and not any(corners)
    if name == "ring":
        return not centre and fill < 0.7
    if name == "triangle":  # half the box; the base's two ends are box corners
        return 0.42 < fill < 0.58 and sum(corners) == 2
    if name == "cross":  # the arms reach all four sides
        return centre and all(edge_midpoints) and not any(corners) and fill < 0.75
    if name == "star":  # 5 rho sin(36 deg) / box, rho in [0.4, 0.55]: well under half
        return centre and not any(corners) and fill < 0.5
    raise AssertionError(name)


def test_classification_labels_are_the_drawn_shapes():
    examples = [bs.generate_classification_example(i, "train") for i in range(60)]
    assert set(e["label"] for e in examples) == set(range(bs.NUM_CLASSES))
    for example in examples:
        name = bs.CLASS_NAMES[example["label"]]
        assert _signature_holds(name, example["mask"]), (example["image_id"], name)
        ymin, xmin, ymax, xmax = example["box"]
        # One large shape near the centre.
        assert max(ymax - ymin, xmax - xmin) >= 0.25 * SIZE
        assert abs((ymin + ymax) / 2 - SIZE / 2) < 0.25 * SIZE and abs((xmin + xmax) / 2 - SIZE / 2) < 0.25 * SIZE


def test_as_classification_dataset_yields_one_label_per_image():
    dataset = bs.as_classification_dataset("validation", num_examples=5)
    assert dataset.element_spec == {"image": tf.TensorSpec([SIZE, SIZE, 3], tf.uint8),
                                    "label": tf.TensorSpec([], tf.int64)}
    for index, element in enumerate(dataset.as_numpy_iterator()):
        expected = bs.generate_classification_example(index, "validation")
        assert element["label"] == expected["label"]
        np.testing.assert_array_equal(element["image"], expected["image"])


# === tf.data and TFDS: the coco/2017 layout ===

def _assert_matches_generated(element, index, split, with_masks=True):
    expected = bs.generate_example(index, split)
    objects = element["objects"]
    np.testing.assert_array_equal(element["image"], expected["image"])
    assert element["image/id"] == expected["image_id"]
    assert element["image/filename"] == f"{expected['image_id']:012d}.png".encode()
    np.testing.assert_array_equal(objects["bbox"] * SIZE, expected["boxes"])  # multiples of 1/256: exact
    np.testing.assert_array_equal(objects["label"], expected["classes"])
    np.testing.assert_array_equal(objects["area"], expected["masks"].sum(axis=(1, 2)))
    assert not objects["is_crowd"].any()
    np.testing.assert_array_equal(objects["id"], expected["image_id"] * 100 + 1 + np.arange(len(objects["id"])))
    if with_masks:
        np.testing.assert_array_equal(objects["segmentation"][..., 0], expected["masks"] * 255)


def _flatten(nested, prefix=""):
    if isinstance(nested, dict):
        return {path: leaf for key, value in nested.items()
                for path, leaf in _flatten(value, f"{prefix}/{key}").items()}
    return {prefix: nested}


def test_as_dataset_has_the_tfds_coco_2017_layout(tmp_path):
    # The oracle is TFDS's own COCO builder (its features come from code; nothing is downloaded).
    coco_info = tfds.builder("coco/2017", data_dir=str(tmp_path)).info.features.get_tensor_info()
    spec = bs.as_dataset("train", num_examples=2).element_spec
    flat_coco, flat_ours = _flatten(coco_info), _flatten(spec)
    assert flat_ours.keys() == flat_coco.keys()
    for path, ours in flat_ours.items():
        assert ours.dtype == flat_coco[path].dtype, path
        assert ours.shape.rank == len(flat_coco[path].shape), path


def test_as_dataset_yields_generate_example_in_index_order():
    dataset = bs.as_dataset("validation", num_examples=3, with_masks=True)
    assert dataset.cardinality() == 3
    for index, element in enumerate(dataset.as_numpy_iterator()):
        _assert_matches_generated(element, index, "validation")


def test_tfds_load_builds_and_matches_generate_example(tmp_path):
    config = bs.BuiltinShapesConfig(name="detection_tiny", num_train=4, num_validation=2)
    train, info = tfds.load("builtin_shapes", split="train", data_dir=str(tmp_path), with_info=True,
                            builder_kwargs={"config": config})
    assert info.splits["train"].num_examples == 4 and info.splits["validation"].num_examples == 2
    assert info.features["objects"]["label"].names == list(bs.CLASS_NAMES)
    for index, element in enumerate(train.as_numpy_iterator()):  # disable_shuffling: index order
        _assert_matches_generated(element, index, "train")


def test_tfds_classification_config(tmp_path):
    config = bs.BuiltinShapesConfig(name="classification_tiny", task="classification", num_train=3,
                                    num_validation=1)
    pairs = tfds.load("builtin_shapes", split="train", data_dir=str(tmp_path), as_supervised=True,
                      builder_kwargs={"config": config})
    for index, (image, label) in enumerate(pairs.as_numpy_iterator()):
        expected = bs.generate_classification_example(index, "train")
        assert label == expected["label"]
        np.testing.assert_array_equal(image, expected["image"])


def test_registered_configs_are_the_documented_defaults(tmp_path):
    for name in ("detection", "classification"):
        builder = tfds.builder(f"builtin_shapes/{name}", data_dir=str(tmp_path))
        config = builder.builder_config
        assert (config.task, config.image_size, config.num_train, config.num_validation) == (
            name, (SIZE, SIZE), bs.SPLIT_SIZES["train"], bs.SPLIT_SIZES["validation"])
        assert str(builder.version) == "1.0.0"


# === COCO JSON ===

# pycocotools' annToMask trips numpy 2's __array__(copy=) deprecation inside pycocotools.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_coco_json_loads_with_pycocotools_and_matches(tmp_path):
    path, image_dir = tmp_path / "annotations" / "val.json", tmp_path / "images"
    written = bs.write_coco_json("validation", path, image_dir, num_examples=4)
    assert json.loads(path.read_text()) == written
    coco = COCO(str(path))
    # COCO category_id = class index + 1.
    assert [(c["id"], c["name"]) for c in coco.loadCats(coco.getCatIds())] == [
        (i + 1, name) for i, name in enumerate(bs.CLASS_NAMES)]
    for index in range(4):
        expected = bs.generate_example(index, "validation")
        image_info = coco.loadImgs(expected["image_id"])[0]
        np.testing.assert_array_equal(np.asarray(Image.open(image_dir / image_info["file_name"])),
                                      expected["image"])
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=expected["image_id"]))
        assert len(annotations) == len(expected["classes"])
        for annotation, box, label, mask in zip(annotations, expected["boxes"], expected["classes"],
                                                expected["masks"]):
            ymin, xmin, ymax, xmax = box
            assert annotation["bbox"] == [xmin, ymin, xmax - xmin, ymax - ymin]
            assert annotation["category_id"] == label + 1 and annotation["iscrowd"] == 0
            assert annotation["area"] == mask.sum()
            np.testing.assert_array_equal(coco.annToMask(annotation), mask)
            np.testing.assert_array_equal(mask_utils.toBbox(annotation["segmentation"]), annotation["bbox"])


def test_coco_eval_scores_the_ground_truth_as_perfect(tmp_path):
    path = tmp_path / "val.json"
    bs.write_coco_json("validation", path, tmp_path / "images", num_examples=6)
    coco = COCO(str(path))
    detections = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
                  for a in coco.dataset["annotations"]]
    evaluator = COCOeval(coco, coco.loadRes(detections), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()  # not summarize(), which prints; the precision array says the same
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # IoU x recall x class, area "all", 100 dets
    present = precision[precision > -1]
    assert present.size
    np.testing.assert_allclose(present, 1.0, rtol=1e-12)  # COCOeval divides by tp + fp + np.spacing(1)
