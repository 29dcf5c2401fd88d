"""COCO AP of a .tflite detector with LiteRT (flags: see tflite/README.md).

    python tflite/evaluate.py --model=detector_int8.tflite --data=builtin:shapes:validation
"""

from spinenet_tf.litert import evaluate

if __name__ == "__main__":
    evaluate.main()
