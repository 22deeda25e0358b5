"""Naming faces: the model (embeddings, the calibrated known/unknown rule, versions on disk),
predictions of photos and batches.

Imports :mod:`shared.core` and :mod:`shared.faces`.
"""
