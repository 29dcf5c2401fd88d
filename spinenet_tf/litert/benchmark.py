"""Latency of a .tflite model with the LiteRT interpreter: warm-up, then the median of N timed invokes.

    python tflite/benchmark.py --model detector.tflite --num_threads 1,2 --xnnpack true,false

Times `Interpreter.invoke()` alone (the input is set once, outputs are not read), in wall-clock and in process CPU
time; CPU time is the steadier number on a shared machine, wall time the one users feel.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence

import numpy as np

from spinenet_tf.litert import interpreter as interpreter_lib


@dataclasses.dataclass(frozen=True)
class BenchmarkResult:
    """Milliseconds per invoke; size of the file in bytes."""

    num_threads: int
    use_xnnpack: bool
    median_ms: float
    p90_ms: float
    median_cpu_ms: float
    runs: int
    size_bytes: int


def benchmark(model: str | bytes, num_threads: int = 1, use_xnnpack: bool = True, warmup: int = 5,
              runs: int = 30, seed: int = 0, inputs: Sequence[np.ndarray] | None = None) -> BenchmarkResult:
    """Times `runs` invokes after `warmup`.

    Every input gets `inputs[i]` (in the interpreter's input order), or else a random value of its shape and dtype
    (standard normal floats, uniform integers): latency does not depend on the pixels for our models, which have no
    data-dependent control flow before NMS. Give `inputs` where it does (e.g. scores that decide how many boxes
    reach the NMS op)."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs={runs}, warmup={warmup}: need runs >= 1 and warmup >= 0")
    # A bare interpreter: TFLiteModel's signature runner holds the interpreter's internals, and LiteRT then refuses
    # allocate_tensors() ("at least 1 reference to internal data").
    interpreter, size_bytes = interpreter_lib.load_interpreter(model, num_threads, use_xnnpack)
    interpreter.allocate_tensors()
    details = interpreter.get_input_details()
    if inputs is not None and len(inputs) != len(details):
        raise ValueError(f"{len(inputs)} inputs given: the model takes {len(details)} "
                         f"({', '.join(d['name'] for d in details)})")
    rng = np.random.default_rng(seed)
    for i, detail in enumerate(details):
        shape, dtype = [int(n) for n in detail["shape"]], np.dtype(detail["dtype"])
        if inputs is not None:
            value = np.asarray(inputs[i])
            if list(value.shape) != shape or value.dtype != dtype:
                raise ValueError(f"input {i} ({detail['name']}): got {value.dtype.name} {list(value.shape)}, the "
                                 f"model takes {dtype.name} {shape}")
        elif dtype.kind == "f":
            value = rng.standard_normal(shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            value = rng.integers(info.min, info.max, shape).astype(dtype)
        interpreter.set_tensor(detail["index"], value)
    for _ in range(warmup):
        interpreter.invoke()
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        interpreter.invoke()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return BenchmarkResult(num_threads=num_threads, use_xnnpack=use_xnnpack,
                           median_ms=1e3 * float(np.median(wall)), p90_ms=1e3 * float(np.percentile(wall, 90)),
                           median_cpu_ms=1e3 * float(np.median(cpu)), runs=runs, size_bytes=size_bytes)


def main() -> None:
    """`tflite/benchmark.py`: defines its flags only when run, so importing this module adds none."""
    from absl import flags

    from spinenet_tf import cli

    model_flag = flags.DEFINE_string("model", None, "The .tflite file.")
    threads_flag = flags.DEFINE_list("num_threads", ["1", "2"], "Thread counts to time.")
    xnnpack_flag = flags.DEFINE_list("xnnpack", ["true"], "true and/or false: with the XNNPACK delegate or not.")
    warmup_flag = flags.DEFINE_integer("warmup", 5, "Untimed invokes first.")
    runs_flag = flags.DEFINE_integer("runs", 30, "Timed invokes; the median is reported.")
    flags.mark_flag_as_required("model")

    def run() -> None:
        threads = [int(t) for t in threads_flag.value]
        xnnpack = [_boolean(v) for v in xnnpack_flag.value]
        results = [benchmark(model_flag.value, t, x, warmup_flag.value, runs_flag.value)
                   for x in xnnpack for t in threads]
        print(f"{model_flag.value}: {os.path.getsize(model_flag.value) / 1e6:.2f} MB, load average "
              f"{os.getloadavg()[0]:.1f}\n")
        print("| threads | XNNPACK | median ms | p90 ms | median CPU ms |\n| ---: | --- | ---: | ---: | ---: |")
        for r in results:
            print(f"| {r.num_threads} | {'on' if r.use_xnnpack else 'off'} | {r.median_ms:.2f} | {r.p90_ms:.2f} | "
                  f"{r.median_cpu_ms:.2f} |")

    cli.run(run)  # a bad file or flag: one line `error: ...`, exit code 2


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "on", "yes"):
        return True
    if text.lower() in ("false", "0", "off", "no"):
        return False
    raise ValueError(f"--xnnpack={text}: give true or false")
