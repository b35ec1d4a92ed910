"""Prediction of whole volumes in their original geometry, with quality-control scores."""
