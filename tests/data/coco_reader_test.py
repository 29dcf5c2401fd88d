"""The `coco:ANNOTATIONS.json:IMAGE_DIR` source (`coco_reader`): COCO JSON round-trips to the generator's boxes,
labels and masks; categories map to contiguous indices; bad images, boxes, annotations and masks are skipped or
repaired, counted and named once.

Golden values come from `builtin_shapes.generate_example` (the generator), from pycocotools' rasterisation of the
annotations, or from pixel arithmetic in the test, never from the reader under test.
"""

import io
import json
import logging

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

import data_testing
from spinenet_tf.data import bad_data, builtin_shapes_coco, sources
from spinenet_tf.data import builtin_shapes as bs

SIZE = data_testing.SIZE
NUM = 6


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    builtin_shapes_coco.write_coco_json("validation", root / "annotations.json", root / "images", num_examples=NUM,
                                        image_size=SIZE)
    return root


def test_coco_json_round_trips_to_the_generator(coco_dir):
    source = sources.parse(data_testing.coco_spec(coco_dir), flag="--eval_data")
    assert source.annotation_file.endswith("annotations.json") and source.image_dir.endswith("images")
    loaded = sources.load(source, "detection", training=False)
    data_testing.assert_detection_layout(loaded.dataset)
    examples = data_testing.examples(loaded.dataset)
    assert len(examples) == NUM
    for index, example in enumerate(examples):
        data_testing.assert_matches_generator(example, index)
    assert loaded.info.class_names == bs.CLASS_NAMES and loaded.info.category_ids == (1, 2, 3, 4, 5, 6)
    assert loaded.info.num_classes == 6 and loaded.info.num_examples == NUM
    assert loaded.stats.summary() == "" and set(loaded.stats.as_dict()) == set(bad_data.STAT_KINDS)


def test_coco_categories_map_to_contiguous_indices_in_id_order(tmp_path):
    # Sparse, unsorted category ids (COCO's own run 1..90 with gaps): class index = rank of the id.
    image = bs.generate_example(0, "validation", SIZE)
    (tmp_path / "images").mkdir()
    Image.fromarray(image["image"]).save(tmp_path / "images" / "a.png")
    sparse = {0: 90, 1: 7, 2: 13, 3: 42, 4: 3, 5: 55}   # class index in the generator -> category id in the file
    coco = {"images": [{"id": 77, "file_name": "a.png", "height": SIZE, "width": SIZE}],
            "categories": [{"id": cid, "name": f"{bs.CLASS_NAMES[k]}!"} for k, cid in sparse.items()],
            "annotations": [{"id": k + 1, "image_id": 77, "category_id": sparse[int(c)], "iscrowd": int(k == 0),
                             "bbox": [float(b[1]), float(b[0]), float(b[3] - b[1]), float(b[2] - b[0])]}
                            for k, (b, c) in enumerate(zip(image["boxes"], image["classes"]))]}
    (tmp_path / "a.json").write_text(json.dumps(coco))
    loaded = sources.load(sources.parse(f"coco:{tmp_path / 'a.json'}:{tmp_path / 'images'}"), "detection",
                          training=False)
    ids_in_order = sorted(sparse.values())
    assert loaded.info.category_ids == tuple(ids_in_order)
    assert loaded.info.class_names == tuple(f"{bs.CLASS_NAMES[k]}!" for k in
                                            sorted(sparse, key=lambda k: sparse[k]))
    (example,) = data_testing.examples(loaded.dataset)
    assert example["image/id"] == 77
    expected = [ids_in_order.index(sparse[int(c)]) for c in image["classes"]]
    np.testing.assert_array_equal(example["objects"]["label"], expected)
    np.testing.assert_array_equal(example["objects"]["is_crowd"], np.arange(len(expected)) == 0)


def test_coco_json_with_jpeg_images_keeps_boxes(tmp_path):
    builtin_shapes_coco.write_coco_json("train", tmp_path / "a.json", tmp_path / "images", num_examples=2,
                                        image_size=SIZE, image_format="jpeg")
    examples = data_testing.examples(sources.load(sources.parse(f"coco:{tmp_path / 'a.json'}:{tmp_path / 'images'}"),
                                                  "detection", training=False).dataset)
    for index, example in enumerate(examples):
        expected = bs.generate_example(index, "train", SIZE)
        np.testing.assert_array_equal(example["objects"]["bbox"] * SIZE, expected["boxes"])
        # JPEG at quality 95: close to the pixels, not equal.
        assert np.abs(example["image"].astype(int) - expected["image"]).mean() < 3.0


@pytest.fixture()
def bad_coco(tmp_path):
    """Ten generator images as COCO JSON, then one defect per image (see the test)."""
    count = 10
    coco = builtin_shapes_coco.write_coco_json("validation", tmp_path / "a.json", tmp_path / "images",
                                               num_examples=count, image_size=SIZE)
    files = [tmp_path / "images" / entry["file_name"] for entry in coco["images"]]
    originals = [bs.generate_example(i, "validation", SIZE)["image"] for i in range(count)]
    # 0: corrupt JPEG (truncated), 1: missing, 2: grayscale, 3: RGBA, 4: palette, 5: 16-bit grayscale PNG.
    jpeg = io.BytesIO()
    Image.fromarray(originals[0]).save(jpeg, format="jpeg")
    files[0].write_bytes(jpeg.getvalue()[:len(jpeg.getvalue()) // 2])
    files[1].unlink()
    gray = originals[2][..., 1]
    files[2].write_bytes(data_testing.png_bytes(gray))
    files[3].write_bytes(data_testing.png_bytes(np.dstack([originals[3], np.full((SIZE, SIZE), 7, np.uint8)])))
    palette_image = Image.fromarray(originals[4]).quantize(colors=16)
    palette_image.save(files[4])
    gray16 = (np.arange(SIZE * SIZE, dtype=np.uint32).reshape(SIZE, SIZE) * 4).astype(np.uint16)
    Image.fromarray(gray16).save(files[5])
    expected_pixels = {
        2: np.repeat(gray[..., None], 3, axis=-1),
        3: originals[3],                                      # alpha dropped
        4: np.array(palette_image.getpalette()[:48], np.uint8).reshape(16, 3)[np.asarray(palette_image)],
        5: np.repeat(np.round(gray16 * (255 / 65535)).astype(np.uint8)[..., None], 3, axis=-1),
    }
    # 6: a box past the right edge, a zero-area box and an unknown category; 7: no annotations at all.
    annotations = coco["annotations"]
    six = [a for a in annotations if a["image_id"] == coco["images"][6]["id"]]
    x, y, w, h = six[0]["bbox"]
    six[0]["bbox"] = [x, y, SIZE + 10 - x, h]
    annotations.append({"id": 900001, "image_id": coco["images"][6]["id"], "category_id": 1,
                        "bbox": [10.0, 10.0, 0.0, 5.0], "area": 0, "iscrowd": 0})
    annotations.append({"id": 900002, "image_id": coco["images"][6]["id"], "category_id": 99,
                        "bbox": [10.0, 10.0, 5.0, 5.0], "area": 25, "iscrowd": 0})
    coco["annotations"] = [a for a in annotations if a["image_id"] != coco["images"][7]["id"]]
    (tmp_path / "a.json").write_text(json.dumps(coco))
    return {"spec": f"coco:{tmp_path / 'a.json'}:{tmp_path / 'images'}", "files": files, "coco": coco,
            "pixels": expected_pixels, "six": six[0]}


def test_bad_coco_data_is_skipped_or_repaired_counted_and_named(bad_coco, caplog):
    caplog.set_level(logging.WARNING)
    loaded = sources.load(sources.parse(bad_coco["spec"]), "detection", training=False)
    epochs = [data_testing.by_id(data_testing.examples(loaded.dataset)) for _ in range(2)]
    assert epochs[0].keys() == epochs[1].keys()
    examples = epochs[0]
    ids = [entry["id"] for entry in bad_coco["coco"]["images"]]
    assert sorted(examples) == ids[2:]                                # 0 (corrupt) and 1 (missing) skipped
    for index in (2, 3, 4, 5):
        np.testing.assert_array_equal(examples[ids[index]]["image"], bad_coco["pixels"][index], err_msg=index)
    for index in (2, 3, 4, 5, 8, 9):                                 # boxes of the converted images are intact
        expected = bs.generate_example(index, "validation", SIZE)
        np.testing.assert_array_equal(examples[ids[index]]["objects"]["bbox"] * SIZE, expected["boxes"])
        np.testing.assert_array_equal(examples[ids[index]]["objects"]["label"], expected["classes"])
    for index in (8, 9):
        data_testing.assert_matches_generator(examples[ids[index]], index)
    # Image 6: the generator's boxes, the first one clipped at the right edge; the two bad extras dropped.
    expected = bs.generate_example(6, "validation", SIZE)["boxes"].copy()
    expected[0, 3] = SIZE
    np.testing.assert_array_equal(examples[ids[6]]["objects"]["bbox"] * SIZE, expected)
    assert len(examples[ids[7]]["objects"]["label"]) == 0            # kept as a negative

    assert loaded.stats.as_dict() == {
        "missing_image": 1, "corrupt_image": 1, "size_mismatch": 0, "bad_record": 0, "bad_annotation": 0,
        "unknown_category": 1, "missing_label": 0, "degenerate_box": 1, "box_clipped": 1, "converted_to_rgb": 4,
        "no_annotations": 1, "bad_mask": 0, "bad_polygon": 0, "self_intersecting": 0, "mask_clipped": 0}
    summary = loaded.stats.summary()
    assert "1 undecodable images skipped" in summary and "4 images converted to RGB" in summary
    assert "\n" not in summary
    # One line per item, naming it, however many epochs read it.
    messages = data_testing.warning_messages(caplog)
    files = bad_coco["files"]

    def lines(*fragments):
        return [m for m in messages if all(f in m for f in fragments)]

    assert len(lines(str(files[0]), "cannot decode")) == 1
    assert len(lines(str(files[1]), "cannot read")) == 1
    assert len(lines(str(files[2]), "grayscale image converted to RGB")) == 1
    assert len(lines(str(files[3]), "RGBA image converted")) == 1
    assert len(lines(str(files[4]), "palette image converted")) == 1
    assert len(lines(str(files[5]), "16-bit grayscale image converted")) == 1
    assert len(lines(f"annotation {bad_coco['six']['id']} ", "clipped")) == 1
    assert len(lines("annotation 900001 ", "no area")) == 1
    assert len(lines("annotation 900002 ", "unknown category_id 99")) == 1
    assert all(m.startswith("--train_data: ") for m in messages)


def test_coco_image_of_another_size_than_annotated_is_skipped(tmp_path, caplog):
    coco = builtin_shapes_coco.write_coco_json("validation", tmp_path / "a.json", tmp_path / "images",
                                               num_examples=2, image_size=SIZE)
    path = tmp_path / "images" / coco["images"][0]["file_name"]
    Image.fromarray(np.zeros((SIZE, SIZE // 2, 3), np.uint8)).save(path)
    loaded = sources.load(sources.parse(f"coco:{tmp_path / 'a.json'}:{tmp_path / 'images'}"), "detection",
                          training=False)
    assert list(data_testing.by_id(data_testing.examples(loaded.dataset))) == [coco["images"][1]["id"]]
    assert loaded.stats.count("size_mismatch") == 1
    assert any(str(path) in m and "128x64" in m and "128x128" in m for m in data_testing.warning_messages(caplog))


def test_coco_file_that_is_not_coco_json_is_one_line(tmp_path):
    (tmp_path / "images").mkdir()
    for text, fragment in [("{not json", "is not JSON"), ('{"annotations": []}', "has no 'images' list"),
                           ('{"images": [], "categories": []}', "needs a 'categories' list")]:
        (tmp_path / "a.json").write_text(text)
        source = sources.parse(f"coco:{tmp_path / 'a.json'}:{tmp_path / 'images'}", flag="--eval_data")
        with pytest.raises(ValueError, match=fragment) as error:
            sources.load(source, "detection", training=False)
        assert str(error.value).startswith(f"--eval_data='coco:{tmp_path / 'a.json'}") and "\n" not in str(error.value)


def test_coco_polygons_and_crowd_rle_are_the_annotations_rasterisation(tmp_path):
    star = [64, 10, 74, 40, 105, 40, 80, 58, 90, 90, 64, 70, 38, 90, 48, 58, 23, 40, 54, 40]
    crowd = np.zeros((SIZE, SIZE), np.uint8)
    crowd[5:30, 90:125] = 1
    crowd[100:120, 0:20] = 1
    square = np.zeros((SIZE, SIZE), np.uint8)
    square[70:100, 20:60] = 1
    _, spec = data_testing.polygon_coco(tmp_path, [
        data_testing.annotation(1, 1, [star, [100, 100, 120, 100, 120, 125, 100, 125]]),
        data_testing.annotation(2, 1, {"size": [SIZE, SIZE], "counts": data_testing.column_runs(crowd)}, iscrowd=1),
        data_testing.annotation(3, 2, [[20, 70, 60, 70, 60, 100, 20, 100]])])
    loaded = sources.load(sources.parse(spec), "instance_segmentation", training=False)
    first, second = data_testing.examples(loaded.dataset)
    star_mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([star], SIZE, SIZE)))
    rectangle = np.zeros((SIZE, SIZE), np.uint8)
    rectangle[100:125, 100:120] = 1
    np.testing.assert_array_equal(first["objects"]["segmentation"][..., 0] // 255,
                                  [np.maximum(star_mask, rectangle), crowd])
    np.testing.assert_array_equal(first["objects"]["is_crowd"], [False, True])
    np.testing.assert_array_equal(second["objects"]["segmentation"][..., 0] // 255, [square])
    assert loaded.stats.summary() == ""


@pytest.fixture()
def bad_mask_coco(tmp_path):
    """One good polygon, and one defect per annotation after it (see the test)."""
    good = [10, 10, 40, 10, 40, 30, 10, 30]
    bow_tie = [60, 60, 90, 90, 90, 60, 60, 90]
    annotation = data_testing.annotation
    annotations = [
        annotation(1, 1, [good]),
        annotation(2, 1, [[1, 2, 3, 4], good], bbox=[10, 10, 30, 20]),             # a 2-point polygon left out
        annotation(3, 1, [bow_tie]),                                               # self-intersecting, kept
        annotation(4, 1, [[100, 100, 140, 100, 140, 120, 100, 120]], bbox=[100, 100, 40, 20]),  # past the edge
        annotation(5, 1, [], bbox=[5, 5, 10, 10]),                                 # no segmentation
        annotation(6, 1, {"size": [SIZE, SIZE], "counts": [10, 20]}, bbox=[5, 5, 10, 10]),   # runs too short
        annotation(7, 2, {"size": [64, 64], "counts": [4096]}, bbox=[5, 5, 10, 10]),          # another size
        annotation(8, 2, {"size": [SIZE, SIZE], "counts": "!!bad"}, bbox=[5, 5, 10, 10]),      # not RLE
        annotation(9, 2, [[200, 200, 220, 200, 220, 220]], bbox=[5, 5, 10, 10]),   # all outside the image
        annotation(10, 2, [good], iscrowd=1),
    ]
    return data_testing.polygon_coco(tmp_path, annotations)


def test_bad_coco_masks_are_repaired_or_dropped_counted_and_named(bad_mask_coco, caplog):
    caplog.set_level(logging.WARNING)
    coco, spec = bad_mask_coco
    loaded = sources.load(sources.parse(spec), "instance_segmentation", training=False)
    epochs = [data_testing.examples(loaded.dataset) for _ in range(2)]
    first, second = epochs[0]
    good = np.zeros((SIZE, SIZE), np.uint8)
    good[10:30, 10:40] = 1
    bow_tie = mask_utils.decode(mask_utils.frPyObjects([coco["annotations"][2]["segmentation"][0]], SIZE, SIZE)[0])
    past = np.zeros((SIZE, SIZE), np.uint8)
    past[100:120, 100:128] = 1
    np.testing.assert_array_equal(first["objects"]["segmentation"][..., 0] // 255, [good, good, bow_tie, past])
    np.testing.assert_array_equal(second["objects"]["segmentation"][..., 0] // 255, [good])   # the crowd one
    np.testing.assert_array_equal(second["objects"]["is_crowd"], [True])
    counts = loaded.stats.as_dict()
    assert (counts["bad_polygon"], counts["self_intersecting"], counts["mask_clipped"], counts["bad_mask"],
            counts["box_clipped"]) == (1, 1, 1, 5, 1)
    messages = data_testing.warning_messages(caplog)

    def one_line(*fragments):
        return len([m for m in messages if all(f in m for f in fragments)]) == 1

    assert one_line("annotation 2 (0.png) polygon 0", "4 coordinates")
    assert one_line("annotation 3 (0.png) polygon 0", "self-intersects")
    assert one_line("annotation 4 (0.png)", "polygon 0 reaches past the 128x128 px image; clipped")
    assert one_line("annotation 5 (0.png)", "segmentation is none")
    assert one_line("annotation 6 (0.png)", "RLE runs add up to 30 pixels")
    assert one_line("annotation 7 (1.png)", "RLE size [64, 64] is not the image's [128, 128]")
    assert one_line("annotation 8 (1.png)", "not a compressed RLE string")
    assert one_line("annotation 9 (1.png)", "no pixel inside the 128x128 px image")
    # The same file read for boxes only keeps every box and looks at no mask.
    boxes_only = sources.load(sources.parse(spec), "detection", training=False)
    assert [len(e["objects"]["label"]) for e in data_testing.examples(boxes_only.dataset)] == [6, 4]
    assert not any(boxes_only.stats.count(kind) for kind in ("bad_mask", "bad_polygon", "self_intersecting",
                                                             "mask_clipped"))
