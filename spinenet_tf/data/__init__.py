"""Data sources and input pipelines (TensorFlow only: tf.data, TFDS).

Modules are imported one by one (`from spinenet_tf.data import sources`), so importing `spinenet_tf` never imports
tensorflow_datasets or pycocotools; `sources` imports TFDS only where a TFDS builder or split is used. One job per
module:

- `sources`: the data-source strings of `--train_data` / `--eval_data` (`parse`), and `load`, which hands a source
  to the reader of its kind: `builtin_reader`, `coco_reader`, `tfrecord_reader`, `tfds_reader`. What they share is
  in `reading`; what they skip or repair in `bad_data` and (instance masks) `instance_masks`.
- `tfrecord_writer`: writes the tf.Example records `tfrecord_reader` reads (and converts COCO files to them).
- The built-in dataset: `builtin_shapes` draws it (numpy); `builtin_shapes_dataset` serves it as `tf.data` in the
  sources' layout, `builtin_shapes_tfds` as the TFDS builder `builtin_shapes`, `builtin_shapes_coco` as COCO JSON.
- `detection_input`, `classification_input`: the per-task parsers (augmentation, resizing, training targets).
"""
