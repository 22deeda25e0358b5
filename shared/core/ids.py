"""The ids of things stored on disk, one pattern each: every id taken from a request is checked here before it names a path.

Four of them are 16 lower-case hexadecimal digits (64 bits): one definition, :data:`HEX16_RE`,
under a name per kind of id, so that a check says which id it expects.

- chip: a face chip of the pool, ``data/pool/<slug>/<chip id>.png``: the first 16 hex digits of
  the SHA-1 of its pixels (:func:`shared.training.pool.chip_id`);
- crop: a face cropped in a training job, ``data/jobs/<job>/chips/<kol index>/<crop id>.png``:
  the same content id, which it keeps as a chip once imported into the pool;
- job: a training job's folder, ``data/jobs/<job id>/`` (``secrets.token_hex(8)``);
- video: an uploaded video's folder, ``data/videos/<video id>/`` (``secrets.token_hex(8)``);
- run: a prediction result's folder, ``data/predictions/<run id>/`` (``uuid4().hex``, 32 hex digits);
- model version: ``data/models/<version>/``, its UTC time and 6 random hex digits
  (``20261203-130501-1a2b3c``), so that names sort by age.
"""
import re

#: 16 lower-case hexadecimal digits, nothing before or after.
HEX16_RE = re.compile(r"^[0-9a-f]{16}$")

#: A chip of the training pool (content id: SHA-1 of its pixels, first 16 hex digits).
CHIP_ID_RE = HEX16_RE
#: A crop of a training job (the same content id as the chip it becomes in the pool).
CROP_ID_RE = CHIP_ID_RE
#: A training job (its folder under ``data/jobs/``).
JOB_ID_RE = HEX16_RE
#: An uploaded video (its folder under ``data/videos/``).
VIDEO_ID_RE = HEX16_RE
#: A prediction result (its folder under ``data/predictions/``: ``uuid4().hex``).
RUN_RE = re.compile(r"^[0-9a-f]{32}$")
#: A model version (its folder under ``data/models/``): ``YYYYMMDD-HHMMSS-`` and 6 hex digits.
VERSION_RE = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")
