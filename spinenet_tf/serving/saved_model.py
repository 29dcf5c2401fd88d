"""SavedModel export of a `RetinaNet`, `MaskRCNN` or `Classifier` with the serving signatures of `signatures.py`.

    export_saved_model(model, "exported/retinanet")
    loaded = tf.saved_model.load("exported/retinanet")
    outputs = loaded.signatures["serving_default"](images=uint8_images)   # detection_boxes, ... (original pixels)
    # a MaskRCNN adds detection_masks [B, K, 28, 28] (probabilities in each detection box's frame)
"""

from __future__ import annotations

import tensorflow as tf

from spinenet_tf.serving import output_path, signatures


def export_saved_model(model, path: str, flag: str = "--output") -> str:
    """Writes `model` as a SavedModel with `serving_default` (uint8 images) and `serve_image_bytes` (strings).

    Args:
        model: A `RetinaNet`, a `MaskRCNN` or a `Classifier`.
        path: Output directory; replaced only when the export succeeded (nothing is left there on failure).
        flag: Named in errors about `path`.

    Returns:
        The absolute path written.

    Raises:
        ValueError: The output directory is missing or not writable.
        TypeError: `model` is none of these.
    """
    module = signatures.serving_module(model)
    with output_path.atomic_output(path, directory=True, flag=flag) as tmp:
        tf.saved_model.save(module, tmp, signatures=module.signatures())
    return output_path.check_writable(path, flag, directory=True)
