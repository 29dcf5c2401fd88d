"""Latency of a .tflite model with LiteRT: warm-up, median of N, threads, XNNPACK on/off (see tflite/README.md).

    python tflite/benchmark.py --model=detector_int8.tflite --num_threads=1,2 --xnnpack=true,false
"""

from spinenet_tf.litert import benchmark

if __name__ == "__main__":
    benchmark.main()
