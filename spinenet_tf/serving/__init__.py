"""Export of trained models: serving signatures, SavedModel, TFLite conversion, metadata, calibration data."""
