"""Data sources and input pipelines (TensorFlow only: tf.data, TFDS).

Modules are imported one by one (`from spinenet_tf.data import builtin_shapes`), so importing `spinenet_tf` never
imports tensorflow_datasets or pycocotools. `builtin_shapes` holds the generated shapes dataset of `make demo`;
`sources` reads the data-source strings of `--train_data` / `--eval_data` (`coco`, `tfrecord` and TFDS readers,
`bad_data` for what they skip or repair); `detection_input` and `classification_input` are the per-task parsers.
"""
