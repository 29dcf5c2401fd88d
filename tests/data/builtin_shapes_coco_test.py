"""The built-in shapes as COCO JSON (`builtin_shapes_coco.write_coco_json`): pycocotools loads it back to the
generator's images, boxes and masks, and COCOeval scores the ground truth as perfect."""

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from spinenet_tf.data import builtin_shapes as bs
from spinenet_tf.data import builtin_shapes_coco


# pycocotools' annToMask trips numpy 2's __array__(copy=) deprecation inside pycocotools.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_coco_json_loads_with_pycocotools_and_matches(tmp_path):
    path, image_dir = tmp_path / "annotations" / "val.json", tmp_path / "images"
    written = builtin_shapes_coco.write_coco_json("validation", path, image_dir, num_examples=4)
    assert json.loads(path.read_text()) == written
    coco = COCO(str(path))
    # COCO category_id = class index + 1.
    assert [(c["id"], c["name"]) for c in coco.loadCats(coco.getCatIds())] == [
        (i + 1, name) for i, name in enumerate(bs.CLASS_NAMES)]
    for index in range(4):
        expected = bs.generate_example(index, "validation")
        image_info = coco.loadImgs(expected["image_id"])[0]
        np.testing.assert_array_equal(np.asarray(Image.open(image_dir / image_info["file_name"])),
                                      expected["image"])
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=expected["image_id"]))
        assert len(annotations) == len(expected["classes"])
        for annotation, box, label, mask in zip(annotations, expected["boxes"], expected["classes"],
                                                expected["masks"]):
            ymin, xmin, ymax, xmax = box
            assert annotation["bbox"] == [xmin, ymin, xmax - xmin, ymax - ymin]
            assert annotation["category_id"] == label + 1 and annotation["iscrowd"] == 0
            assert annotation["area"] == mask.sum()
            np.testing.assert_array_equal(coco.annToMask(annotation), mask)
            np.testing.assert_array_equal(mask_utils.toBbox(annotation["segmentation"]), annotation["bbox"])


def test_coco_eval_scores_the_ground_truth_as_perfect(tmp_path):
    path = tmp_path / "val.json"
    builtin_shapes_coco.write_coco_json("validation", path, tmp_path / "images", num_examples=6)
    coco = COCO(str(path))
    detections = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
                  for a in coco.dataset["annotations"]]
    evaluator = COCOeval(coco, coco.loadRes(detections), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()  # not summarize(), which prints; the precision array says the same
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # IoU x recall x class, area "all", 100 dets
    present = precision[precision > -1]
    assert present.size
    np.testing.assert_allclose(present, 1.0, rtol=1e-12)  # COCOeval divides by tp + fp + np.spacing(1)
