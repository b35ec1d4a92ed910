"""Deterministic preprocessing as one serialisable pipeline (:class:`Preprocessor`)."""

from segshift.transforms.preprocess import PreprocessConfig, Prepared, Preprocessor

__all__ = ["PreprocessConfig", "Prepared", "Preprocessor"]
