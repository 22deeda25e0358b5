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
  leave-one-out median of the KOL's crops over :data:`OUTLIER_DISTANCE`), or
  nearer another KOL of the job than its own.

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

MIN_FACE_PX = 40
MIN_SHARPNESS = 15.0
DUPLICATE_DISTANCE = 0.1
MATCH_MARGIN = 0.08
OUTLIER_DISTANCE = 0.68
#: Another KOL's centre must be nearer by this much for a crop to count as that KOL's.
OTHER_KOL_MARGIN = 0.03
#: Outliers are only looked for in KOLs with at least this many crops.
OUTLIER_MIN_CROPS = 4
#: KOLs with fewer kept crops than this get a warning before import.
FEW_CROPS = 5
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


def _auto(align, crop_index):
    """Automatic verdicts: ``{(k, crop id): reason or None}`` plus photo-level entries."""
    verdict = {}
    photos = []  # (k, source id, reason)
    kols = align["kols"]
    # 1. photos: unreadable, no face, several faces
    multi = []
    for k, kol in enumerate(kols):
        for src in kol["sources"]:
            if src.get("error"):
                photos.append((k, src["id"], f"'{src['name']}' could not be read: {src['error']}"))
            elif not src["crops"]:
                what = "in any sampled frame of" if align.get("kind") == "video" else "in"
                photos.append((k, src["id"], f"no face found {what} '{src['name']}'"))
            elif len(src["crops"]) > 1 and align.get("kind") != "video":
                multi.append((k, src))
            else:
                for rec in src["crops"]:
                    verdict[(k, rec["crop"])] = None
    # 2. quality of single crops
    for (k, cid) in list(verdict):
        rec = crop_index[(k, cid)]
        if rec["size"] < MIN_FACE_PX:
            verdict[(k, cid)] = f"face too small ({rec['size']} px; at least {MIN_FACE_PX} px needed)"
        elif rec["sharpness"] < MIN_SHARPNESS:
            verdict[(k, cid)] = f"too blurry (sharpness {rec['sharpness']:.0f}; at least {MIN_SHARPNESS:.0f})"
    # 3. several faces in a photo: keep the one that is clearly the KOL, if any
    for k, src in multi:
        good = [np.asarray(crop_index[key]["embedding"]) for key, r in verdict.items() if key[0] == k and r is None]
        name = kols[k]["name"]
        recs = src["crops"]
        if len(good) >= 2:
            ref = np.mean(good, axis=0)
            d = np.array([np.linalg.norm(_vec(r) - ref) for r in recs])
            order = np.argsort(d)
            best, second = order[0], order[1]
            if d[best] <= engine.SAME_PERSON_DISTANCE and d[second] - d[best] >= MATCH_MARGIN:
                for i, rec in enumerate(recs):
                    verdict[(k, rec["crop"])] = None if i == best else (
                        f"another person in a photo of {name} ('{src['name']}')")
                rec = recs[best]
                if rec["size"] < MIN_FACE_PX:
                    verdict[(k, rec["crop"])] = f"face too small ({rec['size']} px; at least {MIN_FACE_PX} px needed)"
                elif rec["sharpness"] < MIN_SHARPNESS:
                    verdict[(k, rec["crop"])] = f"too blurry (sharpness {rec['sharpness']:.0f}; at least {MIN_SHARPNESS:.0f})"
                continue
        for rec in recs:
            verdict[(k, rec["crop"])] = (f"{len(recs)} faces in '{src['name']}' and none is clearly {name}")
    # 4. near-duplicates within a KOL: the best crop of a group stays
    for k in range(len(kols)):
        alive = sorted((key for key, r in verdict.items() if key[0] == k and r is None),
                       key=lambda key: -_quality(crop_index[key]))
        accepted = []
        for key in alive:
            v = _vec(crop_index[key])
            twin = next((a for a in accepted if np.linalg.norm(_vec(crop_index[a]) - v) < DUPLICATE_DISTANCE), None)
            if twin is not None:
                verdict[key] = f"near-duplicate of crop {twin[1]}"
            else:
                accepted.append(key)
    # 5. identity outliers
    alive = {k: [key for key, r in verdict.items() if key[0] == k and r is None] for k in range(len(kols))}
    centres = {k: np.median([_vec(crop_index[key]) for key in keys], axis=0)
               for k, keys in alive.items() if len(keys) >= 2}
    for k, keys in alive.items():
        if len(keys) < OUTLIER_MIN_CROPS:
            continue
        X = np.array([_vec(crop_index[key]) for key in keys])
        for i, key in enumerate(keys):
            own = float(np.linalg.norm(X[i] - np.median(np.delete(X, i, axis=0), axis=0)))
            others = {j: float(np.linalg.norm(X[i] - c)) for j, c in centres.items() if j != k}
            nearest = min(others, key=others.get) if others else None
            if nearest is not None and others[nearest] + OTHER_KOL_MARGIN < own:
                verdict[key] = (f"looks more like {kols[nearest]['name']} than {kols[k]['name']} "
                                f"(distance {others[nearest]:.2f} vs {own:.2f})")
            elif own > OUTLIER_DISTANCE:
                verdict[key] = (f"far from the other photos of {kols[k]['name']} "
                                f"(distance {own:.2f}; over {OUTLIER_DISTANCE})")
    return verdict, photos


def clean(align, remove=(), keep=()):
    """Decide which crops of a job to keep.

    align: the align step's result ``{"kind", "kols": [{"name", "sources": [...]}]}``.
    remove, keep: crop ids the person removed / kept by hand (they win over the
        automatic verdicts; an id in both is kept).

    Returns ``{"kols": [{"name", "kept": [item], "removed": [item]}], "remove": [...], "keep": [...]}``
    where an item is ``{"crop": id, "reason": str|None, "source": file name,
    "auto": automatic reason or None, "photo": bool}``; ``photo`` items are photos
    without a usable face (their id is the photo's id; they cannot be kept).
    Kept crops are in their sources' order.
    """
    remove, keep = set(remove) - set(keep), set(keep)
    crop_index, source_of = {}, {}
    for k, kol in enumerate(align["kols"]):
        for src in kol["sources"]:
            for rec in src["crops"]:
                crop_index[(k, rec["crop"])] = rec
                source_of[(k, rec["crop"])] = src["name"]
    verdict, photos = _auto(align, crop_index)
    out = []
    for k, kol in enumerate(align["kols"]):
        entry = {"name": kol["name"], "kept": [], "removed": []}
        for kk, sid, reason in photos:
            if kk == k:
                src = next(s for s in kol["sources"] if s["id"] == sid)
                entry["removed"].append({"crop": sid, "reason": reason, "source": src["name"],
                                         "auto": reason, "photo": True})
        seen = set()
        for src in kol["sources"]:
            for rec in src["crops"]:
                key = (k, rec["crop"])
                if key in seen:
                    continue
                seen.add(key)
                auto = verdict.get(key)
                item = {"crop": rec["crop"], "source": src["name"], "auto": auto, "photo": False}
                if rec["crop"] in keep:
                    entry["kept"].append(dict(item, reason="kept by hand" if auto else None))
                elif rec["crop"] in remove:
                    entry["removed"].append(dict(item, reason="removed by hand"))
                elif auto:
                    entry["removed"].append(dict(item, reason=auto))
                else:
                    entry["kept"].append(dict(item, reason=None))
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
