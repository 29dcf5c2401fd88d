"""Mask R-CNN on SpineNet (He et al., arXiv:1703.06870; SpineNet, arXiv:1912.05027 §5.1), the two-stage detector.

`model` holds the `MaskRCNN` Keras model (inference path); `rpn_head` and `heads` its RPN, box and mask heads;
`roi_ops` the proposal, RoIAlign and second-stage detection ops; `targets`, `losses` and `training` the training
targets, the losses and the training forward pass. The single-stage building blocks they share with RetinaNet
(anchors, box coder, matcher) stay in `spinenet_tf.detection`. Modules are imported one by one
(`from spinenet_tf.detection.maskrcnn import targets`), so the data pipeline can use the targets without the model.
"""
