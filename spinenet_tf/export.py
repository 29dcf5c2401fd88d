"""Exports a trained SpineNet detector or classifier to a SavedModel or a (quantized) TFLite file.

    python -m spinenet_tf.export --model_dir=runs/shapes --format=tflite --quantization=int8 \
        --representative_data=builtin:shapes:train --output=detector_int8.tflite

Model settings come from the `train_config.json` training saved in --model_dir. See export/README.md for the
signatures, quantization types and outputs, and tflite/README.md for running the files on Android.
"""

from __future__ import annotations

from absl import flags

from spinenet_tf import cli

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Training model_dir; exports its latest checkpoint.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A checkpoint (model_dir/checkpoints/ckpt-N) instead.")
_FORMAT = flags.DEFINE_enum("format", "tflite", ["saved_model", "tflite"], "What to write.")
_QUANTIZATION = flags.DEFINE_enum("quantization", "none", ["none", "fp16", "dynamic", "int8"],
                                  "TFLite weights/activations: float32, float16, dynamic-range or full int8.")
_IO_TYPE = flags.DEFINE_enum("io_type", "float32", ["float32", "int8", "uint8"],
                             "Input/output type of int8 classifiers (detectors keep float32).")
_REPRESENTATIVE_DATA = flags.DEFINE_string("representative_data", None,
                                           "Data source of int8 calibration images, e.g. builtin:shapes:train.")
_NUM_CALIBRATION_IMAGES = flags.DEFINE_integer("num_calibration_images", 200, "Calibration images for int8.")
_OUTPUT = flags.DEFINE_string("output", None, "SavedModel directory or .tflite file to write.")
_RAW_OUTPUTS = flags.DEFINE_bool("raw_outputs", False, "TFLite detectors: raw box codes and scores, no NMS op.")
_NMS = flags.DEFINE_enum("nms", "fast", ["fast", "regular"],
                         "TFLite detectors: fast class-agnostic NMS, or per-class (needs 1 interpreter thread).")
_CLIP_BOXES = flags.DEFINE_bool("clip_boxes", True, "TFLite detectors: clip boxes to the input before NMS, as the "
                                 "SavedModel (false: raw codes into the NMS op, as Model Garden; a few % faster).")
_METADATA = flags.DEFINE_bool("metadata", True, "TFLite detectors: embed metadata + labels (MediaPipe).")
_LABELS = flags.DEFINE_string("labels", None, "Class names, one per line (default: the training data's).")


def config_from_flags():
    """The only place that reads flags."""
    from spinenet_tf.serving import exporter

    return exporter.ExportConfig(
        model_dir=_MODEL_DIR.value, checkpoint=_CHECKPOINT.value, format=_FORMAT.value,
        quantization=_QUANTIZATION.value, io_type=_IO_TYPE.value, representative_data=_REPRESENTATIVE_DATA.value,
        num_calibration_images=_NUM_CALIBRATION_IMAGES.value, output=_OUTPUT.value, raw_outputs=_RAW_OUTPUTS.value,
        nms=_NMS.value, clip_boxes=_CLIP_BOXES.value, metadata=_METADATA.value, labels=_LABELS.value)


def main() -> None:
    """Bad flags and files end in one line `error: ...` naming them (`spinenet_tf.cli`)."""
    from spinenet_tf.serving import exporter

    config = config_from_flags().validate()  # flag errors before TensorFlow starts working
    path = exporter.export(config)
    print(f"wrote {path}")


if __name__ == "__main__":
    cli.run(main)
