"""Training behind `python -m spinenet_tf.train`: the config, tasks, optimizers, the distribution strategy and the
trainer (`loop`)."""
