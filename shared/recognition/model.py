"""The model: nearest KOL centroid, the rule's answer per face, and find-similar's similarity.

A :class:`Model` holds the pool's embeddings grouped by KOL, each KOL's centroid and linear SVM, and
the roster's spread; it names faces with the calibrated open-set rule of :mod:`shared.recognition.rule`.
Distances are Euclidean between 128-d dlib embeddings.

Within one photo or video frame (the rows given to :meth:`Model.predict`), one KOL names
at most one face: faces are named greedily, most confident first, and a face whose best
KOL is already taken is tried against its next candidates.

Similarity (find-similar) is ``2 ** -(d / SIMILARITY_SCALE) ** 2`` of the distance ``d``
to the KOL's nearest pool photo: in [0, 1], 1 for the same embedding, 0.5 at
``d = SIMILARITY_SCALE`` (0.55, a little stricter than dlib's same-person distance
:data:`shared.faces.engine.SAME_PERSON_DISTANCE`), and comparable across models and retrains
because the scale is a constant.

:func:`train` builds a model: the centroids, the roster's spread and one linear SVM per KOL (the
rule's coefficients are fixed, never fitted to the pool); :mod:`shared.recognition.store` keeps its
versions on disk (``model.npz``: also ``shrink``, ``svm_w``, ``svm_b``; the roster's reach in ``meta.json``,
``metrics.roster.reach``).
"""
import contextlib
import time
from dataclasses import dataclass, field

import numpy as np

from shared.core.errors import UserError
from shared.faces import engine
from shared.recognition import review
from shared.recognition.report import training_metrics
from shared.recognition.rule import (FAR, RULE, background, confidence, features, fit_svms, logistic, roster_reach,
                                     roster_shrink)

#: Distance at which find-similar's similarity is 0.5. On lfw_dev's photo pairs, 92.6 % of
#: same-person pairs are closer than 0.55 and 0.18 % of different-person pairs (dlib's usual 0.6,
#: :data:`shared.faces.engine.SAME_PERSON_DISTANCE`: 97.8 % and 0.74 %, too loose once a face is
#: compared with a whole roster).
SIMILARITY_SCALE = 0.55
#: Candidates per face considered by the joint assignment and by find-similar's pre-selection.
TOP_CANDIDATES = 5
SIMILAR_PRESELECT = 64


@dataclass
class Prediction:
    """The answer for one face: ``slug`` is the KOL's pool slug or ``None`` (unknown).

    confidence: probability that this answer (the KOL, or "unknown") is right, in [0, 1], at its worst
    over the streams :data:`shared.recognition.rule.SHOWN_ODDS`, corrected for the roster (:func:`shared.recognition.rule.confidence`).
    candidate: the nearest KOL's slug (by centroid), even when the face is unknown.
    distance: Euclidean distance to the candidate's nearest pool embedding.
    p_same: ``P(the face is the candidate)`` (``p_right`` of :mod:`shared.recognition.rule`), in [0, 1].
    """

    slug: object
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
        if _blas is None:  # imported on first use: a process that never predicts does not load it
            from threadpoolctl import ThreadpoolController

            _blas = ThreadpoolController()
        return _blas.limit(limits=1, user_api="blas")
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()


@dataclass
class Model:
    """A trained model.

    X: ``(N, 128)`` ``float32`` pool embeddings, grouped by KOL (rows of KOL ``i`` are
    ``X[offsets[i]:offsets[i + 1]]``); chips: ``N`` chip ids (list or string array); classes: ``K`` slugs (sorted);
    centroids: ``(K, 128)`` ``float32``; names: ``{slug: display name}``; rule: :data:`RULE`-shaped;
    shrink: the roster's factor for the rule's distances (:func:`shared.recognition.rule.roster_shrink`,
    measured at training; 1.0 for a model saved before it existed, whose rule was fitted without it);
    svm_w, svm_b: ``(K, 128)`` and ``(K,)`` ``float32``, each KOL's linear SVM against the other KOLs and a
    background of development people (:func:`shared.recognition.rule.fit_svms`), or ``None`` (no SVMs:
    the rule's SVM input is 0); reach: how far this roster's strangers come (:func:`shared.recognition.rule.roster_reach`,
    measured at training and kept in ``meta["metrics"]["roster"]["reach"]``, read from there when not given;
    ``None`` for a model trained before it: no reach cap on its confidences).
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
    shrink: float = 1.0
    svm_w: np.ndarray = None
    svm_b: np.ndarray = None
    reach: float = None

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
        if self.svm_w is not None:
            self.svm_w = np.ascontiguousarray(self.svm_w, dtype=np.float32).reshape(-1, engine.EMBEDDING_SIZE)
            self.svm_b = np.asarray(self.svm_b, dtype=np.float32).reshape(-1)
        self._index = {s: i for i, s in enumerate(self.classes)}
        if self.reach is None:
            self.reach = ((self.meta or {}).get("metrics") or {}).get("roster", {}).get("reach")

    def sq_distances(self, E):
        """Squared Euclidean distances ``(M, K)`` ``float32`` between rows of ``E`` ``(M, 128)`` and the centroids."""
        E = np.asarray(E, dtype=np.float32)
        return np.maximum((E * E).sum(1)[:, None] + self._c_sq[None, :] - 2.0 * (E @ self.centroids.T), 0.0)

    @property
    def y(self):
        """``(N,)`` class index of each row of ``X``."""
        return np.repeat(np.arange(len(self.classes)), self.counts)

    def svm_scores(self, E, idx, d=None):
        """``(M, t)`` SVM scores of the faces ``E`` ``(M, 128)`` for the KOLs ``idx`` ``(M, t)``; ``None`` without SVMs.

        d: ``(M, t)`` the faces' distances to those KOLs' centroids, if given: past
        :data:`shared.recognition.rule.FAR` an SVM is not consulted (its score is 0)."""
        if self.svm_w is None:
            return None
        E = np.asarray(E, dtype=np.float32)
        s = np.einsum("md,mtd->mt", E, self.svm_w[idx]) + self.svm_b[idx]
        return s if d is None else np.where(d > FAR, 0.0, s)

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
        ``P`` is 0 for a KOL whose centroid is farther than :data:`shared.recognition.rule.FAR`, and
        that far the KOL's SVM is not consulted (its input is 0).
        """
        E = np.asarray(embeddings, dtype=np.float32).reshape(-1, engine.EMBEDDING_SIZE)
        K = len(self.classes)
        t = min(top, K)
        D = np.sqrt(self.sq_distances(E))
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
        s = self.svm_scores(E, idx, d)
        F = features(d.ravel(), other.ravel(), n.ravel(), self.shrink, None if s is None else s.ravel())
        P = np.where(d > FAR, 0.0, logistic(self.rule["right"], F).reshape(len(E), t))
        F0 = features(d[:, 0], other[:, 0], n[:, 0], self.shrink, None if s is None else s[:, 0])
        S = np.repeat(logistic(self.rule["stranger"], F0)[:, None], t, axis=1)
        return idx, P, S, dn

    def describe(self, embeddings):
        """The rule's view of each face: ``(best, F)``, ``best`` ``(M,)`` the nearest KOL's index and
        ``F`` ``(M, 6)`` its :func:`features` (what :func:`fit_rule` is fitted on)."""
        E = np.asarray(embeddings, dtype=np.float32).reshape(-1, engine.EMBEDDING_SIZE)
        D = np.sqrt(self.sq_distances(E))
        order = np.argsort(D, axis=1)[:, :2]
        best = order[:, 0]
        d = D[np.arange(len(E)), best]
        second = D[np.arange(len(E)), order[:, 1]] if len(self.classes) > 1 else np.full(len(E), np.inf)
        s = self.svm_scores(E, best[:, None], d[:, None])
        return best, features(d, second, self.counts[best], self.shrink, None if s is None else s[:, 0])

    def decide(self, embeddings, negatives=None):
        """The rule's decision for the faces of ONE photo or video frame, before any confidence is shown.

        Returns ``{"idx", "P", "S", "dn"}`` as :meth:`scores` gives them (``(M, t)``; after the reviewed
        "not X" faces ``negatives`` are applied, :func:`shared.recognition.review.veto`), ``"choice"``
        ``(M,)`` the column of ``idx`` each face is named as (-1: "unknown"; greedy assignment, most
        confident face first, a KOL names at most one face) and ``"d"`` ``(M,)`` the distance to the
        nearest centroid. ``M`` must be >= 1 and the model must have KOLs.
        """
        E = np.asarray(embeddings, dtype=np.float64).reshape(-1, engine.EMBEDDING_SIZE)
        with _one_blas_thread():
            idx, P, S, dn = self.scores(E)
            d = np.sqrt(self.sq_distances(E)[np.arange(len(E)), idx[:, 0]])
        P, S = review.veto(E, idx, P, S, dn, self.classes, negatives)
        choice = np.full(len(E), -1, dtype=np.int64)
        taken = set()
        pairs = sorted(((-P[i, j], i, j) for i in range(len(E)) for j in range(idx.shape[1]) if P[i, j] >= 0.5))
        for _, i, j in pairs:
            k = int(idx[i, j])
            if choice[i] < 0 and k not in taken:
                choice[i] = j
                taken.add(k)
        return {"idx": idx, "P": P, "S": S, "dn": dn, "choice": choice, "d": d}

    def predict(self, embeddings, negatives=None):
        """One :class:`Prediction` per row of ``embeddings`` ``(M, 128)``, in row order.

        The M rows are the faces of ONE photo or video frame: a KOL names at most one of
        them (greedy assignment, most confident face first: :meth:`decide`). negatives: the reviewed "not X" faces
        (:class:`shared.recognition.review.Negatives`, applied by :func:`shared.recognition.review.veto`);
        ``None``: none. The confidence is :func:`shared.recognition.rule.confidence` (the roster's tightness
        and reach, :attr:`shrink` and :attr:`reach`).
        """
        E = np.asarray(embeddings, dtype=np.float64).reshape(-1, engine.EMBEDDING_SIZE)
        if not len(E):
            return []
        if not self.classes:
            return [Prediction(None, 1.0, False, None, float("inf"), 0.0) for _ in E]
        a = self.decide(E, negatives)
        idx, P, S, dn = a["idx"], a["P"], a["S"], a["dn"]
        out = []
        for i in range(len(E)):
            j = int(a["choice"][i])
            if j >= 0:
                slug = self.classes[int(idx[i, j])]
                shown = confidence(P[i, j], True, self.shrink)
                out.append(Prediction(slug, round(float(shown), 4), True, slug,
                                      round(float(dn[i, j]), 4), round(float(P[i, j]), 4)))
            else:
                slug = self.classes[int(idx[i, 0])]
                shown = confidence(S[i, 0], False, self.shrink, a["d"][i], self.reach)
                out.append(Prediction(None, round(float(shown), 4), False, slug,
                                      round(float(dn[i, 0]), 4), round(float(P[i, 0]), 4)))
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
            D = self.sq_distances(e[None, :])[0]
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
        return self._subset(rows, counts, list(self.classes), dict(self.names), centroids, np.arange(len(self.classes)))

    def without(self, slugs):
        """A copy of this model without the KOLs ``slugs`` (same rule and meta)."""
        drop = set(slugs)
        keep = [i for i, s in enumerate(self.classes) if s not in drop]
        rows = [np.arange(self.offsets[i], self.offsets[i + 1]) for i in keep]
        rows = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        return self._subset(rows, self.counts[keep], [self.classes[i] for i in keep],
                            {s: n for s, n in self.names.items() if s not in drop}, self.centroids[keep],
                            np.asarray(keep, dtype=np.int64))

    def _subset(self, rows, counts, classes, names, centroids, kols):
        """A model of this one's rows ``rows`` (grouped by KOL, ``counts`` per KOL of ``classes``, which are this
        model's KOLs ``kols``, their SVMs kept as trained), same rule, roster factor and meta."""
        svm = (None, None) if self.svm_w is None else (self.svm_w[kols], self.svm_b[kols])
        return Model(X=self.X[rows], offsets=np.concatenate([[0], np.cumsum(counts)]), classes=classes,
                     chips=np.asarray(self.chips, dtype=str)[rows], names=names, centroids=centroids,
                     rule=self.rule, version=self.version, meta=dict(self.meta), shrink=self.shrink,
                     svm_w=svm[0], svm_b=svm[1], reach=self.reach)


def train(X, slugs, names, chips=None, rule=None, shrink=None, svm_background=None):
    """Build a model from pool embeddings: centroids, the roster's factor for the rule
    (:func:`shared.recognition.rule.roster_shrink`: how close this roster's KOLs come to each other)
    and each KOL's linear SVM (:func:`shared.recognition.rule.fit_svms`); the rule's coefficients are
    not fitted to the pool. Costs about 0.7 s for 100 KOLs x 10 photos (``bench_accuracy.py --train-cost``).

    X: ``(N, 128)``; slugs: ``N`` KOL slugs; names: ``{slug: display name}``;
    chips: ``N`` chip ids (default ``"0", "1", ...``); rule: :data:`RULE`-shaped (default RULE);
    shrink: the factor (default: measured on the pool; 1.0 = plain distances); svm_background: ``(B, 128)``
    background embeddings for the per-KOL SVMs (default: :func:`shared.recognition.rule.background`;
    ``False``: no SVMs). ``meta["metrics"]["roster"]`` says ``shrink``, ``reach`` (:attr:`Model.reach`), ``svm_kols`` (KOLs with an SVM)
    and ``background`` (negatives beside the other KOLs).
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
    model.shrink = roster_shrink(model.X, model.offsets) if shrink is None else float(shrink)
    if svm_background is not False:
        svm_background = (background() if svm_background is None
                          else np.asarray(svm_background).reshape(-1, engine.EMBEDDING_SIZE))
        model.svm_w, model.svm_b = fit_svms(model.X, model.offsets, svm_background)
    model.meta = {"identities": len(model.classes), "samples": int(len(X)),
                  "metrics": training_metrics(model, time.perf_counter() - started)}
    model.reach = round(roster_reach(model.X, model.offsets, model.centroids), 4)  # as meta keeps it
    model.meta["metrics"]["roster"] = {"shrink": round(model.shrink, 4), "reach": round(model.reach, 4),
                                       "svm_kols": 0 if model.svm_w is None else len(model.svm_w),
                                       "background": 0 if svm_background is False else int(len(svm_background))}
    return model
