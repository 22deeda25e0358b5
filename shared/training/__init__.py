"""Building the model: the training pool on disk, zips, sampling, cleaning, the wizard's jobs
and their queue.

Imports :mod:`shared.core`, :mod:`shared.faces` and :mod:`shared.recognition`.
"""
