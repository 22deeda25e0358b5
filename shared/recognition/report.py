"""The training report's numbers and words: metrics of a model, and how two models compare.

- :func:`training_metrics`: what the report page shows about a new model (photo counts, the
  KOL pairs most easily confused, the naming threshold and why, leave-one-out accuracy);
- :func:`compare`: a new model against the previous one's meta (KOLs added / removed, photo counts);
- :func:`version_history`: the kept versions, newest first, each compared in one plain sentence
  with the one kept before it (the models page).

A model here is a :class:`shared.recognition.model.Model` (its arrays are read, nothing is changed).
"""
import numpy as np

from shared.recognition.rule import KOL_ODDS, decision_distance


def confused_pairs(model, top=10):
    """The KOL pairs most easily confused, for every KOL with a neighbour.

    For each KOL its nearest other KOL by centroid distance; pairs are ranked by that
    distance, closest first. ``count`` is how many of the two KOLs' photos are nearer to the
    other KOL's centroid than to their own (own centroid without the photo itself; a KOL
    with one photo counts as its own centroid). Returns ``[(slug_a, slug_b, distance, count)]``.
    Memory stays ``O(K * 1024)`` (centroid distances in blocks).
    """
    K = len(model.classes)
    if K < 2:
        return []
    C = model.centroids
    nearest = np.zeros(K, dtype=np.int64)
    dist = np.zeros(K)
    for start in range(0, K, 1024):
        block = np.sqrt(model.sq_distances(C[start:start + 1024]))
        block[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf
        nearest[start:start + 1024] = block.argmin(1)
        dist[start:start + 1024] = block.min(1)
    pairs = {}
    for a in np.argsort(dist)[:top * 2]:
        b = int(nearest[a])
        key = tuple(sorted((int(a), b)))
        if key in pairs:
            continue
        count = 0
        for i, j in (key, key[::-1]):
            rows = model.X[model.offsets[i]:model.offsets[i + 1]].astype(np.float64)
            n = len(rows)
            own = (model.centroids[i] * n - rows) / (n - 1) if n > 1 else rows
            count += int((np.linalg.norm(rows - model.centroids[j], axis=1) <
                          np.linalg.norm(rows - own, axis=1)).sum())
        pairs[key] = (model.classes[key[0]], model.classes[key[1]], round(float(dist[a]), 4), count)
        if len(pairs) == top:
            break
    return list(pairs.values())


def cross_validated_accuracy(model, sample=2000):
    """Leave-one-out "which KOL" accuracy on the pool: each photo of a KOL with >= 2 photos, taken
    out of its own centroid, is given to the nearest centroid; the share named right (closed set,
    no "unknown"). At most ``sample`` photos (a fixed random sample). ``None`` when not measurable
    (fewer than 2 KOLs, or no KOL with 2 photos)."""
    K = len(model.classes)
    rows = np.flatnonzero(np.repeat(model.counts, model.counts) >= 2)
    if K < 2 or not len(rows):
        return None
    if len(rows) > sample:
        rows = np.sort(np.random.default_rng(0).choice(rows, sample, replace=False))
    y = model.y[rows]
    E = model.X[rows].astype(np.float64)
    n = model.counts[y].astype(np.float64)
    own = (model.centroids[y].astype(np.float64) * n[:, None] - E) / (n - 1)[:, None]
    right = 0
    for start in range(0, len(rows), 512):
        sl = slice(start, start + 512)
        D = model.sq_distances(E[sl])
        D[np.arange(len(D)), y[sl]] = ((E[sl] - own[sl]) ** 2).sum(1)
        right += int((D.argmin(1) == y[sl]).sum())
    return round(right / len(rows), 4)



def training_metrics(model, seconds):
    """The report page's numbers: photo counts, confused pairs, the threshold and why."""
    thresholds = {n: decision_distance(model.rule, n) for n in (1, 3, 5, 20)}
    t1, t5, t20 = (thresholds[n] for n in (1, 5, 20))
    why = ("A face is named only when it is close to one KOL's average face and clearly closer to it than "
           "to any other KOL; otherwise it is \"unknown\". The limits are fixed, not tuned on your KOLs: they "
           "were chosen on thousands of photos of other people, for photos and videos in which your KOLs appear "
           f"about {KOL_ODDS:g} times as often as strangers, so that a KOL's photo and a stranger's photo are "
           "about equally unlikely to be answered wrongly.")
    if t1 and t5 and t20:
        why += (f" When no other KOL comes close, the limit is a distance of {t1:.2f} from a KOL with one "
                f"photo, {t5:.2f} with five and {t20:.2f} with twenty (an average of many photos sits closer "
                f"to every face, so its limit is tighter); when another KOL is nearly as close, the limit "
                f"shrinks, down to about {decision_distance(model.rule, 5, 0.0):.2f}.")
    few = [s for s, n in zip(model.classes, model.counts) if n < 3]
    return {
        "rule": "nearest centroid + calibrated open-set rule",
        "cv_accuracy": cross_validated_accuracy(model),
        "threshold": round(t5, 4) if t5 else None,
        "thresholds_by_photos": {str(n): (round(t, 4) if t else None) for n, t in thresholds.items()},
        "threshold_why": why,
        "per_kol": {s: int(n) for s, n in zip(model.classes, model.counts)},
        "few_photos": few,
        "confused": [{"a": a, "b": b, "distance": d, "count": c} for a, b, d, c in confused_pairs(model)],
        "train_seconds": round(seconds, 3),
    }


def compare(previous_meta, model):
    """Plain comparison with the previous model's meta: KOLs added / removed (``removed_names``: their
    names in the previous model, which the new one no longer has), photo counts."""
    if not previous_meta:
        return None
    before = (previous_meta.get("metrics") or {}).get("per_kol") or {}
    after = model.meta["metrics"]["per_kol"]
    removed = sorted(set(before) - set(after))
    return {"previous_version": previous_meta.get("version"),
            "added": sorted(set(after) - set(before)), "removed": removed,
            "removed_names": {s: (previous_meta.get("names") or {}).get(s, s) for s in removed},
            "more_photos": sorted(s for s in after if s in before and after[s] > before[s]),
            "fewer_photos": sorted(s for s in after if s in before and after[s] < before[s]),
            "identities_before": previous_meta.get("identities"), "samples_before": previous_meta.get("samples")}


def _percent(accuracy):
    return "not measurable" if accuracy is None else f"{100 * accuracy:.1f} %"


def _names_list(slugs, names, most=8):
    shown = [names.get(s, s) for s in slugs[:most]]
    return ", ".join(shown) + (f" and {len(slugs) - most} more" if len(slugs) > most else "")


def version_history(store, names=None, merged=None):
    """The kept model versions, newest first, each compared in plain words with the one kept before it.

    store: :class:`ModelStore`; names: ``{slug: display name}`` (normally the pool's
    ``names()``, falling back to each version's own names, then to the slug); merged: ``{slug: slug
    it was merged into}`` (the pool's merges): a KOL that left a version by a merge into a KOL that
    version knows reads "A merged into B", not "removed".
    Returns ``[{"version", "created" (ISO UTC or None), "current": bool, "identities": int,
    "samples": int, "cv_accuracy": float in [0, 1] or None, "kols": [slug] (sorted),
    "comparison": None for the oldest kept version, else {"previous": version, "added": [slug],
    "removed": [slug] (merges included), "merged": [{"slug", "into"}], "accuracy_before", "accuracy_after", "accuracy": "better" | "worse" |
    "same" | "not comparable", "summary": one plain sentence}}]``. The comparison is with the
    previous KEPT version (older ones were pruned), from the KOLs in each version's meta.
    """
    names, merged = names or {}, merged or {}
    current = store.current_version()
    rows, before = [], None
    for version in store.versions():  # oldest first
        meta = store.meta(version) or {}
        metrics = meta.get("metrics") or {}
        kols = sorted((metrics.get("per_kol") or meta.get("names") or {}).keys())
        label = {s: names.get(s) or (meta.get("names") or {}).get(s) or s for s in kols}
        row = {"version": version, "created": meta.get("created"), "current": version == current,
               "identities": meta.get("identities", len(kols)), "samples": meta.get("samples"),
               "cv_accuracy": metrics.get("cv_accuracy"), "kols": kols, "comparison": None}
        if before is not None:
            label = {**before["label"], **label}
            added = sorted(set(kols) - set(before["kols"]))
            removed = sorted(set(before["kols"]) - set(kols))
            joined = [{"slug": s, "into": merged[s]} for s in removed if merged.get(s) in kols]
            gone = [s for s in removed if merged.get(s) not in kols]
            a0, a1 = before["cv_accuracy"], row["cv_accuracy"]
            if a0 is None or a1 is None:
                accuracy = "not comparable"
            else:
                accuracy = "better" if a1 > a0 else "worse" if a1 < a0 else "same"
            parts = []
            if added:
                parts.append(f"{len(added)} KOL{'' if len(added) == 1 else 's'} added ({_names_list(added, label)})")
            parts += [f"{label.get(m['slug'], m['slug'])} merged into {label.get(m['into'], m['into'])}"
                      for m in joined]
            if gone:
                parts.append(f"{len(gone)} KOL{'' if len(gone) == 1 else 's'} removed ({_names_list(gone, label)})")
            if not parts:
                parts.append("the same KOLs")
            if accuracy == "not comparable":
                parts.append(f"accuracy cannot be compared ({_percent(a0)} before, {_percent(a1)} now)")
            elif accuracy == "same":
                parts.append(f"accuracy unchanged ({_percent(a1)})")
            else:
                parts.append(f"accuracy {accuracy} ({_percent(a0)} before, {_percent(a1)} now)")
            row["comparison"] = {"previous": before["version"], "added": added, "removed": removed, "merged": joined,
                                 "accuracy_before": a0, "accuracy_after": a1, "accuracy": accuracy,
                                 "summary": "; ".join(parts)[:1].upper() + "; ".join(parts)[1:] + "."}
        rows.append(row)
        before = dict(row, label=label)
    return rows[::-1]
