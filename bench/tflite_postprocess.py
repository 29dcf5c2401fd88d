"""LiteRT latency of the detector's tail alone: box codes + class logits -> `TFLite_Detection_PostProcess` outputs.

    python bench/tflite_postprocess.py
    python bench/tflite_postprocess.py --rows=retinanet-spinenet-mobile-49xs --runs=500

`bench/tflite_latency.py` times whole files, where the tail is 3-8% of an invoke and a 0.3 ms difference is near
the noise of a shared machine. This script converts only the tail, `TFLiteDetectionModule.detections`, of a
RetinaNet SpineNet-Mobile detector (91 classes, the anchors of the row's input size), once with the default
`PostProcessConfig` (boxes decoded and clipped to the input before the op, so that NMS suppresses among the
SavedModel's boxes) and once with `clip_boxes=False` (the op decodes the raw codes, as in Model Garden's graph),
and times the two files alternately on the same inputs: box codes ~ N(0, 0.5), logits ~ N(-6, 1.2) (about 0.5% of
the anchor-class pairs above the 0.05 score threshold, so the op sorts and suppresses thousands of candidates and
keeps 100). Each row prints the op count, the medians, their difference (what clipping costs per invoke) and the
ratio; the lowest of `--rounds` medians is kept.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROWS = {"retinanet-spinenet-mobile-49xs": 256, "retinanet-spinenet-mobile-49s": 384}
NUM_CLASSES = 91


def _tail(model, clip_boxes: bool) -> bytes:
    import tensorflow as tf

    from spinenet_tf.serving import tflite_convert, tflite_graph

    module = tflite_graph.TFLiteDetectionModule(
        model, tflite_graph.PostProcessConfig.from_model(model, clip_boxes=clip_boxes))
    count = int(model.anchor_boxes.shape[0])
    serve = tf.function(module.detections, input_signature=[
        tf.TensorSpec([1, count, 4], tf.float32, name="box_codes"),
        tf.TensorSpec([1, count, model.num_classes], tf.float32, name="logits")])
    with tflite_convert.saved_model_converter(module, serve.get_concrete_function()) as converter:
        return converter.convert()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated detector names (default: all)")
    parser.add_argument("--threads", default="1,2", help="interpreter thread counts")
    parser.add_argument("--runs", type=int, default=200, help="timed invokes per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed invokes first")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per file, alternating (lowest kept)")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    import spinenet_tf
    from spinenet_tf.litert import benchmark
    from spinenet_tf.litert import interpreter as interpreter_lib

    print(f"TensorFlow {tf.__version__}, LiteRT interpreter, XNNPACK on, {os.cpu_count()} CPUs (shared); load "
          f"average {os.getloadavg()[0]:.1f} at the start\n")
    print("| model | input | anchors | threads | clipped ops | raw ops | clipped ms | raw codes ms | clipping ms | "
          "ratio | load |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", flush=True)
    for name in args.rows.split(","):
        size = ROWS[name]
        model = spinenet_tf.build_detector(name, num_classes=NUM_CLASSES, input_shape=(size, size, 3))
        files = {"clipped": _tail(model, True), "raw": _tail(model, False)}
        count = int(model.anchor_boxes.shape[0])
        rng = np.random.default_rng(0)
        inputs = {"box_codes": rng.normal(0.0, 0.5, (1, count, 4)).astype(np.float32),
                  "logits": rng.normal(-6.0, 1.2, (1, count, NUM_CLASSES)).astype(np.float32)}
        ordered, ops = {}, {}
        for key, content in files.items():
            interpreter, _ = interpreter_lib.load_interpreter(content, 1, True)
            details = interpreter.get_input_details()
            ordered[key] = [inputs[next(k for k in inputs if k in d["name"])] for d in details]
            ops[key] = sum(op["op_name"] != "DELEGATE" for op in interpreter._get_ops_details())
        for threads in (int(t) for t in args.threads.split(",")):
            medians = {key: [] for key in files}
            for _ in range(args.rounds):
                for key, content in files.items():
                    medians[key].append(benchmark.benchmark(content, threads, True, warmup=args.warmup,
                                                            runs=args.runs, inputs=ordered[key]).median_ms)
            clipped, raw = min(medians["clipped"]), min(medians["raw"])
            print(f"| {name.removeprefix('retinanet-spinenet-')} | {size} | {count} | {threads} | {ops['clipped']} | "
                  f"{ops['raw']} | {clipped:.3f} | {raw:.3f} | {clipped - raw:.3f} | {clipped / raw:.3f} | "
                  f"{os.getloadavg()[0]:.1f} |", flush=True)
        tf.keras.backend.clear_session()
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
