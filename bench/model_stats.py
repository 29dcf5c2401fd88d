"""Params and FLOPs (multiply-adds) of every registered backbone and RetinaNet at its paper resolution, beside the
papers' numbers, as Markdown tables (the README's model table).

    python bench/model_stats.py                     # all: about 15 minutes on 2 CPU cores, < 4 GB RAM
    python bench/model_stats.py spinenet-49 retinanet-spinenet-49

Batch 1, inference; detectors with 91 classes (Model Garden's COCO head) and without NMS, as the papers count.
FLOPs are counted by `spinenet_tf.model_stats`: TF-profiler float ops / 2 with inference batch norm not counted,
which reproduces REFERENCE.md's [CALC] numbers for Model Garden's models. Each model is measured in a fresh
process, so memory is returned between the big ones.
"""

import multiprocessing
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Published RetinaNet (params M, FLOPs B) and COCO AP, SpineNet papers (REFERENCE.md §1.2, §2): 49S-190 from the
# SpineNet paper (AP test-dev, protocol C); Mobile-49 from [MG-MD] (AP val, 600 epochs). Mobile 49XS / 49S: the
# paper's values are unconfirmed (REFERENCE §2), so none are printed.
PAPER_DETECTORS = {
    "retinanet-spinenet-49s": (12.0, 33.8, 41.5),
    "retinanet-spinenet-49": (28.5, 85.4, 44.3),
    "retinanet-spinenet-96": (43.0, 265.4, 48.6),
    "retinanet-spinenet-143": (66.9, 524.4, 50.7),
    "retinanet-spinenet-190": (163.6, 1885.0, 52.1),
    "retinanet-spinenet-mobile-49": (2.32, 1.0, 28.1),
}


def _measure(name: str, size: int):
    import spinenet_tf
    from spinenet_tf import model_stats, registry

    start = time.perf_counter()
    if name in registry.DETECTORS:
        model = spinenet_tf.build_detector(name, num_classes=91, input_shape=(size, size))
    elif name in registry.CLASSIFIERS:
        model = spinenet_tf.build_classifier(name, num_classes=1000, input_shape=(size, size))
    else:
        model = spinenet_tf.build_backbone(name, input_shape=(size, size, 3))
    stats = model_stats.model_stats(model, (size, size, 3))
    return stats.params, stats.flops, time.perf_counter() - start


def _row(name: str, size: int, pool) -> tuple:
    params, flops, seconds = pool.apply(_measure, (name, size))
    return params / 1e6, flops / 1e9, seconds


def main(names: list[str]) -> None:
    from spinenet_tf import registry

    names = names or list(registry.BACKBONES) + list(registry.DETECTORS)
    context = multiprocessing.get_context("spawn")
    backbones = [n for n in names if n in registry.BACKBONES]
    detectors = [n for n in names if n in registry.DETECTORS]
    classifiers = [n for n in names if n in registry.CLASSIFIERS]
    if backbones:
        print("| backbone | input | params (M) | FLOPs (B multiply-adds) | seconds |")
        print("| --- | --- | ---: | ---: | ---: |")
        for name in backbones:
            size = registry.BACKBONES[name].image_size
            with context.Pool(1) as pool:
                params, flops, seconds = _row(name, size, pool)
            print(f"| {name} | {size} | {params:.3f} | {flops:.2f} | {seconds:.0f} |", flush=True)
        print()
    if detectors:
        print("| detector (91 classes) | input | params (M) | paper params | ratio | FLOPs (B) | paper FLOPs | ratio "
              "| paper AP |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name in detectors:
            size = registry.DETECTORS[name].image_size
            with context.Pool(1) as pool:
                params, flops, _ = _row(name, size, pool)
            paper = PAPER_DETECTORS.get(name)
            cells = ["—"] * 5 if paper is None else [
                f"{paper[0]:g}", f"{params / paper[0]:.3f}", f"{paper[1]:g}", f"{flops / paper[1]:.3f}", f"{paper[2]:g}"]
            flops_text = f"{flops:.1f}" if flops >= 10 else f"{flops:.3f}"
            print(f"| {name} | {size} | {params:.3f} | {cells[0]} | {cells[1]} | {flops_text} | {cells[2]} | "
                  f"{cells[3]} | {cells[4]} |", flush=True)


    if classifiers:
        # Paper (REFERENCE §1.5, ImageNet, 1000 classes): params incl. the FC layer; FLOPs at 224 (ours: 256).
        paper = {"classifier-spinenet-49": 22.1, "classifier-spinenet-96": 36.5, "classifier-spinenet-143": 60.5,
                 "classifier-spinenet-190": 127.1}
        print("\n| classifier (1000 classes) | input | params (M) | paper params | FLOPs (B) |")
        print("| --- | --- | ---: | ---: | ---: |")
        for name in classifiers:
            size = registry.CLASSIFIER_IMAGE_SIZE
            with context.Pool(1) as pool:
                params, flops, _ = _row(name, size, pool)
            print(f"| {name} | {size} | {params:.2f} | {paper.get(name, '—')} | {flops:.2f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
