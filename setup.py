"""spinenet_tf: SpineNet (Du et al., CVPR 2020) backbones, detectors and classifiers in Keras 3."""

import pathlib
import re

import setuptools

_HERE = pathlib.Path(__file__).parent
_VERSION = re.search(r'__version__ = "([^"]+)"', (_HERE / "spinenet_tf" / "__init__.py").read_text()).group(1)

setuptools.setup(
    name="spinenet_tf",
    version=_VERSION,
    description="SpineNet and SpineNet-Mobile backbones, RetinaNet and classifiers in Keras 3, with TFLite export.",
    long_description=(_HERE / "README.md").read_text() if (_HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["spinenet_tf", "spinenet_tf.*"]),
    install_requires=[
        "tensorflow~=2.20.0",
        "tensorflow-datasets",
        "importlib-resources",  # tensorflow-datasets 4.9.x imports it but declares it only for Python < 3.9
        "absl-py",
        "pycocotools",
        "numpy",
        "pillow",
        "pyglove",  # spinenet_tf.search: the search spaces and evolution (SpineNet paper §3.1, §5.1)
    ],
    extras_require={
        # `python -m spinenet_tf.export --format=tflite`: detectors get MediaPipe metadata, written with the schema
        # classes mediapipe ships (spinenet_tf/serving/metadata.py) and flatbuffers; --quantization=int8 measures
        # activation ranges with LiteRT (spinenet_tf/serving/calibration.py). Without it, such an export stops with
        # one line naming this extra (spinenet_tf/cli.py).
        "tflite": ["mediapipe", "flatbuffers", "ai-edge-litert"],
        # `spinenet_tf.litert` (tflite/evaluate.py, tflite/benchmark.py) runs .tflite files with LiteRT.
        "litert": ["ai-edge-litert"],
        "dev": [
            "pytest",
            "pytest-xdist",  # `make test` runs on both cores
            "tf-models-official==2.20.0",  # the oracle: Google's SpineNet, only for parity tests and benchmarks
            "ai-edge-litert",
            "mediapipe",  # the Android-side client (ObjectDetector) in the TFLite tests
        ],
    },
    license="Apache-2.0",
)
