"""Params and FLOPs (multiply-adds) of every registered backbone, RetinaNet and Mask R-CNN at its paper resolution,
beside the papers' numbers, as Markdown tables (the README's model table).

    python bench/model_stats.py                     # all: about 15 minutes on 2 CPU cores, < 4 GB RAM
    python bench/model_stats.py spinenet-49 retinanet-spinenet-49

Batch 1, inference; detectors with 91 classes (Model Garden's COCO head) and without NMS, as the papers count.
FLOPs are counted by `spinenet_tf.model_stats`: TF-profiler float ops / 2 with inference batch norm not counted,
which gives the same counts for Model Garden's models as for ours. Each model is measured in a fresh
process, so memory is returned between the big ones.
"""

import multiprocessing
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Published RetinaNet (params M, FLOPs B) and COCO AP: 49S-190 from the SpineNet paper (CVPR 2020, AP test-dev,
# protocol C); Mobile-49 from Model Garden's official/vision/MODEL_GARDEN.md (AP val2017, 600 epochs). Mobile
# 49XS / 49S: the paper's values could not be confirmed, so none are printed. R50-FPN: the SpineNet paper's
# baseline (Table 3, 640), params and FLOPs only (its AP there is protocol A on val, not comparable to the column).
PAPER_DETECTORS = {
    "retinanet-spinenet-49s": (12.0, 33.8, 41.5),
    "retinanet-spinenet-49": (28.5, 85.4, 44.3),
    "retinanet-spinenet-96": (43.0, 265.4, 48.6),
    "retinanet-spinenet-143": (66.9, 524.4, 50.7),
    "retinanet-spinenet-190": (163.6, 1885.0, 52.1),
    "retinanet-spinenet-mobile-49": (2.32, 1.0, 28.1),
    "retinanet-resnet50-fpn": (34.0, 96.8, "—"),
}


# Published Mask R-CNN (params M, FLOPs B, box AP / mask AP): 49S / 49 / 96 the SpineNet paper's Mask R-CNN table,
# 143 / 190 the authors' model zoo (tensorflow/tpu models/official/detection/MODEL_ZOO.md); 91 classes (COCO with
# the background), 1000 proposals, 100 detections.
PAPER_MASKRCNN = {
    "maskrcnn-spinenet-49s": (13.9, 60.2, "39.3 / 34.8"),
    "maskrcnn-spinenet-49": (40.8, 216.1, "42.9 / 38.1"),
    "maskrcnn-spinenet-96": (55.2, 315.0, "47.2 / 41.5"),
    "maskrcnn-spinenet-143": (79.2, 498.4, "48.7 / 42.6"),
    "maskrcnn-spinenet-190": (168.2, 1685.7, "52.0 / 45.9"),
}


def _measure(name: str, size: int):
    import spinenet_tf
    from spinenet_tf import model_stats, registry

    start = time.perf_counter()
    if name in registry.DETECTORS or name in registry.MASKRCNN_DETECTORS:
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


def _paper_table(title: str, names: list[str], table: dict, paper_rows: dict, context) -> None:
    """Our params and FLOPs of `names` at their paper resolution beside `paper_rows` (params M, FLOPs B, AP)."""
    print(f"\n| {title} (91 classes) | input | params (M) | paper params | ratio | FLOPs (B) | paper FLOPs | ratio "
          "| paper AP |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        size = table[name].image_size
        with context.Pool(1) as pool:
            params, flops, _ = _row(name, size, pool)
        paper = paper_rows.get(name)
        cells = ["—"] * 5 if paper is None else [
            f"{paper[0]:g}", f"{params / paper[0]:.3f}", f"{paper[1]:g}", f"{flops / paper[1]:.3f}", f"{paper[2]}"]
        flops_text = f"{flops:.1f}" if flops >= 10 else f"{flops:.3f}"
        print(f"| {name} | {size} | {params:.3f} | {cells[0]} | {cells[1]} | {flops_text} | {cells[2]} | "
              f"{cells[3]} | {cells[4]} |", flush=True)


def main(names: list[str]) -> None:
    from spinenet_tf import registry

    names = names or list(registry.BACKBONES) + list(registry.DETECTORS) + list(registry.MASKRCNN_DETECTORS)
    context = multiprocessing.get_context("spawn")
    backbones = [n for n in names if n in registry.BACKBONES]
    detectors = [n for n in names if n in registry.DETECTORS]
    classifiers = [n for n in names if n in registry.CLASSIFIERS]
    maskrcnns = [n for n in names if n in registry.MASKRCNN_DETECTORS]
    if backbones:
        print("| backbone | input | params (M) | FLOPs (B multiply-adds) | seconds |")
        print("| --- | --- | ---: | ---: | ---: |")
        for name in backbones:
            size = registry.BACKBONES[name].image_size
            with context.Pool(1) as pool:
                params, flops, seconds = _row(name, size, pool)
            print(f"| {name} | {size} | {params:.3f} | {flops:.2f} | {seconds:.0f} |", flush=True)
        print()
    # Mask R-CNN: the whole inference pass (RPN, box head on the 1000 proposals, mask head on the 100 detections).
    for title, group, table, paper in (("detector", detectors, registry.DETECTORS, PAPER_DETECTORS),
                                       ("Mask R-CNN", maskrcnns, registry.MASKRCNN_DETECTORS, PAPER_MASKRCNN)):
        if group:
            _paper_table(title, group, table, paper, context)

    if classifiers:
        # Paper (ImageNet classification table, 1000 classes): params incl. the FC layer; FLOPs at 224 (ours: 256).
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
