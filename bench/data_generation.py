"""Generation speed of the built-in shapes dataset (`spinenet_tf.data.builtin_shapes*`), as a Markdown table.

    python bench/data_generation.py                 # about 30 s on 2 CPU cores
    python bench/data_generation.py --num=1000

Rows, each timed over `--num` examples of the train split (0, 1, 2, ...) in this one process:
- `generate_example` at 256 x 256 (the default) and 384 x 384, and `generate_classification_example` at 256:
  numpy only, one thread;
- `as_dataset` at 256: the same examples through tf.data (`tf.numpy_function` in a parallel, deterministic map);
- `write_coco_json` at 256: generation + PNG files + RLE masks + the JSON file, into a temporary folder;
- TFDS `download_and_prepare` at 256 (detection, with masks): generation + PNG encoding + TFRecord writing.

The last column is the time the default train split (2,000 examples) takes at that rate. Wall-clock rates on a
shared machine are noisy: the load line gives the 1-minute load average before and after, and the CPU column
(`time.process_time`, all threads of this process) is disturbed less by other processes.
"""

import argparse
import os
import platform
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def _rate(function, num: int) -> tuple[float, float]:
    """(examples per wall-clock second, CPU milliseconds of this process per example)."""
    start, cpu = time.perf_counter(), time.process_time()
    function(num)
    return num / (time.perf_counter() - start), (time.process_time() - cpu) / num * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=300, help="examples per row (default 300)")
    args = parser.parse_args()

    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    from absl import logging  # pylint: disable=g-import-not-at-top

    from spinenet_tf.data import builtin_shapes as bs  # pylint: disable=g-import-not-at-top
    from spinenet_tf.data import (  # pylint: disable=g-import-not-at-top
        builtin_shapes_coco, builtin_shapes_dataset, builtin_shapes_tfds)

    logging.set_verbosity(logging.ERROR)  # TFDS's "custom data configuration" warning
    tfds.disable_progress_bar()
    load_before = _load()
    bs.generate_example(0, "train")  # warm the caches (basis matrices, imports)
    with tempfile.TemporaryDirectory() as tmp:
        def tfds_prepare(num):
            config = builtin_shapes_tfds.BuiltinShapesConfig(name="detection_bench", num_train=num, num_validation=1)
            tfds.builder("builtin_shapes", config=config, data_dir=tmp).download_and_prepare()

        rows = [
            ("generate_example", "256x256", lambda n: [bs.generate_example(i, "train") for i in range(n)]),
            ("generate_example", "384x384", lambda n: [bs.generate_example(i, "train", 384) for i in range(n)]),
            ("generate_classification_example", "256x256",
             lambda n: [bs.generate_classification_example(i, "train") for i in range(n)]),
            ("as_dataset (tf.data)", "256x256",
             lambda n: sum(1 for _ in builtin_shapes_dataset.as_dataset("train", n))),
            ("write_coco_json (PNG + RLE)", "256x256",
             lambda n: builtin_shapes_coco.write_coco_json("train", os.path.join(tmp, "train.json"),
                                                           os.path.join(tmp, "images"), n)),
            ("TFDS download_and_prepare", "256x256", tfds_prepare),
        ]
        print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
              f"{platform.python_version()}, {args.num} examples per row\n")
        print("| what | image | examples/s | CPU ms / example | default train split (2,000) |")
        print("| --- | --- | ---: | ---: | ---: |")
        for name, size, function in rows:
            rate, cpu_ms = _rate(function, args.num)
            print(f"| {name} | {size} | {rate:.0f} | {cpu_ms:.1f} | {bs.SPLIT_SIZES['train'] / rate:.1f} s |",
                  flush=True)
    print(f"\n1-minute load average: {load_before:.2f} before, {_load():.2f} after")


if __name__ == "__main__":
    main()
