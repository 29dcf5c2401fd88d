"""Params and FLOPs (multiply-adds) of every registered backbone at its paper resolution, as a Markdown table.

    python bench/backbone_stats.py                        # all nine: about 5 minutes on 2 CPU cores, < 2 GB RAM
    python bench/backbone_stats.py spinenet-49 spinenet-mobile-49

Backbone only (no detection head), batch 1, inference. FLOPs are counted by `spinenet_tf.model_stats`: TF-profiler
float ops / 2 with inference batch norm not counted, which gives REFERENCE.md's [CALC] numbers for Model Garden's
backbones. Each model is measured in a fresh process, so memory is returned between the big ones.
"""

import multiprocessing
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _measure(name: str, size: int):
    import spinenet_tf
    from spinenet_tf import model_stats

    start = time.perf_counter()
    model = spinenet_tf.build_backbone(name, input_shape=(size, size, 3))
    stats = model_stats.model_stats(model, (size, size, 3))
    return stats.params, stats.flops, time.perf_counter() - start


def main(names: list[str]) -> None:
    from spinenet_tf import registry

    names = names or list(registry.BACKBONES)
    print("| backbone | input | params (M) | FLOPs (B multiply-adds) | seconds |")
    print("| --- | --- | ---: | ---: | ---: |")
    context = multiprocessing.get_context("spawn")
    for name in names:
        size = registry.lookup(registry.BACKBONES, name, "backbone").image_size
        with context.Pool(1) as pool:
            params, flops, seconds = pool.apply(_measure, (name, size))
        print(f"| {name} | {size} | {params / 1e6:.3f} | {flops / 1e9:.2f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
