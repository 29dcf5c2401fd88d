"""Running exported .tflite models with LiteRT (ai-edge-litert): interpreter wrapper, COCO evaluation, latency."""
