"""Video: stored videos, face tracks across frames and their names, appearances, the MJPEG stream.

Imports :mod:`shared.core`, :mod:`shared.faces` and :mod:`shared.recognition`.
"""
