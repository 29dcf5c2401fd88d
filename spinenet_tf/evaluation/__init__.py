"""Evaluation: COCO detection metrics (pycocotools)."""
