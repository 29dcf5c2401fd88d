"""COCO AP, size and latency of one trained detector exported with each quantization (the export/README.md table).

    python bench/tflite_quantization.py --model_dir=runs/shapes [--data=builtin:shapes:validation] [--num_images=200]

Exports --model_dir with `spinenet_tf.serving.exporter.export` as none / fp16 / dynamic / int8 (int8 calibrated
on --calibration, eval preprocessing), evaluates each .tflite with `spinenet_tf.litert.evaluate` on --data
(the training evaluator, same images for all), times it with `spinenet_tf.litert.benchmark` (XNNPACK on, median of
--runs after 5 warm-up invokes, 1 and 2 threads), and prints a Markdown table with the Keras model's AP first (with
its own per-class NMS and with the class-agnostic NMS that the TFLite op's default fast NMS computes).
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True, help="a training model_dir (train_config.json, checkpoints/)")
    parser.add_argument("--data", default="builtin:shapes:validation", help="evaluation data source")
    parser.add_argument("--calibration", default="builtin:shapes:train[:200]", help="int8 calibration source")
    parser.add_argument("--num_images", type=int, default=200, help="evaluation images")
    parser.add_argument("--runs", type=int, default=30, help="timed invokes per latency")
    parser.add_argument("--keras_model", help="take the weights from this .keras file of the same model instead of "
                        "the latest checkpoint of --model_dir (settings still from --model_dir)")
    args = parser.parse_args(argv)

    import keras
    import numpy as np
    import tensorflow as tf

    from spinenet_tf.data import detection_input, sources
    from spinenet_tf.evaluation import coco
    from spinenet_tf.litert import benchmark, evaluate, interpreter
    from spinenet_tf.serving import exporter, metadata, signatures
    from spinenet_tf.serving import output_path, tflite_convert, tflite_graph

    load_before = os.getloadavg()[0]
    load_config = exporter.ExportConfig(output="unused", model_dir=args.model_dir)
    if args.keras_model:
        model, run = keras.saving.load_model(args.keras_model, compile=False), exporter.saved_run(load_config)
    else:
        model, run = exporter.load_model(load_config)
    examples = sources.load(sources.parse(f"{args.data}", flag="--data"), "detection", training=False).dataset
    examples = examples.take(args.num_images)
    parser_ = detection_input.DetectionInput(detection_input.DetectionInputConfig(run.model_config.image_size),
                                             np.zeros([1, 4], np.float32))
    keras_ap = coco.evaluate(model, examples.map(parser_.eval_fn).batch(8))["AP"]
    # The TFLite files use the op's default fast NMS (class-agnostic over each box's best class): the Keras model
    # decoding the same way is the like-for-like float reference.
    model.decode_config = {**model.decode_config, "class_agnostic": True}
    keras_agnostic_ap = coco.evaluate(model, examples.map(parser_.eval_fn).batch(8))["AP"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for quantization in ("none", "fp16", "dynamic", "int8"):
            path = os.path.join(tmp, f"{quantization}.tflite")
            # What `exporter.export` does after loading the model (fast NMS, metadata), on the model loaded above.
            config = exporter.ExportConfig(output=path, model_dir=args.model_dir, quantization=quantization,
                                           representative_data=args.calibration if quantization == "int8" else None)
            representative = (exporter.calibration_data(config, "detection", signatures.image_size_of(model))
                              if quantization == "int8" else None)
            content = tflite_convert.convert(model, quantization, representative,
                                             postprocess=tflite_graph.PostProcessConfig.from_model(model))
            skip = model.decode_config["skip_class_zero"]
            names = exporter.class_names(config, run, model.num_classes - (1 if skip else 0))
            output_path.write_bytes(metadata.add_detector_metadata(content, names), path)
            metrics = evaluate.evaluate(interpreter.TFLiteModel(path, num_threads=2),
                                        examples.map(parser_.eval_fn).as_numpy_iterator())
            times = [benchmark.benchmark(path, threads, True, 5, args.runs) for threads in (1, 2)]
            rows.append((quantization, os.path.getsize(path), metrics["AP"], metrics["AP50"], times))
    weights = args.keras_model or "the latest checkpoint"
    size = run.model_config.image_size
    print(f"{run.model_config.model} {size[0]}x{size[1]} ({weights}), "
          f"{args.num_images} images of {args.data}, int8 calibrated on {args.calibration}; TensorFlow {tf.__version__}; load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after\n")
    print(f"Keras model AP: {keras_ap:.4f} with per-class NMS, {keras_agnostic_ap:.4f} with class-agnostic NMS (as "
          "the TFLite files)\n")
    float_ap = rows[0][2]
    print("| quantization | size MB | AP | AP - float AP | AP50 | ms, 1 thread | ms, 2 threads | CPU ms, 1 thread |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for quantization, size, ap, ap50, (one, two) in rows:
        print(f"| {quantization} | {size / 1e6:.2f} | {ap:.4f} | {ap - float_ap:+.4f} | {ap50:.4f} | "
              f"{one.median_ms:.1f} | {two.median_ms:.1f} | {one.median_cpu_ms:.1f} |")


if __name__ == "__main__":
    main()
