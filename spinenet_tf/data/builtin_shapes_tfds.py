"""The built-in dataset: generated shapes on textured backgrounds, for detection and classification.

This module is its TFDS builder, `builtin_shapes`, registered when the module is imported: the examples of
`builtin_shapes.generate_example` / `generate_classification_example` in the feature layout of
`builtin_shapes_dataset` (TFDS `coco/2017`'s, plus LVIS's `segmentation`), prepared with `tfds.load` or
`tfds build`; nothing is downloaded.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from spinenet_tf.data import builtin_shapes, builtin_shapes_dataset, image_codec


@dataclasses.dataclass
class BuiltinShapesConfig(tfds.core.BuilderConfig):
    """A `builtin_shapes` configuration. Custom ones go through `builder_kwargs` (see `BuiltinShapes`).

    Attributes:
        task: "detection" or "classification".
        image_size: (H, W) of every image.
        num_train, num_validation: Examples in the two splits.
    """

    task: str = "detection"
    image_size: tuple[int, int] = builtin_shapes.DEFAULT_IMAGE_SIZE
    num_train: int = builtin_shapes.SPLIT_SIZES["train"]
    num_validation: int = builtin_shapes.SPLIT_SIZES["validation"]


class BuiltinShapes(tfds.core.GeneratorBasedBuilder):
    """TFDS builder `builtin_shapes`, registered when this module is imported; nothing is downloaded.

    Configs `detection` (the `coco/2017` layout plus `objects/segmentation`) and `classification` (`image`,
    `label`; `as_supervised=True` gives (image, label) pairs), both 256 x 256 with 2,000 train and 200
    validation examples. Records are written in index order (`disable_shuffling`), so `tfds.load` yields the
    same sequence as `builtin_shapes_dataset.as_dataset`. Images and masks are stored as PNG (lossless, so the
    pixels are `generate_example`'s); as the background grain barely compresses, the prepared `detection` config
    is large, which `as_dataset` (generating on the fly) avoids.

    Example:
        import spinenet_tf.data.builtin_shapes_tfds  # registers the builder
        train = tfds.load("builtin_shapes/detection", split="train", data_dir="/tmp/tfds")
        # another size: builder_kwargs={"config": BuiltinShapesConfig(name="detection_384", image_size=(384, 384))}
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Six shape classes on textured backgrounds; detection and classification."}
    BUILDER_CONFIGS = [
        BuiltinShapesConfig(name="detection", task="detection",
                            description="1-5 shapes per image with boxes, labels and instance masks."),
        BuiltinShapesConfig(name="classification", task="classification",
                            description="One shape per image near the centre; the label is its class."),
    ]

    # NOTE: TFDS 4.9.10 finds a builder's source file through the `importlib_resources` backport, which it only
    # declares for Python < 3.9 (tensorflow/datasets#11212, open), so preparing a builder that lives in a package
    # fails on 3.11 with "No module named 'importlib_resources'". The file is this module: say so directly.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> tfds.core.Path:
        return tfds.core.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        if config.task not in builtin_shapes.TASKS:
            raise ValueError(f"BuiltinShapesConfig.task={config.task!r}: must be one of "
                             f"{', '.join(builtin_shapes.TASKS)}")
        height, width = builtin_shapes.checked_image_size(config.image_size)
        label = tfds.features.ClassLabel(names=builtin_shapes.CLASS_NAMES)
        image = tfds.features.Image(shape=(height, width, 3), encoding_format="png")
        if config.task == "detection":
            features = {
                "image": image,
                "image/filename": tfds.features.Text(),
                "image/id": np.int64,
                "objects": tfds.features.Sequence({
                    "id": np.int64,
                    "area": np.int64,
                    "bbox": tfds.features.BBoxFeature(),
                    "label": label,
                    "is_crowd": np.bool_,
                    "segmentation": tfds.features.Image(shape=(height, width, 1), encoding_format="png"),
                }),
            }
            supervised_keys = None
        else:
            features = {"image": image, "label": label}
            supervised_keys = ("image", "label")
        # DatasetInfo directly, not dataset_info_from_configs: that one reads README.md / CITATIONS.bib from this
        # module's folder, which documents the package, not this dataset.
        return tfds.core.DatasetInfo(builder=self, description=__doc__.split("\n\n")[0],
                                     features=tfds.features.FeaturesDict(features),
                                     supervised_keys=supervised_keys, disable_shuffling=True)

    def _split_generators(self, dl_manager):
        del dl_manager  # generated, nothing to download
        config = self.builder_config
        return {"train": self._generate_examples("train", config.num_train),
                "validation": self._generate_examples("validation", config.num_validation)}

    def _generate_examples(self, split: str, num_examples: int):
        # Images go in as PNG bytes from PIL at zlib level 1: TFDS's own encoder (tf.io.encode_png, level 6) takes
        # several times longer than the generation itself. The pixels are the same.
        config = self.builder_config
        for index in range(num_examples):
            if config.task == "detection":
                example = builtin_shapes.generate_example(index, split, config.image_size)
                features = builtin_shapes_dataset.detection_features(example, with_masks=True)
                features["image"] = image_codec.encode_image(features["image"])
                objects = features["objects"]
                objects["segmentation"] = [image_codec.encode_image(mask[..., 0]) for mask in objects["segmentation"]]
            else:
                example = builtin_shapes.generate_classification_example(index, split, config.image_size)
                features = {"image": image_codec.encode_image(example["image"]), "label": example["label"]}
            yield index, features
