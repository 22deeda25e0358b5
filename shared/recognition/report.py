"""The training report's numbers and words: metrics of a model, and how two models compare.

- :func:`training_metrics`: what the report page shows about a new model (photo counts, the
  KOL pairs most easily confused, the naming threshold and why, leave-one-out accuracy);
- :func:`roster_report`: what this roster can expect (:func:`expectations`: the model's own answers
  with each photo left out) and what to do (:func:`advice`), added by the app's training step;
- :func:`compare`: a new model against the previous one's meta (KOLs added / removed, photo counts);
- :func:`version_history`: the kept versions, newest first, each compared in one plain sentence
  with the one kept before it (the models page).

A model here is a :class:`shared.recognition.model.Model` (its arrays are read, nothing is changed).
"""
import numpy as np

from shared.recognition.rule import KOL_ODDS, decision_distance

#: The fewest photos a KOL should have, everywhere: cleaning and import warn below it, the training
#: report asks for more. From :data:`BY_PHOTOS`: KOL photos named right with 1 / 3 / 5 / 10 photos per
#: KOL: asian_dev 49 / 72 / 80 / 85 %, lfw_dev 90 / 97 / 98 / 98 %; below 5 the East Asian faces lose
#: 9 points or more.
MIN_PHOTOS = 5
#: An answer is shown as "sure" at this confidence or more.
SURE = 0.9
#: How accuracy grows with photos per KOL, on development photos of people who are not your KOLs:
#: ``{population: {photos per KOL: {"named_right", "strangers_unknown", "sure", "sure_right"}}}``
#: (shares in [0, 1]; ``sure``: answers with confidence >= :data:`SURE` among all answers,
#: ``sure_right``: of those, the right ones). The "ours (shipped)" rows (the rule the servers use) of
#: ``nice .venv/bin/python bench/bench_accuracy.py`` (its docstring has the protocol: 3 splits of each
#: population into two folds of people, each fold measured with the rule and the roster-aware confidence
#: chosen on the other fold);
#: copy them here when the rule changes. Measured 2026-12-03 (lfw_dev: 44 KOLs, 5,730 stranger answers
#: at 5 photos; asian_dev: 20 KOLs, 129).
BY_PHOTOS = {
    "lfw_dev": {1: {"named_right": 0.898, "strangers_unknown": 0.979, "sure": 0.187, "sure_right": 0.994},
                3: {"named_right": 0.974, "strangers_unknown": 0.982, "sure": 0.592, "sure_right": 0.995},
                5: {"named_right": 0.978, "strangers_unknown": 0.986, "sure": 0.718, "sure_right": 0.997},
                10: {"named_right": 0.98, "strangers_unknown": 0.985, "sure": 0.798, "sure_right": 0.999}},
    "asian_dev": {1: {"named_right": 0.493, "strangers_unknown": 0.884, "sure": 0.046, "sure_right": 1.0},
                  3: {"named_right": 0.717, "strangers_unknown": 0.891, "sure": 0.123, "sure_right": 1.0},
                  5: {"named_right": 0.805, "strangers_unknown": 0.884, "sure": 0.167, "sure_right": 1.0},
                  10: {"named_right": 0.853, "strangers_unknown": 0.868, "sure": 0.188, "sure_right": 1.0}},
}
#: Photos shown per KOL of a look-alike pair ("check these photos").
CHECK_PHOTOS = 3
#: Pool photos held out, in all, by :func:`expectations` (spread over the KOLs).
LOO_PHOTOS = 300
#: KOLs around a held-out photo that :func:`expectations` keeps (its nearest centroids): the rule
#: looks at the nearest two and :meth:`Model.predict` at the nearest five, so more changes nothing.
LOCAL_KOLS = 12
#: A KOL whose held-out photos are named right less often than this needs better photos.
WEAK_KOL = 0.5


def nearest_kols(model, ks=None):
    """Each KOL's nearest other KOL by centroid: ``(nearest, distance)``, ``(len(ks),)`` ``int64`` indices and
    ``float32`` Euclidean distances, for the KOLs ``ks`` (indices; default all). A lone KOL's nearest is
    itself at ``inf``. Memory stays ``O(len(ks) * 1024)`` (centroid distances in blocks)."""
    ks = np.arange(len(model.classes)) if ks is None else np.asarray(ks, dtype=np.int64)
    nearest = np.zeros(len(ks), dtype=np.int64)
    dist = np.full(len(ks), np.inf, dtype=np.float32)
    if len(model.classes) < 2:
        nearest[:] = ks
        return nearest, dist
    for start in range(0, len(ks), 1024):
        part = ks[start:start + 1024]
        block = np.sqrt(model.sq_distances(model.centroids[part]))
        block[np.arange(len(block)), part] = np.inf
        nearest[start:start + 1024] = block.argmin(1)
        dist[start:start + 1024] = block.min(1)
    return nearest, dist


def confused_pairs(model, top=10):
    """The KOL pairs most easily confused, for every KOL with a neighbour.

    For each KOL its nearest other KOL by centroid distance; pairs are ranked by that
    distance, closest first. ``count`` is how many of the two KOLs' photos are nearer to the
    other KOL's centroid than to their own (own centroid without the photo itself; a KOL
    with one photo counts as its own centroid), ``chips`` up to :data:`CHECK_PHOTOS` of them per KOL
    as ``[slug, chip id]``. Returns ``[(slug_a, slug_b, distance, count, chips)]``.
    The nearest KOLs are the model's own ``kol_nearest`` and ``kol_nearest_d`` when it keeps them
    (:func:`shared.recognition.model.train` and :func:`~shared.recognition.model.add_kol` do), else
    :func:`nearest_kols`.
    """
    K = len(model.classes)
    if K < 2:
        return []
    if getattr(model, "kol_nearest", None) is not None:  # kept by the model (train, add_kol)
        nearest, dist = np.asarray(model.kol_nearest), np.asarray(model.kol_nearest_d, dtype=np.float64)
    else:
        nearest, dist = nearest_kols(model)
    pairs = {}
    for a in np.argsort(dist)[:top * 2]:
        b = int(nearest[a])
        key = tuple(sorted((int(a), b)))
        if key in pairs:
            continue
        count, chips = 0, []
        for i, j in (key, key[::-1]):
            lo = model.offsets[i]
            rows = model.X[lo:model.offsets[i + 1]].astype(np.float64)
            n = len(rows)
            own = (model.centroids[i] * n - rows) / (n - 1) if n > 1 else rows
            nearer = np.flatnonzero(np.linalg.norm(rows - model.centroids[j], axis=1) <
                                    np.linalg.norm(rows - own, axis=1))
            count += len(nearer)
            chips += [[model.classes[i], str(model.chips[lo + r])] for r in nearer[:CHECK_PHOTOS]]
        pairs[key] = (model.classes[key[0]], model.classes[key[1]], round(float(dist[a]), 4), count, chips)
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



def how_sure(confidence):
    """A confidence in [0, 1] in words: "almost certainly" (>= 0.99), "very likely" (>= :data:`SURE`),
    "probably" (>= 0.7), else "possibly"."""
    return ("almost certainly" if confidence >= 0.99 else "very likely" if confidence >= SURE
            else "probably" if confidence >= 0.7 else "possibly")


def _local_model(model, ks):
    """A model of the KOLs ``ks`` (indices) of ``model`` only, same rule, roster factor, SVMs and meta: what
    :meth:`Model.predict` answers for a face whose nearest KOLs are all in ``ks``, at a cost of ``ks``'s rows.
    (The SVMs are the full model's, so a held-out photo was among its KOL's SVM's positives: optimistic.)"""
    ks = np.sort(np.asarray(ks, dtype=np.int64))
    rows = np.concatenate([np.arange(model.offsets[k], model.offsets[k + 1]) for k in ks])
    return model._subset(rows, model.counts[ks], [model.classes[k] for k in ks],
                         {model.classes[k]: model.names.get(model.classes[k]) for k in ks}, model.centroids[ks], ks)


def _held_out(model, budget, seed=0):
    """Which pool rows :func:`expectations` holds out: up to ``budget`` rows of KOLs with >= 2 photos,
    spread evenly over the KOLs (every KOL gets one before any gets two), a fixed random choice."""
    rng = np.random.default_rng(seed)
    per_kol = [rng.permutation(np.arange(model.offsets[k], model.offsets[k + 1])) for k in range(len(model.classes))
               if model.counts[k] >= 2]
    picked, depth = [], 0
    while len(picked) < budget and any(depth < len(r) for r in per_kol):
        layer = [int(r[depth]) for r in per_kol if depth < len(r)]
        picked += rng.permutation(layer)[:budget - len(picked)].tolist()
        depth += 1
    return sorted(picked)


def expectations(model, budget=LOO_PHOTOS):
    """What this roster can expect, from the model's own answers on its pool photos (leave one out).

    Each held-out photo (:func:`_held_out`) of a KOL is answered by :meth:`Model.predict` of the model
    without that photo (a KOL's photo: should be named right), and of the model without its whole KOL
    (the same face as a stranger's: should be "unknown"; how close strangers come on THIS roster).
    Only the photo's :data:`LOCAL_KOLS` nearest KOLs are kept for each answer (the same answer, cheaper).
    Returns ``None`` with fewer than 2 KOLs or no KOL with 2 photos, else ``{"photos": held out,
    "named_right", "sure_right", "sure_wrong", "unknown", "wrong_name": counts of KOL-side answers,
    "stranger_unknown", "stranger_sure_wrong": counts of stranger-side answers (``photos`` of each),
    "per_kol": {slug: [held out, named right]}, "wrong_pairs": [[slug, answered slug, count, [chip ids]]]}``
    (``wrong_pairs``: held-out photos of a KOL named as another, most first, up to :data:`CHECK_PHOTOS` chips each).
    """
    K = len(model.classes)
    rows = _held_out(model, budget) if K >= 2 else []
    if not rows:
        return None
    y = model.y
    out = dict.fromkeys(("named_right", "sure_right", "sure_wrong", "unknown", "wrong_name",
                         "stranger_unknown", "stranger_sure_wrong"), 0)
    per_kol, wrong = {}, {}
    near = np.argsort(model.sq_distances(model.X[rows]), axis=1)[:, :LOCAL_KOLS + 1]
    for r, ks in zip(rows, near):
        k, e = int(y[r]), model.X[r:r + 1]
        slug, local = model.classes[k], _local_model(model, np.union1d(ks, [k]))
        p = local.without_photos(slug, [str(model.chips[r])]).predict(e)[0]
        right, sure = p.slug == slug, p.confidence >= SURE
        out["named_right"] += right
        out["sure_right"] += right and sure
        out["sure_wrong"] += (not right) and sure
        out["unknown"] += p.slug is None
        out["wrong_name"] += p.slug is not None and not right
        if p.slug is not None and not right:
            wrong.setdefault((slug, p.slug), []).append(str(model.chips[r]))
        tested = per_kol.setdefault(slug, [0, 0])
        tested[0] += 1
        tested[1] += right
        q = local.without([slug]).predict(e)[0]
        out["stranger_unknown"] += q.slug is None
        out["stranger_sure_wrong"] += q.slug is not None and q.confidence >= SURE
    return {"photos": len(rows), **{key: int(v) for key, v in out.items()}, "per_kol": per_kol,
            "wrong_pairs": [[a, b, len(chips), chips[:CHECK_PHOTOS]]
                            for (a, b), chips in sorted(wrong.items(), key=lambda item: -len(item[1]))]}


def advice(model, expected, pairs, most=20):
    """What to do, most useful first: ``[{"do": "more_photos" | "better_photos" | "check_look_alike",
    "kols": [slug, ...], "more": photos to add (more_photos), "chips": [[slug, chip id]] (look-alikes)}]``.

    - ``more_photos``: each KOL with fewer than :data:`MIN_PHOTOS` photos (``more`` = how many to add);
    - ``better_photos``: each KOL whose held-out photos (:func:`expectations`, at least 2 of them)
      were named right less often than :data:`WEAK_KOL`;
    - ``check_look_alike``: each pair of KOLs that was actually confused: photos nearer the other
      KOL's average face (:func:`confused_pairs`) or held-out photos named as the other.
    At most ``most`` items of each kind.
    """
    items = [{"do": "more_photos", "kols": [s], "more": int(MIN_PHOTOS - n)}
             for s, n in sorted(zip(model.classes, model.counts), key=lambda item: item[1]) if n < MIN_PHOTOS][:most]
    few = {s for item in items for s in item["kols"]}
    weak = sorted(((n_right / n, s) for s, (n, n_right) in ((expected or {}).get("per_kol") or {}).items()
                   if n >= 2 and n_right / n < WEAK_KOL and s not in few))
    items += [{"do": "better_photos", "kols": [s]} for _, s in weak[:most]]
    alike = {}
    for a, b, _d, count, chips in pairs:
        if count:
            alike[tuple(sorted((a, b)))] = chips
    for a, b, _n, chips in (expected or {}).get("wrong_pairs") or []:
        shown = alike.setdefault(tuple(sorted((a, b))), [])
        shown += [[a, c] for c in chips if [a, c] not in shown][:max(0, 2 * CHECK_PHOTOS - len(shown))]
    items += [{"do": "check_look_alike", "kols": list(pair), "chips": chips} for pair, chips in list(alike.items())[:most]]
    return items


def forget(metrics, slug):
    """``metrics`` (a model's report, changed in place) without the KOL ``slug``: its photo count,
    its advice, and the pairs and held-out counts that name it."""
    (metrics.get("per_kol") or {}).pop(slug, None)
    if isinstance(metrics.get("few_photos"), list):
        metrics["few_photos"] = [s for s in metrics["few_photos"] if s != slug]
    for key in ("confused", "look_alike"):
        if key in metrics:
            metrics[key] = [p for p in metrics[key] or [] if slug not in (p.get("a"), p.get("b"))]
    if "advice" in metrics:
        metrics["advice"] = [item for item in metrics["advice"] or [] if slug not in item.get("kols", ())]
    expected = metrics.get("expected") or {}
    (expected.get("per_kol") or {}).pop(slug, None)
    if "wrong_pairs" in expected:
        expected["wrong_pairs"] = [p for p in expected["wrong_pairs"] if slug not in p[:2]]
    return metrics


def training_metrics(model, seconds):
    """The report's quick numbers, for every model built: photo counts (``few_photos``: under
    :data:`MIN_PHOTOS`), the nearest KOL pairs (``confused``, with the photos nearer the other KOL),
    the threshold and why, and the development table :data:`BY_PHOTOS`. The app's training step adds
    what this roster can expect and what to do (:func:`roster_report`)."""
    thresholds = {n: decision_distance(model.rule, n, shrink=model.shrink) for n in (1, 3, 5, 20)}
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
                f"shrinks, down to about {decision_distance(model.rule, 5, 0.0, shrink=model.shrink):.2f}.")
    few = [s for s, n in zip(model.classes, model.counts) if n < MIN_PHOTOS]
    pairs = confused_pairs(model)
    return {
        "rule": "nearest centroid + calibrated open-set rule",
        "cv_accuracy": cross_validated_accuracy(model),
        "threshold": round(t5, 4) if t5 else None,
        "thresholds_by_photos": {str(n): (round(t, 4) if t else None) for n, t in thresholds.items()},
        "threshold_why": why,
        "per_kol": {s: int(n) for s, n in zip(model.classes, model.counts)},
        "few_photos": few,
        "min_photos": MIN_PHOTOS,
        "confused": [{"a": a, "b": b, "distance": d, "count": c, "chips": chips} for a, b, d, c, chips in pairs],
        "by_photos": BY_PHOTOS,
        "sure": SURE,
        "train_seconds": round(seconds, 3),
    }


def roster_report(model, budget=LOO_PHOTOS):
    """The report's slower part, added by the app's training step (:func:`shared.training.train.retrain`)
    rather than to every model built (benchmarks build hundreds): ``expected`` (:func:`expectations`),
    ``advice`` (:func:`advice`) and ``look_alike`` (its pairs that were actually confused:
    ``[{"a", "b", "chips"}]``). Adds them to ``model.meta["metrics"]`` (which :func:`training_metrics`
    filled) and returns them."""
    metrics = model.meta.setdefault("metrics", {})
    pairs = [(p["a"], p["b"], p["distance"], p["count"], p.get("chips") or []) for p in metrics.get("confused") or []]
    expected = expectations(model, budget)
    todo = advice(model, expected, pairs)
    out = {"expected": expected, "advice": todo,
           "look_alike": [{"a": item["kols"][0], "b": item["kols"][1], "chips": item["chips"]}
                          for item in todo if item["do"] == "check_look_alike"]}
    metrics.update(out)
    return out


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
