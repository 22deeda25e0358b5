"""From uploaded photos and videos to face crops: the wizard's align step.

Photos: every photo is decoded, every face detected (HOG), aligned with the 5
landmarks to a chip and embedded, in the worker processes of
:mod:`shared.faces.parallel` (one per core). The calling process writes the chips with
:func:`shared.training.pool.save_chip` (content-addressed PNG + cached ``.npy``) while the
workers go on, so nothing is ever embedded twice and the cores only compute.

Videos: frames are sampled by time (:func:`shared.faces.frames.iter_frames`), every
face in them analysed in the workers, and only the person the video is about is
kept: the embeddings of all sampled faces are clustered and the cluster seen in
the most frames wins (one face per frame, the one nearest the cluster's centre).
Consecutive crops that are nearly identical (embedding distance under
:data:`VIDEO_DUPLICATE_DISTANCE`) are dropped, so a 10-second clip gives a varied
handful of crops rather than hundreds of copies of one.

A crop record (a dict, JSON-ready) is::

    {"crop": chip id, "box": [top, right, bottom, left] in the photo/frame's pixels,
     "size": shorter side of the box in pixels, "sharpness": Laplacian variance of the chip,
     "faces": number of faces in the photo (1 for kept video crops),
     "embedding": 128 floats, "t": seconds into the video (videos only)}
"""
import hashlib
from concurrent.futures import as_completed
from pathlib import Path

import cv2
import numpy as np

from shared.core.errors import UserError
from shared.faces import engine, frames, images, parallel
from shared.training.pool import save_chip

#: Photos whose longer side exceeds this are detected on a scaled-down copy (chips still come from full size).
DETECT_MAX_SIDE = 1000
#: Seconds between sampled video frames (longer videos are sampled more sparsely, see MAX_SAMPLES).
VIDEO_EVERY_S = 0.5
#: Most frames sampled from one video.
MAX_SAMPLES = 120
#: Frames larger than this (longer side) are shrunk before detection.
FRAME_MAX_SIDE = 1280
#: Faces closer than this (average linkage) are the same person within one video.
VIDEO_CLUSTER_DISTANCE = 0.55
#: Consecutive crops of the main person closer than this are near-identical: only the first is kept.
VIDEO_DUPLICATE_DISTANCE = 0.12


def source_id(relpath):
    """A stable 16-hex id for a source file (its path relative to the job folder)."""
    return hashlib.sha1(str(relpath).encode("utf-8")).hexdigest()[:16]


def _crop_record(face, cid, faces_in_photo, t=None, sharpness=None):
    top, right, bottom, left = face.box
    sharp = engine.sharpness(face.chip) if sharpness is None else sharpness
    rec = {"crop": cid, "box": [int(v) for v in face.box], "size": int(min(bottom - top, right - left)),
           "sharpness": round(float(sharp), 2), "faces": int(faces_in_photo),
           "embedding": [float(v) for v in face.embedding]}
    if t is not None:
        rec["t"] = round(float(t), 3)
    return rec


def analyze_photo(rgb):
    """Detect, align and embed every face of a photo (large photos detected at a reduced scale;
    upsampling only when the plain pass finds no face).

    rgb: ``(H, W, 3)`` RGB ``uint8``. Returns :class:`shared.faces.engine.Face` list, largest first.
    """
    side = max(rgb.shape[:2])
    scale = DETECT_MAX_SIDE / side if side > DETECT_MAX_SIDE else 1.0
    # Training photos are portraits: the cheap pass (no upsampling, ~4x faster) finds faces
    # of 80 px and more; only photos where it finds none pay for the upsampled pass (40 px+).
    boxes = engine.detect(rgb, upsample=0, scale=scale) or engine.detect(rgb, upsample=1, scale=scale)
    return engine.analyze(rgb, boxes=boxes)


def detect_photo(path):
    """Worker: decode one photo and analyse every face in it (nothing is written).

    Returns ``{"error": sentence or None, "width", "height", "faces": [(box, chip, embedding, sharpness)]}``,
    largest face first.
    """
    try:
        rgb = images.load_image(path)
    except UserError as exc:
        return {"error": exc.message, "faces": [], "width": 0, "height": 0}
    found = [(f.box, f.chip, f.embedding, engine.sharpness(f.chip)) for f in analyze_photo(rgb)]
    return {"error": None, "faces": found, "width": int(rgb.shape[1]), "height": int(rgb.shape[0])}


def store_photo(result, out_folder):
    """Save the chips of a :func:`detect_photo` result in ``out_folder``; returns the JSON-ready result
    ``{"error", "width", "height", "crops": [crop record]}``."""
    crops = []
    for box, chip, embedding, sharp in result["faces"]:
        face = engine.Face(tuple(box), chip, np.asarray(embedding))
        rec = _crop_record(face, save_chip(out_folder, chip, embedding), len(result["faces"]), sharpness=sharp)
        crops.append(rec)
    return {"error": result["error"], "crops": crops, "width": result["width"], "height": result["height"]}


def align_photo(task):
    """Align one photo in this process. ``task = (photo path, chip folder)``.

    Returns ``{"error": sentence or None, "width", "height", "crops": [crop record, ...]}``,
    crops largest face first; their chips are written in the chip folder.
    """
    path, out_folder = task
    return store_photo(detect_photo(path), out_folder)


def analyze_frame(rgb):
    """Worker: every face of a video frame as ``[(box, chip, embedding, sharpness)]``."""
    return [(f.box, f.chip, f.embedding, engine.sharpness(f.chip)) for f in engine.analyze(rgb)]


def align_photos(tasks, progress=None, executor=None):
    """Align many photos on every core.

    tasks: ``[(photo path, chip folder)]``. progress: ``progress(done, total)`` or ``None``.
    The workers decode, detect, align and embed; this process writes the chips
    (PNG + .npy) while they go on with the next photos.
    Returns the :func:`align_photo` results in the order of ``tasks``.
    """
    executor = executor or parallel.executor()
    results = [None] * len(tasks)
    futures = {executor.submit(detect_photo, path): i for i, (path, _) in enumerate(tasks)}
    for n, future in enumerate(as_completed(futures), 1):
        i = futures[future]
        results[i] = store_photo(future.result(), tasks[i][1])
        if progress:
            progress(n, len(tasks))
    return results


def _shrink(rgb):
    side = max(rgb.shape[:2])
    if side <= FRAME_MAX_SIDE:
        return rgb
    scale = FRAME_MAX_SIDE / side
    return cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def sample_times(path, every_s=VIDEO_EVERY_S, max_samples=MAX_SAMPLES):
    """The sampling interval for a video: ``every_s``, or longer so at most ``max_samples`` frames are taken."""
    info = frames.probe(path)
    return max(float(every_s), info.duration / max_samples if max_samples else 0.0), info


def main_person(detections, cluster_distance=VIDEO_CLUSTER_DISTANCE):
    """Pick the person a video is about.

    detections: ``[(frame index, t, [(box, chip, embedding, sharpness), ...]), ...]`` in time order.
    Returns ``(picked, stats)``: ``picked`` is ``[(t, box, chip, embedding, sharpness)]`` with
    at most one face per frame, in time order; ``stats`` counts ``faces`` seen,
    ``people`` (clusters) and ``main_frames``.
    """
    flat = [(fi, t, face) for fi, (_, t, found) in enumerate(detections) for face in found]
    stats = {"faces": len(flat), "people": 0, "main_frames": 0}
    if not flat:
        return [], stats
    E = np.array([face[2] for _, _, face in flat])
    if len(flat) == 1:
        labels = np.zeros(1, dtype=int)
    else:
        from sklearn.cluster import AgglomerativeClustering  # here: sklearn takes a second to import

        labels = AgglomerativeClustering(n_clusters=None, distance_threshold=cluster_distance,
                                         linkage="average").fit_predict(E)
    stats["people"] = int(labels.max() + 1)
    frames_of = {label: {flat[i][0] for i in np.flatnonzero(labels == label)} for label in set(labels)}
    main = max(frames_of, key=lambda label: (len(frames_of[label]), -min(frames_of[label])))
    stats["main_frames"] = len(frames_of[main])
    centre = E[labels == main].mean(axis=0)
    best = {}
    for i in np.flatnonzero(labels == main):
        fi = flat[i][0]
        d = float(np.linalg.norm(E[i] - centre))
        if fi not in best or d < best[fi][0]:
            best[fi] = (d, i)
    picked = []
    for fi in sorted(best):
        _, i = best[fi]
        _, t, (box, chip, embedding, sharp) = flat[i]
        picked.append((t, box, chip, embedding, sharp))
    return picked, stats


def drop_consecutive_duplicates(picked, distance=VIDEO_DUPLICATE_DISTANCE):
    """Keep a crop only when it differs from the last kept one by at least ``distance``.

    picked: ``[(t, box, chip, embedding, sharpness)]`` in time order. Returns ``(kept, dropped count)``.
    """
    kept, last = [], None
    for item in picked:
        if last is not None and float(np.linalg.norm(item[3] - last)) < distance:
            continue
        kept.append(item)
        last = item[3]
    return kept, len(picked) - len(kept)


def sample_video(path, out_folder, every_s=VIDEO_EVERY_S, max_samples=MAX_SAMPLES, progress=None,
                 executor=None, name=None):
    """Varied crops of the person a video is about.

    Frames are sampled every ``every_s`` seconds (at most ``max_samples``), analysed
    on every core, the main person picked (:func:`main_person`) and near-identical
    consecutive crops dropped. Chips are saved in ``out_folder``.
    progress: ``progress(frames analysed, frames to analyse)``.

    Returns ``{"error": None, "frames": sampled, "duration": seconds, "faces": seen,
    "people": clusters, "main_frames": int, "duplicates": dropped, "crops": [crop record]}``;
    an undecodable video gives ``{"error": sentence, "crops": [], ...}``.
    """
    executor = executor or parallel.executor()
    try:
        every, info = sample_times(path, every_s, max_samples)
        sampled = [(fi, t, _shrink(rgb)) for fi, t, rgb in
                   frames.iter_frames(path, every_s=every, max_frames=max_samples, name=name)]
    except UserError as exc:
        return {"error": exc.message, "crops": [], "frames": 0, "duration": 0.0, "faces": 0,
                "people": 0, "main_frames": 0, "duplicates": 0}
    futures = {executor.submit(analyze_frame, rgb): n for n, (_, _, rgb) in enumerate(sampled)}
    found = [None] * len(sampled)
    for done, future in enumerate(as_completed(futures), 1):
        found[futures[future]] = future.result()
        if progress:
            progress(done, len(sampled))
    detections = [(fi, t, f) for (fi, t, _), f in zip(sampled, found)]
    picked, stats = main_person(detections)
    kept, duplicates = drop_consecutive_duplicates(picked)
    crops = []
    for t, box, chip, embedding, sharp in kept:
        face = engine.Face(tuple(box), chip, np.asarray(embedding))
        crops.append(_crop_record(face, save_chip(out_folder, chip, embedding), 1, t=t, sharpness=sharp))
    return {"error": None, "frames": len(sampled), "duration": round(info.duration, 2), **stats,
            "duplicates": duplicates, "crops": crops}


def align_job(kols, job_folder, kind, progress=None):
    """The align step for a whole job.

    kols: the job state's ``kols`` (``[{"name", "files": [{"path" (relative), "name"}]}]``).
    job_folder: the job's folder; chips go to ``chips/<kol index>/``.
    kind: ``"image"`` or ``"video"``. progress: ``progress(done, total)`` in files
    (photos) or sampled frames (videos).

    Returns ``{"kols": [{"name", "sources": [{"id", "name", "error", "crops": [crop record], ...}]}]}``
    with the sources in the order of ``kols[i]["files"]``.
    """
    job_folder = Path(job_folder)
    out = {"kind": kind, "kols": []}
    jobs = []
    for k, kol in enumerate(kols):
        chips = job_folder / "chips" / str(k)
        chips.mkdir(parents=True, exist_ok=True)
        entry = {"name": kol["name"], "sources": []}
        out["kols"].append(entry)
        for f in kol["files"]:
            src = {"id": source_id(f["path"]), "name": f["name"], "path": f["path"]}
            entry["sources"].append(src)
            jobs.append((src, str(job_folder / f["path"]), str(chips)))
    if kind == "image":
        results = align_photos([(path, chips) for _, path, chips in jobs], progress=progress)
        for (src, _, _), result in zip(jobs, results):
            src.update(result)
    else:
        # Each video's frames are spread over the cores; progress counts sampled frames overall.
        totals = []
        for _, path, _ in jobs:
            try:
                every, info = sample_times(path)
                totals.append(max(1, min(MAX_SAMPLES, int(info.duration / every) + 1)))
            except UserError:
                totals.append(1)
        grand, base = sum(totals), 0
        for (src, path, chips), total in zip(jobs, totals):
            def video_progress(done, _n, base=base):
                if progress:
                    progress(min(grand, base + done), grand)
            src.update(sample_video(path, chips, progress=video_progress, name=src["name"]))
            base += total
            if progress:
                progress(min(grand, base), grand)
    return out
