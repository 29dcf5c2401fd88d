"""Training support shared by the models and (later) `python -m spinenet_tf.train`."""
