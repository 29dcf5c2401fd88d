"""The built-in shapes generator: determinism, exact boxes and masks, the advertised ranges, drawn classes.
(Its tf.data, TFDS and COCO JSON forms: builtin_shapes_dataset_test, builtin_shapes_tfds_test,
builtin_shapes_coco_test.)"""

import numpy as np
import pytest

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


def test_split_sizes_default_to_the_split_and_bad_counts_name_the_problem():
    assert bs.split_size("val") == bs.SPLIT_SIZES["validation"] == 200 and bs.split_size("train") == 2000
    assert bs.split_size("train", 5) == 5
    with pytest.raises(ValueError, match=r"num_examples=0: must be in \[1, 10000000\]"):
        bs.split_size("train", 0)
