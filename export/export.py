"""Exports a trained model: the same as `python -m spinenet_tf.export` (flags: see export/README.md).

    python export/export.py --model_dir=runs/shapes --format=tflite --quantization=int8 \
        --representative_data=builtin:shapes:train --output=detector_int8.tflite
"""

from spinenet_tf import cli, export

if __name__ == "__main__":
    cli.run(export.main)
