"""Naming faces: the calibrated known/unknown rule (``rule``), the model (``model``), its training
report (``report``) and its versions on disk (``store``); predictions of photos (``predict``) and batches (``batch``).

Imports :mod:`shared.core` and :mod:`shared.faces`.
"""
