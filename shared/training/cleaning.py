"""Automatic cleaning of a job's crops, every verdict with a reason a person can read.

Input is the align step's result (see :mod:`shared.training.sampling`): per KOL, the
sources (photos or videos) and their crop records. :func:`clean` decides, per
KOL, which crops to keep. A crop is removed when:

- its photo has **several faces and none is clearly the KOL**: the face nearest
  the KOL's reference (the mean of its single-face crops) is kept when it is
  within :data:`shared.faces.engine.SAME_PERSON_DISTANCE` and clearly nearer (by :data:`MATCH_MARGIN`)
  than the photo's other faces; the other faces are removed as other people;
- the face is **too small** (shorter box side under :data:`MIN_FACE_PX` pixels);
- it is **too blurry** (Laplacian variance of the chip under :data:`MIN_SHARPNESS`);
- it is a **near-duplicate** of a better crop of the same KOL (embedding
  distance under :data:`DUPLICATE_DISTANCE`; the larger, sharper one is kept);
- it is an **identity outlier**: far from its KOL's other crops (distance to the
  leave-one-out median of the KOL's crops over :data:`OUTLIER_DISTANCE`); when it is also
  nearer another KOL of the job, the reason names that KOL.

A crop that is nearer another KOL of the job but *not* far from its own KOL's crops is kept with
a warning (:data:`WARNINGS`): ``bench/bench_cleaning.py`` found that the old rule (remove it) removed
the right person every time on the development sets (13 of 13 photos: 4 on lfw_dev, 8 on asian_dev,
1 on five_celebs, a real Madonna photo "looking more like elton_john"; East Asian faces sit close
together), and no distance, margin or ratio separated those from photos of another KOL of the job
put into the folder (which are warned about too: the person decides).

Every reason is plain words (:data:`REASONS`); the distances and limits behind it are in the
item's ``detail``, shown behind the page's details.

Before import, :func:`two_people` flags a KOL folder whose faces form two clear groups
(two people in one folder: nothing is removed, the person decides).

Photos with no face (or unreadable) are reported too, under the photo's id.
The person can override both ways: ``remove`` (crop ids) and ``keep`` (crop ids).
Distances are Euclidean between dlib 128-d embeddings; thresholds were set on
the five_celebs photos (same person: median-centre distance 0.25-0.63; nearest
other person's centre: 0.57 and more).
"""
import numpy as np

from shared.faces import engine
from shared.recognition.report import MIN_PHOTOS

MIN_FACE_PX = 40
MIN_SHARPNESS = 15.0
DUPLICATE_DISTANCE = 0.1
MATCH_MARGIN = 0.08
OUTLIER_DISTANCE = 0.68
#: Another KOL's centre must be nearer by this much for a crop to count as that KOL's.
OTHER_KOL_MARGIN = 0.03
#: Outliers are only looked for in KOLs with at least this many crops.
OUTLIER_MIN_CROPS = 4
#: KOLs with fewer kept crops than this get a warning before import: the one minimum of the whole
#: app (:data:`shared.recognition.report.MIN_PHOTOS`, which the training report uses too).
FEW_CROPS = MIN_PHOTOS
#: Two groups of a KOL's kept faces this far apart (average distance between their faces, where
#: dlib's same-person distance is 0.6, :data:`shared.faces.engine.SAME_PERSON_DISTANCE`) make
#: :func:`two_people` warn that the folder holds two people.
SPLIT_DISTANCE = 0.7
#: ... when each group holds at least this many faces (a lone odd face is the outlier check's job).
SPLIT_MIN_FACES = 3


def _vec(rec):
    return np.asarray(rec["embedding"], dtype=np.float64)


def _quality(rec):
    return rec["size"] * min(rec["sharpness"], 500.0)


def verdict(code, name="", other="", source="", faces=0, numbers=None):
    """One automatic verdict: ``{"code", "reason": plain words, "detail": the numbers or None}``.

    code: one of :data:`REASONS`' keys; name: the KOL; other: the other KOL (``looks_like_other``);
    source: the photo's file name; faces: faces in the photo; numbers: the measured values behind
    the verdict, in words (shown behind the page's details, never in the main text).
    """
    reason = REASONS[code].format(name=name, other=other, source=source, faces=faces)
    return {"code": code, "reason": reason, "detail": numbers}


#: The plain words of each automatic reason (``{name}`` the KOL, ``{other}`` another KOL of the
#: job, ``{source}`` the file, ``{faces}`` faces in the photo). The numbers go to ``detail``.
REASONS = {
    "unreadable": "'{source}' could not be opened as a photo",
    "no_face": "no face found in '{source}'",
    "no_face_video": "no face found in any sampled frame of '{source}'",
    "small": "the face is too small to learn from",
    "blurry": "this photo is blurry",
    "duplicate": "almost the same photo as another one of {name} that is kept",
    "other_person": "another person in a photo of {name} ('{source}')",
    "several_faces": "{faces} faces in '{source}' and none is clearly {name}",
    "looks_like_other": "this looks more like {other} than like the other photos of {name}",
    "outlier": "this looks like a different person from the other photos of {name}",
}
#: The plain words of a warning on a face that is kept (the person may still remove it).
WARNINGS = {"looks_like_other": "kept, but it looks a lot like {other}: check it is the right person"}


def _quality_verdict(rec):
    """The small / blurry verdict of a crop, or ``None`` when its quality is fine."""
    if rec["size"] < MIN_FACE_PX:
        return verdict("small", numbers=f"face {rec['size']} px high; at least {MIN_FACE_PX} px needed")
    if rec["sharpness"] < MIN_SHARPNESS:
        return verdict("blurry", numbers=f"sharpness {rec['sharpness']:.0f}; at least {MIN_SHARPNESS:.0f} needed")
    return None


def _auto(align, crop_index):
    """Automatic verdicts: ``{(k, crop id): verdict or None}``, photo-level ``[(k, source id, verdict)]``,
    and warnings on kept crops ``{(k, crop id): verdict}``."""
    verdicts = {}
    photos = []  # (k, source id, verdict)
    kols = align["kols"]
    # 1. photos: unreadable, no face, several faces
    multi = []
    for k, kol in enumerate(kols):
        for src in kol["sources"]:
            if src.get("error"):
                photos.append((k, src["id"], verdict("unreadable", source=src["name"], numbers=src["error"])))
            elif not src["crops"]:
                code = "no_face_video" if align.get("kind") == "video" else "no_face"
                photos.append((k, src["id"], verdict(code, source=src["name"])))
            elif len(src["crops"]) > 1 and align.get("kind") != "video":
                multi.append((k, src))
            else:
                for rec in src["crops"]:
                    verdicts[(k, rec["crop"])] = None
    # 2. quality of single crops
    for key in list(verdicts):
        verdicts[key] = _quality_verdict(crop_index[key])
    # 3. several faces in a photo: keep the one that is clearly the KOL, if any
    for k, src in multi:
        good = [np.asarray(crop_index[key]["embedding"]) for key, r in verdicts.items() if key[0] == k and r is None]
        name = kols[k]["name"]
        recs = src["crops"]
        if len(good) >= 2:
            ref = np.mean(good, axis=0)
            d = np.array([np.linalg.norm(_vec(r) - ref) for r in recs])
            order = np.argsort(d)
            best, second = order[0], order[1]
            if d[best] <= engine.SAME_PERSON_DISTANCE and d[second] - d[best] >= MATCH_MARGIN:
                for i, rec in enumerate(recs):
                    verdicts[(k, rec["crop"])] = None if i == best else verdict(
                        "other_person", name=name, source=src["name"],
                        numbers=f"distance to {name}'s other photos {d[i]:.2f}; the face kept {d[best]:.2f}")
                verdicts[(k, recs[best]["crop"])] = _quality_verdict(recs[best])
                continue
        numbers = (f"nearest face at distance {d[best]:.2f}, next {d[second]:.2f} (at most "
                   f"{engine.SAME_PERSON_DISTANCE}, with {MATCH_MARGIN} between them)") if len(good) >= 2 else (
                   f"fewer than 2 photos of {name} with one face to compare with")
        for rec in recs:
            verdicts[(k, rec["crop"])] = verdict("several_faces", name=name, source=src["name"], faces=len(recs),
                                                 numbers=numbers)
    # 4. near-duplicates within a KOL: the best crop of a group stays
    for k in range(len(kols)):
        alive = sorted((key for key, r in verdicts.items() if key[0] == k and r is None),
                       key=lambda key: -_quality(crop_index[key]))
        accepted = []
        for key in alive:
            v = _vec(crop_index[key])
            twin = next((a for a in accepted if np.linalg.norm(_vec(crop_index[a]) - v) < DUPLICATE_DISTANCE), None)
            if twin is not None:
                verdicts[key] = verdict("duplicate", name=kols[k]["name"], numbers=f"near copy of crop {twin[1]} "
                                        f"(distance under {DUPLICATE_DISTANCE})")
            else:
                accepted.append(key)
    # 5. identity outliers
    alive = {k: [key for key, r in verdicts.items() if key[0] == k and r is None] for k in range(len(kols))}
    warnings = {}
    centres = {k: np.median([_vec(crop_index[key]) for key in keys], axis=0)
               for k, keys in alive.items() if len(keys) >= 2}
    for k, keys in alive.items():
        if len(keys) < OUTLIER_MIN_CROPS:
            continue
        X = np.array([_vec(crop_index[key]) for key in keys])
        name = kols[k]["name"]
        for i, key in enumerate(keys):
            own = float(np.linalg.norm(X[i] - np.median(np.delete(X, i, axis=0), axis=0)))
            others = {j: float(np.linalg.norm(X[i] - c)) for j, c in centres.items() if j != k}
            nearest = min(others, key=others.get) if others else None
            closer = nearest is not None and others[nearest] + OTHER_KOL_MARGIN < own
            if closer:
                found = verdict("looks_like_other", name=name, other=kols[nearest]["name"],
                                numbers=f"distance to {kols[nearest]['name']}'s photos {others[nearest]:.2f}, "
                                        f"to {name}'s other photos {own:.2f}; removed only over {OUTLIER_DISTANCE}")
                if own > OUTLIER_DISTANCE:
                    verdicts[key] = found
                else:  # near its own photos too: on the development sets, always the right person
                    warnings[key] = dict(found, reason=WARNINGS["looks_like_other"].format(other=kols[nearest]["name"]))
            elif own > OUTLIER_DISTANCE:
                verdicts[key] = verdict("outlier", name=name, numbers=f"distance to {name}'s other photos "
                                        f"{own:.2f}; at most {OUTLIER_DISTANCE}")
    return verdicts, photos, warnings


def clean(align, remove=(), keep=()):
    """Decide which crops of a job to keep.

    align: the align step's result ``{"kind", "kols": [{"name", "sources": [...]}]}``.
    remove, keep: crop ids the person removed / kept by hand (they win over the
        automatic verdicts; an id in both is kept).

    Returns ``{"kols": [{"name", "kept": [item], "removed": [item]}], "remove": [...], "keep": [...]}``
    where an item is ``{"crop": id, "reason": plain words or None, "source": file name,
    "auto": the automatic reason (plain words) or None, "code": the automatic reason's
    :data:`REASONS` key or None, "detail": its numbers in words or None, "photo": bool}``;
    ``photo`` items are photos without a usable face (their id is the photo's id; they cannot be kept).
    A crop kept automatically also has ``"warning"``: plain words when it should be looked at
    (:data:`WARNINGS`; its numbers in ``detail``), else None. Kept crops are in their sources' order.
    """
    remove, keep = set(remove) - set(keep), set(keep)
    crop_index = {(k, rec["crop"]): rec for k, kol in enumerate(align["kols"])
                  for src in kol["sources"] for rec in src["crops"]}
    verdicts, photos, warnings = _auto(align, crop_index)
    out = []
    for k, kol in enumerate(align["kols"]):
        entry = {"name": kol["name"], "kept": [], "removed": []}
        for kk, sid, found in photos:
            if kk == k:
                src = next(s for s in kol["sources"] if s["id"] == sid)
                entry["removed"].append({"crop": sid, "reason": found["reason"], "source": src["name"],
                                         "auto": found["reason"], "code": found["code"],
                                         "detail": found["detail"], "photo": True})
        seen = set()
        for src in kol["sources"]:
            for rec in src["crops"]:
                key = (k, rec["crop"])
                if key in seen:
                    continue
                seen.add(key)
                found = verdicts.get(key) or {"code": None, "reason": None, "detail": None}
                auto = found["reason"]
                item = {"crop": rec["crop"], "source": src["name"], "auto": auto, "code": found["code"],
                        "detail": found["detail"], "photo": False}
                if rec["crop"] in keep:
                    entry["kept"].append(dict(item, reason="kept by hand" if auto else None))
                elif rec["crop"] in remove:
                    entry["removed"].append(dict(item, reason="removed by hand"))
                elif auto:
                    entry["removed"].append(dict(item, reason=auto))
                else:
                    warning = warnings.get(key)
                    entry["kept"].append(dict(item, reason=None, warning=warning and warning["reason"],
                                              detail=warning and warning["detail"]))
        out.append(entry)
    return {"kols": out, "remove": sorted(remove), "keep": sorted(keep)}


def contract_view(result):
    """The scripted contract's JSON for a cleaning result:
    ``{"kols": {name: {"kept": int, "removed": [{"crop": id, "reason": str}]}}}``."""
    return {"kols": {k["name"]: {"kept": len(k["kept"]),
                                 "removed": [{"crop": r["crop"], "reason": r["reason"]} for r in k["removed"]]}
                     for k in result["kols"]}}


def two_people(X):
    """Whether one KOL's face embeddings ``X`` (n x 128) split into two clearly different people.

    Average-linkage clustering that stops merging groups whose faces are on average
    :data:`SPLIT_DISTANCE` or more apart; when two of the groups left hold at least
    :data:`SPLIT_MIN_FACES` faces each, returns ``(a, b, distance)``: the row indices of
    the two largest groups and their average distance between faces (dlib units). Else ``None``.
    """
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    if len(X) < 2 * SPLIT_MIN_FACES:
        return None
    # here, not at the top: sklearn takes a second to import, and only this check needs it
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.metrics.pairwise import euclidean_distances

    labels = AgglomerativeClustering(n_clusters=None, distance_threshold=SPLIT_DISTANCE,
                                     linkage="average").fit_predict(X)
    groups = sorted((np.flatnonzero(labels == label) for label in set(labels)), key=len, reverse=True)
    if len(groups) < 2 or len(groups[1]) < SPLIT_MIN_FACES:
        return None
    a, b = groups[0].tolist(), groups[1].tolist()
    distance = float(euclidean_distances(X[a], X[b]).mean())
    return a, b, distance
