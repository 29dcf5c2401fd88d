"""The built-in shapes data, pinned: SHA-256 digests of a few generated detection examples, and the split sizes.

The demo's AP goal (`make demo`, configs/detection_retinanet_spinenet_mobile_49xs_shapes128.flags) is measured on
this data, so the generator and its splits must stay as they are: a change that makes the shapes bigger, fewer,
better contrasted or the splits smaller would raise the demo's AP without any better model. Any change to the
pixels, boxes, classes or masks of these examples fails here; if a change is meant (a new dataset version), its
commit replaces the digests below and says why, and every AP measured on the old data stops being comparable.

The digests were computed once from the generator itself (the thing pinned) and pasted here. They belong to the
numpy of requirements-dev.txt: `builtin_shapes` draws from numpy `Generator` streams, which numpy does not promise
to keep the same across its releases, so a numpy upgrade that fails this test changed the data too.
"""

import hashlib

import numpy as np
import pytest

from spinenet_tf.data import builtin_reader, builtin_shapes, sources

# (split, index) -> SHA-256 of `_digest(generate_example(index, split))`, at the default 256x256 the
# `builtin:shapes` source generates (the demo resizes to its --image_size afterwards).
PINNED = {
    ("train", 0): "c7b3099aa55088387fca1fb152568e36a48e92880b3159ef042724c9d332cac3",
    ("train", 1): "f78e754ddabf80a92833c736600d2f9a019b1f2b775d70d1921a0b6b70a1b358",
    ("train", 1999): "75cab840ac3f89dcb6ab11fdea46c31c47167cfe0ca99efebfa9b9e222b70416",
    ("validation", 0): "8f4f27c530f9e30dade50cd422e7d840707c20de02e12bd69c0c96baf2bdb8d8",
    ("validation", 199): "2ddefc3eb4c79c4d5bd5667769a0cd3b0bbc7f0150f097632729c2c52933fcdd",
}


def _digest(example: dict) -> str:
    """SHA-256 over image, boxes, classes and masks, each as its name, dtype, shape and raw bytes."""
    digest = hashlib.sha256()
    for key in ("image", "boxes", "classes", "masks"):
        array = np.ascontiguousarray(example[key])
        digest.update(f"{key} {array.dtype.str} {array.shape}\n".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("split, index", list(PINNED))
def test_generated_example_matches_its_pinned_digest(split, index):
    example = builtin_shapes.generate_example(index, split)
    assert _digest(example) == PINNED[split, index], (
        f"builtin shapes {split}[{index}] changed: the demo's AP is no longer measured on the same data")


def test_the_splits_and_image_size_the_demo_reads_are_pinned():
    assert builtin_shapes.SPLIT_SIZES == {"train": 2000, "validation": 200}
    assert builtin_shapes.DEFAULT_IMAGE_SIZE == (256, 256)
    for split, size in (("train", 2000), ("validation", 200)):
        source = sources.parse(f"builtin:shapes:{split}")
        assert builtin_reader.split_range(source) == (split, 0, size)
