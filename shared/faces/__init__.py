"""Face work on pixels: the dlib engine (the only module that touches dlib), photo and video
decoding, boxes, drawing, the worker processes.

Imports only :mod:`shared.core`.
"""
