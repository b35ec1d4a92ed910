"""Deterministic preprocessing as one serialisable pipeline (:class:`Preprocessor`)."""

from segshift.transforms.preprocess import Prepared, PreprocessConfig, Preprocessor

__all__ = ["Prepared", "PreprocessConfig", "Preprocessor"]
