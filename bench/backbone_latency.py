"""Batch-1 inference latency of our backbones against Google's Model Garden twins, as a Markdown table.

    python bench/backbone_latency.py                               # the four rows of the issue, 30 timed calls each
    python bench/backbone_latency.py --rows=spinenet-mobile-49xs --iters=100 --threads=1
    python bench/backbone_latency.py --rows=spinenet-49 --profile  # also op-type counts of both graphs, as
                                                                   # traced and as run (after grappler/oneDNN)

Rows (the issue's): spinenet-49 at 640x640 and spinenet-mobile-49xs / -49s / -49 at 384x384, batch 1, inference.

How it is measured, the same way for both models:
- Model Garden's backbone (tf-models-official, `official.vision.modeling.backbones`, tf_keras) is built with its
  `SCALING_MAP` entry by tests/oracle.py, as in the parity tests; ours with `spinenet_tf.build_backbone`; MG's
  weights (batch-norm statistics randomized first, so that the check means something) are copied into ours with
  `spinenet_tf.convert.from_model_garden`, and the endpoints must agree within 1e-4 relative before anything is
  timed.
- Each model is wrapped in `tf.function(jit_compile=False)` with a fixed input signature [1, H, W, 3] float32 and
  called with `training=False`; the concrete function is traced before timing.
- `--warmup` untimed calls of each, then `--iters` timed calls of each, interleaved: pair i runs ours then MG when
  i is even and MG then ours when odd, so that both see the same background load and neither always runs first.
  A call is timed with `time.perf_counter` around the call plus fetching P7 (tiny) to the host.
- Reported: wall-clock median and p90 (linear interpolation) in ms, and median(ours) / median(MG) (goal: ratio
  <= 1.0); then, in a second table, the median CPU time per call (`time.process_time`, all of this process's
  threads), which other processes on the machine disturb less than wall time.

Timings on a shared machine are noisy: the line under the machine line gives the 1-minute load average before
and after; with a load above the core count, other processes shared the CPU.
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# tests/oracle.py builds Model Garden's models for the parity tests and for these benchmarks alike.
sys.path.insert(1, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

# The rows: name -> (height, width).
ROWS = {
    "spinenet-49": (640, 640),
    "spinenet-mobile-49xs": (384, 384),
    "spinenet-mobile-49s": (384, 384),
    "spinenet-mobile-49": (384, 384),
}
RTOL = 1e-4


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS),
                        help=f"comma-separated backbone names among {', '.join(ROWS)} (default: all)")
    parser.add_argument("--iters", type=int, default=30, help="timed calls per model (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per model first (default 5)")
    parser.add_argument("--threads", type=int, default=None,
                        help="tf.config.threading intra- and inter-op threads (default: TF's choice)")
    parser.add_argument("--profile", action="store_true",
                        help="also print op-type counts of both graphs, as traced and as run (after grappler and "
                             "the oneDNN rewrite); types whose counts differ are marked **")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch-norm statistics and the input")
    args = parser.parse_args(argv)
    args.rows = [row.strip() for row in args.rows.split(",") if row.strip()]
    unknown = [row for row in args.rows if row not in ROWS]
    if unknown:
        parser.error(f"unknown row(s) {', '.join(unknown)}; valid: {', '.join(ROWS)}")
    if args.iters < 1 or args.warmup < 0:
        parser.error("--iters must be >= 1 and --warmup >= 0")
    return args


def machine_line(threads) -> str:
    import tensorflow as tf

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    intra = tf.config.threading.get_intra_op_parallelism_threads()
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    threading = f"intra/inter-op threads {intra}/{inter}" if threads else "TF default threads"
    return (f"Machine: {cpu}, {os.cpu_count()} cores, TensorFlow {tf.__version__}, Keras {_keras_version()}, "
            f"Python {platform.python_version()}, {threading}, oneDNN "
            f"{'off' if os.environ.get('TF_ENABLE_ONEDNN_OPTS') == '0' else 'on (default)'}")


def _keras_version() -> str:
    import keras

    return keras.__version__


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def build_pair(name: str, height: int, width: int, seed: int):
    """(ours, MG) with the same weights; raises AssertionError if their endpoints differ by more than RTOL."""
    import spinenet_tf
    from spinenet_tf import convert

    import oracle  # tests/oracle.py: Model Garden's twin of a registry name

    mg = oracle.backbone(name, height, width)
    oracle.randomize_batch_norm(mg, seed)
    ours = spinenet_tf.build_backbone(name, input_shape=(height, width, 3))
    copied = convert.from_model_garden(mg, ours)
    if copied != len(ours.weights):
        raise AssertionError(f"{name}: copied {copied} of {len(ours.weights)} variables")
    return ours, mg


def wrap(model, height: int, width: int):
    """The model as a traced tf.function(jit_compile=False), fixed signature [1, H, W, 3], training=False."""
    import tensorflow as tf

    @tf.function(jit_compile=False, input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32)])
    def infer(images):
        return model(images, training=False)

    return infer.get_concrete_function()


def check_agreement(name, ours_fn, mg_fn, images) -> float:
    """Max over levels of max|ours - MG| / max|MG|; raises AssertionError above RTOL."""
    import numpy as np

    ours_out, mg_out = ours_fn(images), mg_fn(images)
    errors = {}
    for level, value in ours_out.items():
        expected = mg_out[str(level)].numpy()
        errors[level] = float(np.max(np.abs(expected - value.numpy())) / np.max(np.abs(expected)))
    if set(errors) != {int(level) for level in mg_out} or max(errors.values()) >= RTOL:
        raise AssertionError(f"{name}: ours and Model Garden disagree: relative errors {errors}")
    return max(errors.values())


def _timed_call(fn, images, last_level) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of one call."""
    start, cpu_start = time.perf_counter(), time.process_time()
    outputs = fn(images)
    outputs[last_level].numpy()  # P7 is a few hundred floats: makes sure the call is finished
    return time.perf_counter() - start, time.process_time() - cpu_start


def time_interleaved(ours_fn, mg_fn, images, iters: int, warmup: int):
    """Warm-up calls of each, then `iters` calls of each alternating ours/MG (order flipped every pair).

    Returns:
        ours, MG: lists of (wall seconds, CPU seconds) per timed call.
    """
    ours_last, mg_last = max(ours_fn.structured_outputs), str(max(int(k) for k in mg_fn.structured_outputs))
    for _ in range(warmup):
        _timed_call(ours_fn, images, ours_last)
        _timed_call(mg_fn, images, mg_last)
    ours_times, mg_times = [], []
    for i in range(iters):
        if i % 2 == 0:
            ours_times.append(_timed_call(ours_fn, images, ours_last))
            mg_times.append(_timed_call(mg_fn, images, mg_last))
        else:
            mg_times.append(_timed_call(mg_fn, images, mg_last))
            ours_times.append(_timed_call(ours_fn, images, ours_last))
    return ours_times, mg_times


def percentile_ms(times, q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(times) * 1e3, q))


# --- profile -------------------------------------------------------------------------------------------------
def traced_op_counts(concrete) -> collections.Counter:
    """Op types of a concrete function's graph as traced, nested function bodies included."""
    counts = collections.Counter(op.type for op in concrete.graph.get_operations())
    for function in concrete.graph.as_graph_def().library.function:
        counts.update(node.op for node in function.node_def)
    return counts


def optimized_op_counts(concrete, images) -> collections.Counter:
    """Op types that actually run: the partition graphs of the first call, after grappler and the oneDNN rewrite.

    The graphs are recorded when the function is instantiated, i.e. at its first call: pass a fresh one.
    """
    from tensorflow.python.eager import context

    ctx = context.context()
    ctx.enable_run_metadata()
    ctx.enable_graph_collection()
    try:
        ctx.export_run_metadata()  # drops graphs recorded earlier (e.g. by the weight copy's checkpoint write)
        concrete(images)
        metadata = ctx.export_run_metadata()
    finally:
        ctx.disable_graph_collection()
        ctx.disable_run_metadata()
    counts = collections.Counter()
    for graph in metadata.partition_graphs:
        counts.update(node.op for node in graph.node)
    return counts


_BOOKKEEPING = {"NoOp", "Identity", "Const", "_Arg", "_Retval", "Placeholder", "ReadVariableOp", "_Recv", "_Send"}


def print_profile(name: str, ours, mg, height: int, width: int, images) -> None:
    ours_fn, mg_fn = wrap(ours, height, width), wrap(mg, height, width)  # fresh: not yet instantiated
    for title, counter in (("traced graph", traced_op_counts),
                           ("as run, after grappler and oneDNN rewrites", lambda fn: optimized_op_counts(fn, images))):
        ours, mg = counter(ours_fn), counter(mg_fn)
        types = sorted(set(ours) | set(mg), key=lambda t: (-(ours[t] + mg[t]), t))
        total_ours = sum(n for t, n in ours.items() if t not in _BOOKKEEPING)
        total_mg = sum(n for t, n in mg.items() if t not in _BOOKKEEPING)
        print(f"\n{name}, op types ({title}; compute ops, bookkeeping {sorted(_BOOKKEEPING)} left out): "
              f"ours {total_ours}, MG {total_mg}")
        print("| op type | ours | MG |")
        print("| --- | ---: | ---: |")
        for op_type in types:
            if op_type not in _BOOKKEEPING:
                marker = "" if ours[op_type] == mg[op_type] else " **"
                print(f"| {op_type}{marker} | {ours[op_type]} | {mg[op_type]} |")
    print(flush=True)


# --- main ----------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    import numpy as np
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras
    import tf_keras

    lines = ["| model | input | ours median ms | MG median ms | ratio (ours/MG) | ours p90 | MG p90 |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    cpu_lines = ["| model | input | ours CPU median ms | MG CPU median ms | CPU ratio (ours/MG) |",
                 "| --- | --- | ---: | ---: | ---: |"]
    print(f"{len(args.rows)} row(s), {args.warmup} warm-up + {args.iters} timed calls per model, interleaved",
          file=sys.stderr, flush=True)
    load_before = _load()
    slower = []
    for name in args.rows:
        height, width = ROWS[name]
        ours, mg = build_pair(name, height, width, args.seed)
        ours_fn, mg_fn = wrap(ours, height, width), wrap(mg, height, width)
        images = tf.constant(np.random.default_rng(args.seed + 1).normal(size=(1, height, width, 3)), tf.float32)
        error = check_agreement(name, ours_fn, mg_fn, images)
        row_load = _load()
        ours_times, mg_times = time_interleaved(ours_fn, mg_fn, images, args.iters, args.warmup)
        ours_wall, ours_cpu = zip(*ours_times)
        mg_wall, mg_cpu = zip(*mg_times)
        ours_median, mg_median = percentile_ms(ours_wall, 50), percentile_ms(mg_wall, 50)
        ratio = ours_median / mg_median
        if ratio > 1.0:
            slower.append(name)
        lines.append(f"| {name} | {height}x{width} | {ours_median:.1f} | {mg_median:.1f} | {ratio:.2f} | "
                     f"{percentile_ms(ours_wall, 90):.1f} | {percentile_ms(mg_wall, 90):.1f} |")
        ours_cpu_median, mg_cpu_median = percentile_ms(ours_cpu, 50), percentile_ms(mg_cpu, 50)
        cpu_lines.append(f"| {name} | {height}x{width} | {ours_cpu_median:.1f} | {mg_cpu_median:.1f} | "
                         f"{ours_cpu_median / mg_cpu_median:.2f} |")
        print(f"{name}: max relative endpoint difference {error:.1e}; load {row_load:.1f} -> {_load():.1f}; "
              f"ratio {ratio:.2f}", file=sys.stderr, flush=True)
        if args.profile:
            print_profile(name, ours, mg, height, width, images)
        del ours, mg, ours_fn, mg_fn
        keras.backend.clear_session()
        tf_keras.backend.clear_session()
        gc.collect()
    print("\n".join(lines))
    print()
    print(machine_line(args.threads))
    print(f"Batch 1, float32, inference; {args.warmup} warm-up + {args.iters} timed calls per model, ours and MG "
          f"interleaved. 1-minute load average {load_before:.1f} before, {_load():.1f} after "
          f"(on {os.cpu_count()} cores: a load above that means other processes shared the CPU and timings are noisy).")
    if slower:
        print(f"Ratio > 1.0 (goal missed): {', '.join(slower)}")
    print()
    print("CPU time per call (this process, all threads; less sensitive to other processes than wall time):")
    print()
    print("\n".join(cpu_lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
