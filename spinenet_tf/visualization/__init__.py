"""Pictures: `network` draws scale-permuted networks like the SpineNet paper's figures, `detections` draws
detected boxes on images, and `draw_command` is `python -m spinenet_tf.draw` without its flags. Pillow only: no
Keras model is built. Modules are imported one by one (`from spinenet_tf.visualization import network`).
"""
