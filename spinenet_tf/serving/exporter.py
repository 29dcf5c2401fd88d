"""The export run behind `python -m spinenet_tf.export`: one frozen `ExportConfig` -> a SavedModel or a .tflite.

The model is rebuilt from the `train_config.json` a training run saved in its `model_dir` (so no model flag needs
repeating) and its weights restored from the latest checkpoint there, or from `--checkpoint` (whose `model_dir` is
two levels up: `model_dir/checkpoints/ckpt-N`). Every check that needs no TensorFlow work runs first (the optional
packages a TFLite export needs among them, `check_packages`), and the output is written through a temporary file, so
a failed export leaves nothing at `--output`.
"""

from __future__ import annotations

import dataclasses
import importlib
import os

from absl import logging

from spinenet_tf import checkpoints, models
from spinenet_tf.serving import output_path, tflite_convert, tflite_graph

FORMATS = ("saved_model", "tflite")
NMS_TYPES = ("fast", "regular")
# What `pip install .` leaves out and a TFLite export may need: setup.py's "tflite" extra installs both.
TFLITE_EXTRA = 'pip install "spinenet_tf[tflite]"'
_METADATA_SCHEMA = "mediapipe.tasks.metadata.metadata_schema_py_generated"  # serving/metadata.py's flatbuffer classes
_LITERT = "ai_edge_litert.interpreter"  # serving/calibration.py runs the float graph with it


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """What to export and how (one attribute per flag of `spinenet_tf.export`).

    Attributes:
        model_dir: A training `model_dir` (train_config.json + checkpoints/); the latest checkpoint is used.
        checkpoint: A checkpoint path (`model_dir/checkpoints/ckpt-N`) instead of the latest.
        format: "saved_model" or "tflite".
        quantization: TFLite only: one of `tflite_convert.QUANTIZATIONS`.
        io_type: TFLite int8 classifiers: "float32", "int8" or "uint8" input and output.
        representative_data: Data source for int8 calibration (`spinenet_tf.data.sources` spec).
        num_calibration_images: How many calibration images (in the source's order).
        output: The SavedModel directory or .tflite file.
        raw_outputs: TFLite detectors: box codes and sigmoid scores instead of the NMS op (no metadata).
        nms: TFLite detectors: "fast" (class-agnostic over each box's best class) or "regular" (per class, as
            `RetinaNet.detect`; use one interpreter thread, see `tflite_graph.PostProcessConfig`).
        clip_boxes: TFLite detectors: clip the decoded boxes to the input before NMS, as the SavedModel does (off:
            raw codes into the NMS op as in Model Garden's export, a few percent faster;
            `tflite_graph.PostProcessConfig`).
        metadata: TFLite detectors: embed metadata and labels for MediaPipe / Task Library.
        labels: A text file with one class name per line (default: the training data's names).
    """

    output: str
    model_dir: str | None = None
    checkpoint: str | None = None
    format: str = "tflite"
    quantization: str = "none"
    io_type: str = "float32"
    representative_data: str | None = None
    num_calibration_images: int = 200
    raw_outputs: bool = False
    nms: str = "fast"
    clip_boxes: bool = True
    metadata: bool = True
    labels: str | None = None

    def validate(self) -> ExportConfig:
        """Raises ValueError naming the flag of the first problem; returns self."""
        if bool(self.model_dir) == bool(self.checkpoint):
            raise ValueError("--model_dir / --checkpoint: give exactly one")
        if self.format not in FORMATS:
            raise ValueError(f"--format={self.format}: must be one of {', '.join(FORMATS)}")
        if self.quantization not in tflite_convert.QUANTIZATIONS:
            raise ValueError(f"--quantization={self.quantization}: must be one of "
                             f"{', '.join(tflite_convert.QUANTIZATIONS)}")
        if self.format == "saved_model" and (self.quantization != "none" or self.io_type != "float32"):
            raise ValueError(f"--quantization={self.quantization} --io_type={self.io_type}: only for --format=tflite")
        if self.quantization == "int8" and not self.representative_data:
            raise ValueError("--quantization=int8 needs calibration images: set --representative_data (e.g. the "
                             "training data source)")
        if self.io_type not in tflite_convert.IO_TYPES:
            raise ValueError(f"--io_type={self.io_type}: must be one of {', '.join(tflite_convert.IO_TYPES)}")
        if self.io_type != "float32" and self.quantization != "int8":
            raise ValueError(f"--io_type={self.io_type}: integer input/output needs --quantization=int8")
        if self.num_calibration_images < 1:
            raise ValueError(f"--num_calibration_images={self.num_calibration_images}: must be >= 1")
        if self.nms not in NMS_TYPES:
            raise ValueError(f"--nms={self.nms}: must be one of {', '.join(NMS_TYPES)}")
        if not self.output:
            raise ValueError("--output: required")
        if self.labels and not os.path.isfile(self.labels):
            raise ValueError(f"--labels={self.labels}: no such file")
        output_path.check_writable(self.output, directory=self.format == "saved_model")
        return self


@dataclasses.dataclass(frozen=True)
class SavedRun:
    """What export reads of a training run's `train_config.json`: the model, and the data source naming its classes.

    Attributes:
        model_config: The model part (`spinenet_tf.models.ModelConfig`), what `load_model` builds.
        data_source: The run's training data source (else its evaluation one), for class names; None if neither.
    """

    model_config: models.ModelConfig
    data_source: str | None = None


def saved_run(config: ExportConfig) -> SavedRun:
    """The run saved with the model (in --model_dir, or two levels above --checkpoint)."""
    if config.model_dir:
        model_dir, flag = config.model_dir, f"--model_dir={config.model_dir}"
    else:
        model_dir, flag = checkpoints.model_dir_of(config.checkpoint), f"--checkpoint={config.checkpoint}"
    if not os.path.isdir(model_dir):
        raise ValueError(f"{flag}: {model_dir} is not a directory")
    try:
        data = models.read_config_file(model_dir)
    except FileNotFoundError as error:
        raise ValueError(f"{flag}: {error}") from None
    sources = data.get("input") or {}
    return SavedRun(models.ModelConfig.from_dict(data), sources.get("train_data") or sources.get("eval_data"))


def load_model(config: ExportConfig, run: SavedRun | None = None):
    """(Keras model with restored weights, its `SavedRun`); `run` defaults to `saved_run(config)`."""
    run = run or saved_run(config)
    model = models.build_model(run.model_config)
    checkpoints.restore_model(model, model_dir=config.model_dir, checkpoint=config.checkpoint)
    return model, run


def class_names(config: ExportConfig, run: SavedRun, num_labels: int) -> list[str]:
    """Names for the exported class indices: --labels, else the training data's, else "class_<i>"."""
    if config.labels:
        with open(config.labels) as f:
            names = [line.strip() for line in f if line.strip()]
        if len(names) != num_labels:
            raise ValueError(f"--labels={config.labels}: {len(names)} names, the model has {num_labels} classes")
        return names
    names = _source_class_names(run.data_source, run.model_config.task)
    if names and len(names) == num_labels:
        return list(names)
    return [f"class_{i}" for i in range(num_labels)]


def _source_class_names(spec: str | None, task: str) -> tuple[str, ...]:
    """The class names a data source knows (built-in, COCO JSON, TFDS), () if it cannot be read here."""
    if not spec:
        return ()
    from spinenet_tf.data import sources

    try:
        return tuple(sources.load(sources.parse(spec, flag="--train_data"), task, training=False).info.class_names)
    except (ValueError, OSError):
        return ()


def calibration_data(config: ExportConfig, task: str, image_size):
    """The converter's representative dataset from --representative_data (eval preprocessing)."""
    from spinenet_tf.data import sources
    from spinenet_tf.serving import representative_data

    flag, spec = "--representative_data", config.representative_data
    logging.info("reading up to %d calibration images from %s ...", config.num_calibration_images, spec)
    examples = sources.load(sources.parse(spec, flag=flag), task, training=False).dataset
    representative_data.check_examples(examples, task, flag, spec)
    images = representative_data.calibration_images(examples, image_size, config.num_calibration_images, task, flag,
                                                    spec)
    return representative_data.representative_dataset(images)


def check_packages(config: ExportConfig, task: str) -> None:
    """Imports the optional packages this export will need, before any TensorFlow work.

    Raises:
        ModuleNotFoundError: One line naming the flag that needs the package and the extra that installs it (the
            CLI prints it as `error: ...`, `spinenet_tf.cli`); `name` is the missing package.
    """
    if config.format != "tflite":
        return
    needs = []
    if config.quantization == "int8":
        needs.append((_LITERT, "--quantization=int8 (its calibration runs the float model in LiteRT)", ""))
    if task == "detection" and config.metadata and not config.raw_outputs:
        needs.append((_METADATA_SCHEMA, "--format=tflite with metadata", " (or --nometadata)"))
    for module, what, alternative in needs:
        package = module.partition(".")[0]
        try:
            importlib.import_module(module)
        except ImportError as error:
            missing = isinstance(error, ModuleNotFoundError) and (error.name or "").partition(".")[0] == package
            detail = "" if missing else f" (importing {module} failed: {error})"  # installed but broken
            raise ModuleNotFoundError(f"{what} needs {package}{detail}: {TFLITE_EXTRA}{alternative}",
                                      name=package) from None


def export(config: ExportConfig) -> str:
    """Runs the export; returns the absolute output path.

    Raises:
        ValueError: One line naming the flag or file at fault (bad flags, missing or mismatched checkpoint, wrong
            representative data, unwritable output).
        ModuleNotFoundError: A package of the "tflite" extra that this export needs is missing (`check_packages`).
    """
    from spinenet_tf.serving import saved_model, signatures

    config.validate()
    run = saved_run(config)
    task = run.model_config.task
    if config.format == "tflite" and task == "instance_segmentation":
        # Before the model is built: RoIAlign and the second stage's gathers have no TFLite builtin kernels.
        raise ValueError(f"--format=tflite: {run.model_config.model} is a Mask R-CNN, which cannot be converted to "
                         "TFLite; use --format=saved_model")
    check_packages(config, task)
    model, run = load_model(config, run)
    if config.format == "saved_model":
        logging.info("writing the SavedModel of %s to %s ...", model.name, config.output)
        return saved_model.export_saved_model(model, config.output)
    detector = task == "detection"
    representative = (calibration_data(config, task, signatures.image_size_of(model))
                      if config.quantization == "int8" else None)
    postprocess = (tflite_graph.PostProcessConfig.from_model(model, use_regular_nms=config.nms == "regular",
                                                             clip_boxes=config.clip_boxes)
                   if detector else None)
    content = tflite_convert.convert(model, config.quantization, representative, config.io_type, postprocess,
                                     config.raw_outputs if detector else False)
    if detector and config.metadata and not config.raw_outputs:
        from spinenet_tf.serving import metadata

        skip = model.decode_config["skip_class_zero"]
        names = class_names(config, run, model.num_classes - (1 if skip else 0))
        content = metadata.add_detector_metadata(content, names)
    logging.info("writing %s (%.1f MB)", config.output, len(content) / 2**20)
    return output_path.write_bytes(content, config.output)
