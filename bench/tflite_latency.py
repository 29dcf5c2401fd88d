"""TFLite latency and size of our RetinaNet SpineNet-Mobile detectors against Model Garden's TFLite export.

    python bench/tflite_latency.py                       # the three rows, float32 and int8, 1 and 2 threads
    python bench/tflite_latency.py --rows=retinanet-spinenet-mobile-49xs --runs=50

Rows (issue 5): RetinaNet SpineNet-Mobile-49XS at 256x256, -49S and -49 at 384x384, 91 classes (Model Garden's COCO
head). Model Garden's model is built with random weights (plus noise, so that no two weight tensors are equal, as
in a trained model) and ours gets the same weights through `spinenet_tf.convert.from_model_garden`: the file sizes
then differ only by graph and format, and both calibrate on the same activations.

Both sides end in the same `TFLite_Detection_PostProcess` op with the same attributes (ours: `PostProcessConfig`
defaults, fast NMS, 100 detections, 1 class per box; MG's `TFLitePostProcessingConfig` set to the same, with
`normalize_anchor_coordinates=True`). Two exports of ours are timed:
- "ours": `spinenet_tf.serving.tflite_convert.convert` with its defaults, what `python -m spinenet_tf.export` writes. Its
  graph does two things MG's does not: it takes MediaPipe's one-mean / one-std input and turns it into the ImageNet
  normalisation (one subtraction; MG's input must be normalised per channel by the caller), and it decodes and
  clips the boxes before the NMS op so that NMS sees the SavedModel's boxes (`PostProcessConfig.clip_boxes`);
- "raw codes": the same with `clip_boxes=False` (`--noclip_boxes`), the op decoding raw codes as in MG's graph;
- Model Garden: `official.vision.serving.detection.DetectionModule(input_type="tflite")` built from the
  `retinanet_mobile_coco` experiment (backbone model_id, head width and input size set per row, nms_version
  "tflite"), saved, then `official.vision.serving.export_tflite_lib.convert_tflite_model` with quant_type None
  (float32) or "int8_full_fp32_io" (= our int8: integer-only builtins, float I/O).
int8 calibration uses the same 32 built-in shapes validation images, eval-preprocessed, for both.

Timing: `spinenet_tf.litert.benchmark.benchmark` (LiteRT interpreter, XNNPACK on, `--warmup` untimed invokes, median
of `--runs`), the three files alternating, `--rounds` times each, the lowest median kept (a shared machine only
adds time). The 1-minute load average is printed at the start, beside each row and at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROWS = {  # name -> (MG model_id, input size, MG head filters: MG experiment YAMLs under official/vision/configs/experiments/retinanet/)
    "retinanet-spinenet-mobile-49xs": ("49XS", 256, 24),
    "retinanet-spinenet-mobile-49s": ("49S", 384, 40),
    "retinanet-spinenet-mobile-49": ("49", 384, 48),
}
NUM_CLASSES = 91
QUANTIZATIONS = {"float32": ("none", None), "int8": ("int8", "int8_full_fp32_io")}


def _calibration(size: int, count: int = 32):
    from spinenet_tf.data import builtin_shapes_dataset
    from spinenet_tf.serving import representative_data

    examples = builtin_shapes_dataset.as_dataset("validation", count)
    return representative_data.calibration_images(examples, (size, size), count)


def _ours(name: str, size: int, quantization: str, images, mg_model) -> dict[str, bytes]:
    """{"ours": the default export, "raw": with clip_boxes=False}, with the weights of `mg_model`."""
    import spinenet_tf
    from spinenet_tf import convert
    from spinenet_tf.serving import representative_data, tflite_convert, tflite_graph

    model = spinenet_tf.build_detector(name, NUM_CLASSES, (size, size))
    convert.from_model_garden(mg_model, model)
    files = {}
    for key, clip in (("ours", True), ("raw", False)):
        data = representative_data.representative_dataset(images) if quantization == "int8" else None
        files[key] = tflite_convert.convert(model, quantization, data,
                                            postprocess=tflite_graph.PostProcessConfig(clip_boxes=clip))
    return files


class _CalibrationTask:
    """Stands in for MG's task: `export_tflite_lib.representative_dataset` calls `task.build_inputs(...)` and
    iterates (image, label) pairs."""

    def __init__(self, images):
        self.images = images

    def build_inputs(self, params):
        import tensorflow as tf

        del params
        return tf.data.Dataset.from_tensor_slices(self.images[:, None]).map(lambda image: (image, 0))


def _model_garden(model_id: str, size: int, filters: int, quant_type: str | None, images):
    """(The .tflite bytes, MG's Keras RetinaNetModel)."""
    import numpy as np
    import tensorflow as tf
    from official.core import exp_factory
    from official.vision.serving import detection, export_tflite_lib

    from spinenet_tf.serving.tflite_graph import PostProcessConfig

    params = exp_factory.get_exp_config("retinanet_mobile_coco")
    model = params.task.model
    model.num_classes = NUM_CLASSES
    model.input_size = [size, size, 3]
    model.backbone.spinenet_mobile.model_id = model_id
    model.head.num_filters = filters
    model.norm_activation.use_sync_bn = False
    model.detection_generator.nms_version = "tflite"
    post, ours = model.detection_generator.tflite_post_processing, PostProcessConfig()
    post.max_detections, post.max_classes_per_detection = ours.max_detections, ours.max_classes_per_detection
    post.detections_per_class, post.use_regular_nms = ours.detections_per_class, ours.use_regular_nms
    post.nms_score_threshold, post.nms_iou_threshold = ours.nms_score_threshold, ours.nms_iou_threshold
    post.normalize_anchor_coordinates = True
    module = detection.DetectionModule(params, batch_size=1, input_image_size=[size, size], input_type="tflite")
    # Distinct values everywhere, as in a trained model: MG's seeded initializers give same-shape layers the same
    # kernels, which the converter stores once (it deduplicates identical buffers), so untouched random weights
    # would make the file sizes depend on which int8 buffers happen to coincide.
    rng = np.random.default_rng(0)
    for variable in module.model.weights:
        variable.assign(variable.numpy() + rng.normal(0.0, 0.01, variable.shape).astype(variable.dtype.as_numpy_dtype))
    with tempfile.TemporaryDirectory() as saved:
        tf.saved_model.save(module, saved, signatures=module.get_inference_signatures({"tflite": "serving_default"}))
        content = export_tflite_lib.convert_tflite_model(saved_model_dir=saved, quant_type=quant_type,
                                                         params=params, task=_CalibrationTask(images),
                                                         calibration_steps=len(images))
    return content, module.model


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated detector names (default: all)")
    parser.add_argument("--quantizations", default="float32,int8", help="float32 and/or int8")
    parser.add_argument("--threads", default="1,2", help="interpreter thread counts")
    parser.add_argument("--runs", type=int, default=30, help="timed invokes per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed invokes first")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per file, alternating (lowest kept)")
    parser.add_argument("--save_dir", default=None, help="also write each .tflite there (<row>_<type>_<ours|raw|mg>)")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from spinenet_tf.litert import benchmark

    # The header first and each row as soon as it is measured, so a run cut short still leaves its rows.
    print(f"TensorFlow {tf.__version__}, LiteRT interpreter, XNNPACK on, {os.cpu_count()} CPUs (shared); load "
          f"average {os.getloadavg()[0]:.1f} at the start\n")
    print("| model | input | type | threads | ours MB | MG MB | size ratio | ours ms | raw codes ms | MG ms | "
          "ratio | raw codes ratio | ours CPU ms | MG CPU ms | load |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
          flush=True)
    for name in args.rows.split(","):
        model_id, size, filters = ROWS[name]
        images = _calibration(size)
        for quant in args.quantizations.split(","):
            ours_quant, mg_quant = QUANTIZATIONS[quant]
            start = time.time()
            mg_content, mg_model = _model_garden(model_id, size, filters, mg_quant, images)
            files = {**_ours(name, size, ours_quant, images, mg_model), "mg": mg_content}
            print(f"converted {name} {quant} in {time.time() - start:.0f} s", file=sys.stderr, flush=True)
            if args.save_dir:
                os.makedirs(args.save_dir, exist_ok=True)
                for key, content in files.items():
                    with open(os.path.join(args.save_dir, f"{name}_{quant}_{key}.tflite"), "wb") as f:
                        f.write(content)
            for threads in (int(t) for t in args.threads.split(",")):
                times = {key: [] for key in files}
                for _ in range(args.rounds):
                    for key, content in files.items():
                        times[key].append(benchmark.benchmark(content, threads, True, args.warmup, args.runs))
                best = {key: min(results, key=lambda r: r.median_ms) for key, results in times.items()}
                _print_row(name.removeprefix("retinanet-spinenet-"), size, quant, threads,
                           {key: len(content) for key, content in files.items()}, best)
            tf.keras.backend.clear_session()
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


def _print_row(model, size, quant, threads, sizes, best) -> None:
    ours, raw, mg = best["ours"], best["raw"], best["mg"]
    print(f"| {model} | {size} | {quant} | {threads} | {sizes['ours'] / 1e6:.3f} | {sizes['mg'] / 1e6:.3f} | "
          f"{sizes['ours'] / sizes['mg']:.3f} | {ours.median_ms:.2f} | {raw.median_ms:.2f} | {mg.median_ms:.2f} | "
          f"{ours.median_ms / mg.median_ms:.3f} | {raw.median_ms / mg.median_ms:.3f} | {ours.median_cpu_ms:.2f} | "
          f"{mg.median_cpu_ms:.2f} | {os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
