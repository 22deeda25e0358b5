"""Who is this face? Nearest KOL centroid, a calibrated open-set rule, versioned models.

A prediction is two decisions, both made from distances between 128-d dlib embeddings:

1. *which* KOL (the candidate): the KOL whose centroid (mean pool embedding) is the
   nearest to the face, in Euclidean distance;
2. *whether* it is that KOL at all: three numbers about the candidate,
   ``d`` (distance to its centroid), the margin ``m`` (how much farther the second-best
   KOL's centroid is, capped at :data:`MARGIN_CAP`) and ``1/n`` (``n`` = the candidate's
   number of pool photos: a centroid of few photos is a noisier target), go into two
   logistic curves with fixed coefficients :data:`RULE`:

   - ``p_right = P(the candidate is this person)``; the face is named when ``p_right >= 0.5``;
   - ``p_stranger = P(this person is none of the KOLs)``, the confidence of an "unknown".

   The coefficients were fitted once on development photos of *other* people
   (``bench/bench_accuracy.py --fit``, lfw_dev) for a stream of faces in which KOLs
   outnumber strangers :data:`KOL_ODDS` to 1, and are the same for every pool:
   nothing about the decision is fitted on the agency's own KOLs, so adding a KOL
   never moves anyone else's threshold and the confidence means the same in every model.

``confidence`` is the probability that the answer shown is right: ``p_right`` for a
named face, ``p_stranger`` for "unknown" (both in [0, 1], for that stream; the benchmark
prints how often answers at each confidence level are right).

Within one photo or video frame (the rows given to :meth:`Model.predict`), one KOL names
at most one face: faces are named greedily, most confident first, and a face whose best
KOL is already taken is tried against its next candidates.

Similarity (find-similar) is ``2 ** -(d / SIMILARITY_SCALE) ** 2`` of the distance ``d``
to the KOL's nearest pool photo: in [0, 1], 1 for the same embedding, 0.5 at
``d = SIMILARITY_SCALE`` (0.55, a little stricter than dlib's 0.6 same-person distance), and
comparable across models and retrains because the scale is a constant.

Models are versioned folders ``data/models/<version>/`` holding ``model.npz`` (arrays
only, loaded with ``allow_pickle=False``, nothing refitted on load) and ``meta.json``;
the file ``data/models/current`` names the version in use and is replaced atomically.
:func:`shared.training.train.retrain` is the whole training step (one at a time, under the
:func:`training_lock`).
"""
import contextlib
import errno
import fcntl
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from shared.core import config
from shared.core.errors import UserError
from shared.core.storage import atomic_write, atomic_write_bytes, atomic_write_json, locked, read_json, sweep_temp_files
from shared.faces import engine

VERSION_RE = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")
#: Distance at which find-similar's similarity is 0.5. On lfw_dev's photo pairs, 92.6 % of
#: same-person pairs are closer than 0.55 and 0.18 % of different-person pairs (dlib's usual 0.6:
#: 97.8 % and 0.74 %, too loose once a face is compared with a whole roster).
SIMILARITY_SCALE = 0.55
#: The margin to the second-best KOL counts up to this distance (a lone KOL gets the cap).
MARGIN_CAP = 0.3
#: Candidates per face considered by the joint assignment and by find-similar's pre-selection.
TOP_CANDIDATES = 5
SIMILAR_PRESELECT = 64
#: Model versions kept by :meth:`ModelStore.prune` unless told otherwise.
KEEP_VERSIONS = config.DEFAULTS["MODEL_VERSIONS_KEEP"]
#: The stream the rule is calibrated for: KOL faces per stranger face (an agency's own photos
#: and videos are mostly of its KOLs). Chosen among 1, 2 and 3 by ``bench/bench_accuracy.py --fit``
#: on development people alone (the odds whose lower share, KOL photos named right or strangers
#: answered "unknown", is the highest when half of them are measured with the rule fitted on the other half).
KOL_ODDS = 3.0
#: Logistic coefficients ``[bias, d, margin, 1/n]`` of the open-set rule, fitted by
#: ``bench/bench_accuracy.py --fit`` on all of lfw_dev (see the module docstring).
RULE = {
    "right": [10.2053, -28.3109, 32.3703, 3.7853],
    "stranger": [-10.5987, 28.1882, -26.1074, -4.2654],
}


def features(d, second, n):
    """The rule's inputs, ``(M, 3)``: ``[d, min(second - d, MARGIN_CAP), 1/n]``.

    d: ``(M,)`` distance to the candidate's centroid; second: ``(M,)`` distance to the
    nearest *other* KOL's centroid (``inf`` when there is none); n: ``(M,)`` the
    candidate's photo count (>= 1).
    (Also tried: the distance to the candidate's nearest photo as a fourth input; it did not
    help on the development protocol, see README.)
    """
    d = np.asarray(d, dtype=np.float64)
    margin = np.minimum(np.asarray(second, dtype=np.float64) - d, MARGIN_CAP)
    return np.column_stack([d, margin, 1.0 / np.maximum(np.asarray(n, dtype=np.float64), 1.0)])


def _logistic(coef, F):
    coef = np.asarray(coef, dtype=np.float64)
    z = coef[0] + np.asarray(F, dtype=np.float64) @ coef[1:]
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def fit_rule(F, right, stranger, odds=KOL_ODDS):
    """Fit :data:`RULE`-shaped coefficients on development faces.

    F: ``(M, 3)`` :func:`features` of each face's candidate; right: ``(M,)`` bool, the
    candidate is the face's person; stranger: ``(M,)`` bool, the face's person is not enrolled.
    The faces are weighted so that KOL faces weigh ``odds`` times as much as stranger faces in
    total (the stream the probabilities are calibrated for, :data:`KOL_ODDS`).
    Returns ``{"right": [4 floats], "stranger": [4 floats]}``.
    """
    from sklearn.linear_model import LogisticRegression

    stranger = np.asarray(stranger, bool)
    n_str, n_kol = max(1, stranger.sum()), max(1, (~stranger).sum())
    weight = np.where(stranger, 1.0 / n_str, odds / n_kol)
    weight *= len(weight) / weight.sum()
    out = {}
    for key, target in (("right", right), ("stranger", stranger)):
        lr = LogisticRegression(C=10.0, max_iter=3000).fit(F, np.asarray(target, bool), sample_weight=weight)
        out[key] = [float(lr.intercept_[0])] + [float(c) for c in lr.coef_[0]]
    return out


@dataclass
class Prediction:
    """The answer for one face: ``identity`` is a pool slug or ``None`` (unknown).

    confidence: probability that this answer (the KOL, or "unknown") is right, in [0, 1].
    candidate: the nearest KOL (by centroid), even when the face is unknown.
    distance: Euclidean distance to the candidate's nearest pool embedding.
    p_same: ``P(the face is the candidate)`` (``p_right`` of the module docstring), in [0, 1].
    """

    identity: object
    confidence: float
    known: bool
    candidate: object
    distance: float
    p_same: float = 0.0


_blas = None


def _one_blas_thread():
    """A context that keeps BLAS to one thread: a query is a few small products, and on a busy
    machine handing them to BLAS's other threads costs a scheduler tick (measured: 0.1 ms became 8 ms)."""
    global _blas
    try:
        if _blas is None:
            from threadpoolctl import ThreadpoolController

            _blas = ThreadpoolController()
        return _blas.limit(limits=1, user_api="blas")
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()


def _sq_distances(E, C, C_sq):
    """Squared Euclidean distances ``(M, K)`` between rows of ``E`` ``(M, 128)`` and ``C`` ``(K, 128)``."""
    E = np.asarray(E, dtype=np.float32)
    return np.maximum((E * E).sum(1)[:, None] + C_sq[None, :] - 2.0 * (E @ C.T), 0.0)


@dataclass
class Model:
    """A trained model.

    X: ``(N, 128)`` ``float32`` pool embeddings, grouped by KOL (rows of KOL ``i`` are
    ``X[offsets[i]:offsets[i + 1]]``); chips: ``N`` chip ids (list or string array); classes: ``K`` slugs (sorted);
    centroids: ``(K, 128)`` ``float32``; names: ``{slug: display name}``; rule: :data:`RULE`-shaped.
    """

    X: np.ndarray
    offsets: np.ndarray
    classes: list
    chips: list
    names: dict
    centroids: np.ndarray = None
    rule: dict = field(default_factory=lambda: {k: list(v) for k, v in RULE.items()})
    version: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.X = np.ascontiguousarray(self.X, dtype=np.float32).reshape(-1, engine.EMBEDDING_SIZE)
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        self.counts = np.diff(self.offsets)
        if self.centroids is None:
            sums = np.add.reduceat(self.X.astype(np.float64), self.offsets[:-1], axis=0) if len(self.X) else \
                np.zeros((0, engine.EMBEDDING_SIZE))
            self.centroids = sums / np.maximum(self.counts, 1)[:, None]
        self.centroids = np.ascontiguousarray(self.centroids, dtype=np.float32)
        self._c_sq = (self.centroids * self.centroids).sum(1)
        self._index = {s: i for i, s in enumerate(self.classes)}

    @property
    def y(self):
        """``(N,)`` class index of each row of ``X``."""
        return np.repeat(np.arange(len(self.classes)), self.counts)

    def _nearest_photos(self, e, ks):
        """Distance from ``e`` ``(128,)`` to the nearest pool photo of each KOL in ``ks``: ``(len(ks),)``.

        One gather and one distance pass over those KOLs' rows (no Python loop per KOL)."""
        ks = np.asarray(ks, dtype=np.int64)
        lo, counts = self.offsets[ks], self.counts[ks]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rows = np.repeat(lo - starts, counts) + np.arange(int(counts.sum()))
        d = ((self.X[rows] - np.asarray(e, dtype=np.float32)) ** 2).sum(1)
        return np.sqrt(np.minimum.reduceat(d, starts))

    def scores(self, embeddings, top=TOP_CANDIDATES):
        """Candidates for each face.

        Returns ``(idx, P, S, dn)``, each ``(M, t)`` with ``t = min(top, K)``: ``idx`` KOL indices
        nearest first (by centroid), ``P`` = ``p_right`` if that KOL were named, ``S`` =
        ``p_stranger`` for the face (same for every column), ``dn`` distance to that KOL's nearest photo.
        """
        E = np.asarray(embeddings, dtype=np.float32).reshape(-1, engine.EMBEDDING_SIZE)
        K = len(self.classes)
        t = min(top, K)
        D = np.sqrt(_sq_distances(E, self.centroids, self._c_sq))
        if t < K:
            part = np.argpartition(D, t, axis=1)[:, :t + 1]
        else:
            part = np.tile(np.arange(K), (len(E), 1))
        order = np.take_along_axis(part, np.argsort(np.take_along_axis(D, part, 1), axis=1), 1)
        idx = order[:, :t]
        d = np.take_along_axis(D, idx, 1)
        best = d[:, :1]
        second = np.take_along_axis(D, order[:, 1:2], 1) if K > 1 else np.full_like(best, np.inf)
        other = np.where(np.arange(t)[None, :] == 0, second, best)  # nearest centroid other than this one
        dn = np.array([self._nearest_photos(E[i], idx[i]) for i in range(len(E))]).reshape(len(E), t)
        n = self.counts[idx]
        F = features(d.ravel(), other.ravel(), n.ravel())
        P = _logistic(self.rule["right"], F).reshape(len(E), t)
        F0 = features(d[:, 0], other[:, 0], n[:, 0])
        S = np.repeat(_logistic(self.rule["stranger"], F0)[:, None], t, axis=1)
        return idx, P, S, dn

    def describe(self, embeddings):
        """The rule's view of each face: ``(best, F)``, ``best`` ``(M,)`` the nearest KOL's index and
        ``F`` ``(M, 3)`` its :func:`features` (what :func:`fit_rule` is fitted on)."""
        E = np.asarray(embeddings, dtype=np.float32).reshape(-1, engine.EMBEDDING_SIZE)
        D = np.sqrt(_sq_distances(E, self.centroids, self._c_sq))
        order = np.argsort(D, axis=1)[:, :2]
        best = order[:, 0]
        d = D[np.arange(len(E)), best]
        second = D[np.arange(len(E)), order[:, 1]] if len(self.classes) > 1 else np.full(len(E), np.inf)
        return best, features(d, second, self.counts[best])

    def predict(self, embeddings):
        """One :class:`Prediction` per row of ``embeddings`` ``(M, 128)``, in row order.

        The M rows are the faces of ONE photo or video frame: a KOL names at most one of
        them (greedy assignment, most confident face first).
        """
        E = np.asarray(embeddings, dtype=np.float64).reshape(-1, engine.EMBEDDING_SIZE)
        if not len(E):
            return []
        if not self.classes:
            return [Prediction(None, 1.0, False, None, float("inf"), 0.0) for _ in E]
        with _one_blas_thread():
            idx, P, S, dn = self.scores(E)
        choice = [None] * len(E)
        taken = set()
        pairs = sorted(((-P[i, j], i, j) for i in range(len(E)) for j in range(idx.shape[1]) if P[i, j] >= 0.5))
        for _, i, j in pairs:
            k = int(idx[i, j])
            if choice[i] is None and k not in taken:
                choice[i] = j
                taken.add(k)
        out = []
        for i in range(len(E)):
            j = choice[i]
            if j is not None:
                slug = self.classes[int(idx[i, j])]
                out.append(Prediction(slug, round(float(P[i, j]), 4), True, slug, round(float(dn[i, j]), 4),
                                      round(float(P[i, j]), 4)))
            else:
                slug = self.classes[int(idx[i, 0])]
                out.append(Prediction(None, round(float(S[i, 0]), 4), False, slug, round(float(dn[i, 0]), 4),
                                      round(float(P[i, 0]), 4)))
        return out

    @staticmethod
    def similarity(d):
        """Similarity in [0, 1] for an embedding distance ``d`` (array or float): ``2 ** -(d / SIMILARITY_SCALE) ** 2``."""
        return np.exp2(-np.square(np.asarray(d, dtype=np.float64) / SIMILARITY_SCALE))

    def similar(self, embedding, k=5):
        """The ``k`` KOLs most similar to ``embedding`` ``(128,)``.

        Returns ``[(slug, similarity, distance)]`` sorted by similarity, highest first;
        ``distance`` is the Euclidean distance to the KOL's nearest pool photo and
        ``similarity`` is :meth:`similarity` of it. The nearest photos are searched among the
        :data:`SIMILAR_PRESELECT` KOLs with the nearest centroids.
        """
        k = max(0, int(k))
        e = np.asarray(embedding, dtype=np.float32).reshape(engine.EMBEDDING_SIZE)
        K = len(self.classes)
        if not k or not K:
            return []
        with _one_blas_thread():
            D = _sq_distances(e[None, :], self.centroids, self._c_sq)[0]
        pre = max(k, SIMILAR_PRESELECT)
        cand = np.argpartition(D, pre)[:pre] if pre < K else np.arange(K)
        nearest = self._nearest_photos(e, cand)
        sims = self.similarity(nearest)
        rows = [(self.classes[int(c)], round(float(sim), 4), round(float(d), 4))
                for c, sim, d in zip(cand, sims, nearest)]
        rows.sort(key=lambda r: (-r[1], r[2], r[0]))
        return rows[:k]

    def without_photos(self, slug, chip_ids):
        """A copy of this model without the pool photos ``chip_ids`` of the KOL ``slug`` (their rows
        out, the KOL's centroid recomputed); without the KOL when none of its photos is left."""
        k = self._index.get(slug)
        if k is None:
            return self
        lo, hi = int(self.offsets[k]), int(self.offsets[k + 1])
        chips = np.asarray(self.chips, dtype=str)
        drop = {str(c) for c in chip_ids}
        kept = [r for r in range(lo, hi) if chips[r] not in drop]
        if len(kept) == hi - lo:
            return self
        if not kept:
            return self.without([slug])
        rows = np.concatenate([np.arange(lo), kept, np.arange(hi, len(self.X))]).astype(np.int64)
        counts = self.counts.copy()
        counts[k] = len(kept)
        centroids = self.centroids.copy()
        centroids[k] = self.X[kept].astype(np.float64).mean(0)
        return self._subset(rows, counts, list(self.classes), dict(self.names), centroids)

    def without(self, slugs):
        """A copy of this model without the KOLs ``slugs`` (same rule and meta)."""
        drop = set(slugs)
        keep = [i for i, s in enumerate(self.classes) if s not in drop]
        rows = [np.arange(self.offsets[i], self.offsets[i + 1]) for i in keep]
        rows = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        return self._subset(rows, self.counts[keep], [self.classes[i] for i in keep],
                            {s: n for s, n in self.names.items() if s not in drop}, self.centroids[keep])

    def _subset(self, rows, counts, classes, names, centroids):
        """A model of this one's rows ``rows`` (grouped by KOL, ``counts`` per KOL of ``classes``), same rule and meta."""
        return Model(X=self.X[rows], offsets=np.concatenate([[0], np.cumsum(counts)]), classes=classes,
                     chips=np.asarray(self.chips, dtype=str)[rows], names=names, centroids=centroids,
                     rule=self.rule, version=self.version, meta=dict(self.meta))


def decision_distance(rule, n, margin=MARGIN_CAP):
    """The centroid distance below which a clear-margin face is named, for a KOL with ``n`` photos.

    Solves ``p_right = 0.5`` for the given margin to the second-best KOL (default: at its cap);
    ``None`` when the rule does not decrease with distance.
    """
    c = np.asarray(rule["right"], dtype=np.float64)
    slope = c[1]
    if slope >= 0:
        return None
    return float(-(c[0] + c[2] * margin + c[3] / max(1, n)) / slope)


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
        block = np.sqrt(_sq_distances(C[start:start + 1024], C, model._c_sq))
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
        D = _sq_distances(E[sl], model.centroids, model._c_sq)
        D[np.arange(len(D)), y[sl]] = ((E[sl] - own[sl]) ** 2).sum(1)
        right += int((D.argmin(1) == y[sl]).sum())
    return round(right / len(rows), 4)


def train(X, slugs, names, chips=None, rule=None):
    """Build a model from pool embeddings (centroids; nothing is fitted to the pool).

    X: ``(N, 128)``; slugs: ``N`` KOL slugs; names: ``{slug: display name}``;
    chips: ``N`` chip ids (default ``"0", "1", ...``); rule: :data:`RULE`-shaped (default RULE).
    Returns an unsaved :class:`Model` whose ``meta`` holds the metrics.
    Raises :class:`UserError` (409) when the pool is empty.
    """
    started = time.perf_counter()
    X = np.asarray(X, dtype=np.float32).reshape(-1, engine.EMBEDDING_SIZE)
    if not len(X):
        raise UserError("The training pool is empty: import some KOLs first.", 409)
    slugs = [str(s) for s in slugs]
    chips = [str(c) for c in chips] if chips is not None else [str(i) for i in range(len(X))]
    order = np.argsort(np.array(slugs), kind="stable")
    classes, counts = np.unique(np.array(slugs)[order], return_counts=True)
    model = Model(X=X[order], offsets=np.concatenate([[0], np.cumsum(counts)]), classes=[str(c) for c in classes],
                  chips=[chips[i] for i in order], names={s: names.get(s, s) for s in map(str, classes)},
                  rule=rule or {k: list(v) for k, v in RULE.items()})
    model.meta = {"identities": len(model.classes), "samples": int(len(X)),
                  "metrics": training_metrics(model, time.perf_counter() - started)}
    return model


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
    """Plain comparison with the previous model's meta: KOLs added / removed, photo counts."""
    if not previous_meta:
        return None
    before = (previous_meta.get("metrics") or {}).get("per_kol") or {}
    after = model.meta["metrics"]["per_kol"]
    return {"previous_version": previous_meta.get("version"),
            "added": sorted(set(after) - set(before)), "removed": sorted(set(before) - set(after)),
            "more_photos": sorted(s for s in after if s in before and after[s] > before[s]),
            "fewer_photos": sorted(s for s in after if s in before and after[s] < before[s]),
            "identities_before": previous_meta.get("identities"), "samples_before": previous_meta.get("samples")}


def _percent(accuracy):
    return "not measurable" if accuracy is None else f"{100 * accuracy:.1f} %"


def _names_list(slugs, names, most=8):
    shown = [names.get(s, s) for s in slugs[:most]]
    return ", ".join(shown) + (f" and {len(slugs) - most} more" if len(slugs) > most else "")


def version_history(store, names=None):
    """The kept model versions, newest first, each compared in plain words with the one kept before it.

    store: :class:`ModelStore`; names: ``{slug: display name}`` (normally the pool's
    ``display_names()``, falling back to each version's own names, then to the slug).
    Returns ``[{"version", "created" (ISO UTC or None), "current": bool, "identities": int,
    "samples": int, "cv_accuracy": float in [0, 1] or None, "kols": [slug] (sorted),
    "comparison": None for the oldest kept version, else {"previous": version, "added": [slug],
    "removed": [slug], "accuracy_before", "accuracy_after", "accuracy": "better" | "worse" |
    "same" | "not comparable", "summary": one plain sentence}}]``. The comparison is with the
    previous KEPT version (older ones were pruned), from the KOLs in each version's meta.
    """
    names = names or {}
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
            a0, a1 = before["cv_accuracy"], row["cv_accuracy"]
            if a0 is None or a1 is None:
                accuracy = "not comparable"
            else:
                accuracy = "better" if a1 > a0 else "worse" if a1 < a0 else "same"
            parts = []
            if added:
                parts.append(f"{len(added)} KOL{'' if len(added) == 1 else 's'} added ({_names_list(added, label)})")
            if removed:
                parts.append(f"{len(removed)} KOL{'' if len(removed) == 1 else 's'} removed "
                             f"({_names_list(removed, label)})")
            if not parts:
                parts.append("the same KOLs")
            if accuracy == "not comparable":
                parts.append(f"accuracy cannot be compared ({_percent(a0)} before, {_percent(a1)} now)")
            elif accuracy == "same":
                parts.append(f"accuracy unchanged ({_percent(a1)})")
            else:
                parts.append(f"accuracy {accuracy} ({_percent(a0)} before, {_percent(a1)} now)")
            row["comparison"] = {"previous": before["version"], "added": added, "removed": removed,
                                 "accuracy_before": a0, "accuracy_after": a1, "accuracy": accuracy,
                                 "summary": "; ".join(parts)[:1].upper() + "; ".join(parts)[1:] + "."}
        rows.append(row)
        before = dict(row, label=label)
    return rows[::-1]


def _write_model(path, model):
    """Write ``model``'s arrays to ``path`` (``.npz``, uncompressed) atomically (:func:`shared.core.storage.atomic_write`)."""
    def write(fh):
        np.savez(fh, X=model.X, offsets=model.offsets, centroids=model.centroids,
                 classes=np.array(model.classes, dtype=str).reshape(-1),
                 chips=np.array(model.chips, dtype=str).reshape(-1),
                 rule_right=np.array(model.rule["right"]), rule_stranger=np.array(model.rule["stranger"]))
    atomic_write(path, write, suffix=".npz")


def model_file_identity(root, version):
    """What identifies the content of model ``version``'s file under ``root`` right now:
    ``(root, version, st_ino, st_mtime_ns, st_size)``, or ``None`` when there is no such version.

    The key of every in-memory copy of a model (:meth:`ModelStore.cached`): every write of a
    ``model.npz`` (a new version, :meth:`ModelStore.forget`) goes through
    :func:`shared.core.storage.atomic_write`, a new file renamed over the old one, so a rewrite
    always gets another inode than the file it replaces (and a newer modification time).
    """
    if not VERSION_RE.match(str(version)):
        return None
    try:
        st = (Path(root) / str(version) / "model.npz").stat()
    except FileNotFoundError:
        return None
    return str(root), str(version), st.st_ino, st.st_mtime_ns, st.st_size


class ModelStore:
    """Versioned models under ``root`` (normally ``data/models``)."""

    def __init__(self, root):
        self.root = Path(root)
        self._cache = None
        self._cache_key = None
        self._cache_lock = threading.Lock()

    @property
    def lock_path(self):
        return self.root / ".lock"

    def current_version(self):
        """The version named by ``current``, or ``None`` when no model was trained yet."""
        try:
            version = (self.root / "current").read_text().strip()
        except FileNotFoundError:
            return None
        return version if VERSION_RE.match(version) else None

    def versions(self):
        """Stored versions, oldest first."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and VERSION_RE.match(p.name) and (p / "model.npz").exists())

    def save(self, model, allowed=None):
        """Write ``model`` as a new version and make it current (atomically). Returns the version.

        allowed: optional callable returning the set of slugs that may be stored; it is
        called under the store's lock, so a KOL deleted meanwhile (see :meth:`forget`) is
        never written back.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with locked(self.lock_path):
            if allowed is not None:
                keep = set(allowed())
                gone = [s for s in model.classes if s not in keep]
                if gone:
                    model = model.without(gone)
                    model.meta = dict(model.meta, identities=len(model.classes), samples=int(len(model.X)))
            while True:  # names sort by time: the suffix is the microsecond, in hex
                now = datetime.now(timezone.utc)
                version = now.strftime("%Y%m%d-%H%M%S-") + f"{now.microsecond:06x}"
                folder = self.root / version
                try:
                    folder.mkdir()
                    break
                except FileExistsError:
                    time.sleep(0.001)
            _write_model(folder / "model.npz", model)
            meta = dict(model.meta, version=version, names=model.names,
                        created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
            atomic_write_json(folder / "meta.json", meta)
            atomic_write_bytes(self.root / "current", version.encode())
        model.version, model.meta = version, meta
        return version

    def meta(self, version=None):
        """The ``meta.json`` of ``version`` (default: current), or ``None``."""
        version = version or self.current_version()
        if not version or not VERSION_RE.match(version):
            return None
        return read_json(self.root / version / "meta.json")

    def load(self, version):
        """Load a saved model: arrays only (no pickle), nothing refitted."""
        if not VERSION_RE.match(str(version)):
            raise UserError("No such model version.", 404)
        folder = self.root / version
        try:
            with np.load(folder / "model.npz", allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise UserError("No such model version.", 404) from None
        meta = read_json(folder / "meta.json", default={}) or {}
        return Model(X=arrays["X"], offsets=arrays["offsets"], centroids=arrays["centroids"],
                     classes=arrays["classes"].tolist(), chips=arrays["chips"],
                     names=meta.get("names", {}), version=version, meta=meta,
                     rule={"right": arrays["rule_right"].tolist(), "stranger": arrays["rule_stranger"].tolist()})

    def cached(self, version):
        """The model ``version``, loaded once and reloaded whenever its file was rewritten since.

        Checked on every call with one ``stat`` (:func:`model_file_identity`), so a new
        training, a :meth:`forget` of a KOL or of some photos (which rewrite a version in
        place) or a :meth:`switch` reaches every process holding a store on its very next use.
        Holds one model per store. Raises :class:`UserError` 404 when the version does not exist.
        """
        identity = model_file_identity(self.root, version)
        if identity is None:
            raise UserError("No such model version.", 404)
        with self._cache_lock:
            if self._cache is None or self._cache_key != identity:
                self._cache = self.load(version)  # read after the stat: never older than its key
                self._cache_key = identity
            return self._cache

    def current(self):
        """The current model (:meth:`cached` of :meth:`current_version`); ``None`` if there is none.

        Cheap to call before every prediction: one small file read and one ``stat``.
        """
        version = self.current_version()
        if version is None:
            return None
        try:
            return self.cached(version)
        except UserError:  # named by ``current`` but gone (deleted by hand)
            return None

    def forget(self, slug, chips=None):
        """Remove the KOL ``slug`` from every stored version (each file rewritten atomically), or
        only its pool photos ``chips`` (chip ids) when given.

        Returns the versions that held it. Each file is replaced (a new inode), so the next
        :meth:`cached` or :meth:`current` in any process, a batch worker's included, reloads it.
        """
        changed = []
        with locked(self.lock_path):
            for version in self.versions():
                folder = self.root / version
                with np.load(folder / "model.npz", allow_pickle=False) as z:
                    if slug not in set(z["classes"].tolist()):
                        continue
                model = self.load(version)
                slim = model.without([slug]) if chips is None else model.without_photos(slug, chips)
                if slim is model:
                    continue
                _write_model(folder / "model.npz", slim)
                meta = read_json(folder / "meta.json", default={}) or {}
                if slug in slim.classes:  # some of its photos went, the KOL stays
                    meta.update(samples=int(len(slim.X)))
                    (meta.get("metrics") or {}).get("per_kol", {})[slug] = int(slim.counts[slim.classes.index(slug)])
                    atomic_write_json(folder / "meta.json", meta)
                    changed.append(version)
                    continue
                meta.get("names", {}).pop(slug, None)
                metrics = meta.get("metrics") or {}
                (metrics.get("per_kol") or {}).pop(slug, None)
                if isinstance(metrics.get("few_photos"), list):
                    metrics["few_photos"] = [s for s in metrics["few_photos"] if s != slug]
                metrics["confused"] = [p for p in metrics.get("confused") or [] if slug not in (p.get("a"), p.get("b"))]
                meta.update(identities=len(slim.classes), samples=int(len(slim.X)))
                atomic_write_json(folder / "meta.json", meta)
                changed.append(version)
        with self._cache_lock:
            self._cache = self._cache_key = None
        return changed

    def prune(self, keep=KEEP_VERSIONS):
        """Delete all but the ``keep`` newest versions; the current one is never deleted. Returns the deleted.

        Also deletes the temporary files that a training killed mid-write left here, once an hour
        old (:func:`shared.core.storage.sweep_temp_files`).
        """
        keep = max(1, int(keep))
        deleted = []
        with locked(self.lock_path):
            current = self.current_version()
            versions = self.versions()
            for version in versions[:max(0, len(versions) - keep)]:
                if version != current:
                    shutil.rmtree(self.root / version, ignore_errors=True)
                    deleted.append(version)
            sweep_temp_files(self.root)
        return deleted

    def switch(self, version):
        """Make a stored ``version`` current; :class:`UserError` (404) if it does not exist."""
        if not VERSION_RE.match(str(version)) or not (self.root / str(version) / "model.npz").exists():
            raise UserError("No such model version.", 404)
        with locked(self.lock_path):
            atomic_write_bytes(self.root / "current", str(version).encode())
        return version


@contextlib.contextmanager
def training_lock(root):
    """One training at a time across processes: a non-blocking ``flock`` on ``root/.train.lock``.

    Raises :class:`UserError` (409) when another training holds it.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".train.lock", "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise UserError("A training is already running: wait for it to finish, then train again.",
                                409) from None
            raise
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


