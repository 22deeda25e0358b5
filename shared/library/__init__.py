"""The media library: kept photos, batches and videos, every face found in them indexed for search,
analysis of videos on the job queue, screen time, and the inbox of recurring unknown people (issue 24).

It sits above ``shared.training`` and ``shared.video`` (it uses both) and below ``shared.web``.
"""
