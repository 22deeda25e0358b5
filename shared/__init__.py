"""The face engine and the training pool shared by the three servers.

Plain functions and small classes, no Flask views:

- ``errors``     the one exception type a user can be shown (``UserError``)
- ``storage``    atomic file writes and cross-process locks under ``data/``
- ``images``     safe image decoding (EXIF orientation, size bounds, clear errors)
- ``faces``      detection, 5-point alignment to chips, 128-d embeddings (the only dlib user)
- ``pool``       the training pool on disk: one folder per KOL, chips + cached embeddings, manifest
- ``classifier`` SVM training, the calibrated known/unknown rule, versioned models
- ``web``        the one Flask app factory helper used by all three servers
"""
