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
versions on disk (the arrays :data:`ARRAYS`, the slugs, chip ids, rule and ``shrink``; mapped read-only on load;
the roster's reach in ``meta.json``, ``metrics.roster.reach``).
"""
import bisect
import contextlib
import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from shared.core.errors import UserError
from shared.faces import engine
from shared.recognition import review
from shared.recognition.report import nearest_kols, training_metrics
from shared.recognition.rule import (FAR, RULE, SVM_NEGATIVES, background, confidence, features, fit_svm, fit_svms,
                                     logistic, roster_reach, roster_shrink)

#: Distance at which find-similar's similarity is 0.5. On lfw_dev's photo pairs, 92.6 % of
#: same-person pairs are closer than 0.55 and 0.18 % of different-person pairs (dlib's usual 0.6,
#: :data:`shared.faces.engine.SAME_PERSON_DISTANCE`: 97.8 % and 0.74 %, too loose once a face is
#: compared with a whole roster).
SIMILARITY_SCALE = 0.55
#: Candidates per face considered by the joint assignment and by find-similar's pre-selection.
TOP_CANDIDATES = 5
SIMILAR_PRESELECT = 64
#: The :class:`Model` attributes that are arrays (or ``None``), saved and loaded by name by
#: :mod:`shared.recognition.store` (each one ``.npy`` file, mapped read-only on load): a new array is one more name here.
ARRAYS = ("X", "offsets", "centroids", "svm_w", "svm_b", "svm_reach", "svm_negs", "kol_nearest", "kol_nearest_d")
#: Candidates beyond :data:`shared.recognition.rule.SVM_NEGATIVES` that :func:`svm_negatives`'s float32 pass keeps
#: for its exact float64 choice (float32 rounding moves a distance by ~1e-7 of itself: far fewer ranks than this).
NEGATIVE_SLACK = 64
#: A negative whose SVM score is at most minus this is outside the SVM's margin (score -1) with room for float32
#: rounding: it adds no loss and no gradient to the SVM's objective (squared hinge), so a swap of such negatives
#: leaves the SVM's optimum where it is (:func:`add_kol` keeps it).
SVM_OUTSIDE = 1.0 + 1e-3
#: A KOL's SVM is refitted by :func:`add_kol` when a photo that comes or goes is within its reach times this
#: (float rounding: refitting one SVM too many changes nothing).
REACH_SLACK = 1.0 + 1e-5


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
    ``None`` for a model trained before it: no reach cap on its confidences);
    svm_reach: ``(K,)`` ``float32``, the squared distance from each KOL's centroid to
    the farthest negative its SVM was trained on (``inf`` when it saw every negative), what :func:`add_kol` needs
    to know whose SVM a new KOL's photos change; svm_negs: ``(K, SVM_NEGATIVES)`` ``int32``, those negatives (indices
    into ``[X; background]``, -1 past the last), so that a neighbour's SVM is fitted again without a pass over all
    rows; both ``None`` for a model saved before they existed (or after :meth:`without` and the like); kol_nearest,
    kol_nearest_d: ``(K,)`` ``int64`` and ``float32``, each KOL's nearest other KOL by centroid and its distance
    (:func:`shared.recognition.report.nearest_kols`, kept so that :func:`add_kol` updates the report's look-alike
    pairs without comparing every pair again), or ``None`` (not kept: computed when needed).
    The arrays may be read-only (memory-mapped by :meth:`shared.recognition.store.ModelStore.load`).
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
    svm_reach: np.ndarray = None
    svm_negs: np.ndarray = None
    kol_nearest: np.ndarray = None
    kol_nearest_d: np.ndarray = None

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
        if self.svm_reach is not None:
            self.svm_reach = np.asarray(self.svm_reach, dtype=np.float32).reshape(-1)
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
        if model.svm_w is not None:
            negatives, reach = svm_negatives(model.X, model.offsets, svm_background, np.arange(len(model.classes)))
            model.svm_reach, model.svm_negs = reach.astype(np.float32), _padded(negatives)
    model.kol_nearest, model.kol_nearest_d = nearest_kols(model)
    return _with_metrics(model, started, 0 if svm_background is False else len(svm_background),
                         None if model.svm_negs is None else background_id(svm_background))


def _with_metrics(model, started, background_rows, background_id=None):
    """``model`` with its ``meta``: identities, samples and :func:`shared.recognition.report.training_metrics`
    (``roster``: the factor, KOLs with an SVM, ``background_rows`` negatives beside the KOLs and, for a model with
    SVM negatives, the background's :func:`background_id`), timed from ``started``."""
    model.meta = {"identities": len(model.classes), "samples": int(len(model.X)),
                  "metrics": training_metrics(model, time.perf_counter() - started)}
    model.reach = round(roster_reach(model.X, model.offsets, model.centroids), 4)  # as meta keeps it
    model.meta["metrics"]["roster"] = {"shrink": round(model.shrink, 4), "reach": round(model.reach, 4),
                                       "svm_kols": 0 if model.svm_w is None else len(model.svm_w),
                                       "background": int(background_rows)}
    if background_id is not None:
        model.meta["metrics"]["roster"]["background_id"] = background_id
    return model


def background_id(svm_background):
    """A short fingerprint of the SVMs' background negatives ``(B, 128)`` (``svm_negs`` index into them):
    :func:`add_kol` extends only a model trained with the same background."""
    data = np.ascontiguousarray(np.asarray(svm_background, dtype=np.float32))
    return hashlib.sha1(data.tobytes()).hexdigest()[:16]


def _svm_centroid(rows):
    """The centroid :func:`shared.recognition.rule.fit_svms` ranks a KOL's negatives by: ``(128,)`` ``float64``
    mean of its photos ``rows`` ``(n, 128)``, summed as it sums them."""
    return np.add.reduceat(np.asarray(rows, dtype=np.float64), [0], axis=0)[0] / max(1, len(rows))


def _rows(X, bg, idx):
    """The rows ``idx`` (indices into ``[X; bg]``, in that order) of ``X`` ``(N, 128)`` and ``bg`` ``(B, 128)``, as ``float32``."""
    out = np.empty((len(idx), X.shape[1]), dtype=np.float32)
    mine = idx < len(X)
    out[mine] = X[idx[mine]]
    out[~mine] = bg[idx[~mine] - len(X)]
    return out


def svm_negatives(X, offsets, svm_background, ks, block=8):
    """The negatives :func:`shared.recognition.rule.fit_svms` trains each KOL of ``ks`` against, and their reach.

    X: ``(N, 128)`` pool embeddings grouped by KOL (``offsets``, ``(K + 1,)``); svm_background: ``(B, 128)``;
    ks: KOL indices. A KOL's negatives are the rows of ``[X; svm_background]`` (indices in ``[0, N + B)``) not
    its own that are nearest its centroid, at most :data:`shared.recognition.rule.SVM_NEGATIVES`, nearest first
    (a float32 pass over all rows, ``block`` KOLs at a time, keeps :data:`NEGATIVE_SLACK` more candidates; the
    choice among them is made in float64 as ``fit_svms`` makes it). Returns ``(rows, reach)``: a list of
    ``int64`` index arrays and ``(len(ks),)`` ``float64`` squared distances from each centroid to its farthest
    negative (``inf`` when it takes every negative there is, so that any new photo joins them). Costs one
    ``(N + B) x 128`` product per ``block`` KOLs.
    """
    X = np.asarray(X, dtype=np.float32)
    bg = np.asarray(svm_background, dtype=np.float32).reshape(-1, X.shape[1])
    offsets = np.asarray(offsets, dtype=np.int64)
    ks = np.asarray(ks, dtype=np.int64)
    n_all = len(X) + len(bg)
    sq = np.concatenate([np.einsum("ij,ij->i", X, X), np.einsum("ij,ij->i", bg, bg)])  # no (N, 128) temporary

    out, reach = [], np.full(len(ks), np.inf)
    for start in range(0, len(ks), block):
        part = ks[start:start + block]
        C = np.array([_svm_centroid(X[offsets[k]:offsets[k + 1]]) for k in part])
        D = sq[None, :] - 2.0 * np.concatenate([X @ C.T.astype(np.float32), bg @ C.T.astype(np.float32)]).T
        for i, k in enumerate(part):
            lo, hi = int(offsets[k]), int(offsets[k + 1])
            D[i, lo:hi] = np.inf
            n_neg = n_all - (hi - lo)
            take = min(SVM_NEGATIVES, n_neg)
            keep = min(take + NEGATIVE_SLACK, n_neg)
            cand = np.argpartition(D[i], keep - 1)[:keep] if 0 < keep < n_all else np.arange(n_all)
            cand = cand[(cand < lo) | (cand >= hi)]
            data = _rows(X, bg, cand).astype(np.float64)
            d = (data * data).sum(1) - 2.0 * data @ C[i]
            order = np.argsort(d)[:take]
            out.append(cand[order])
            if take < n_neg:
                reach[start + i] = float(d[order[-1]] + C[i] @ C[i])
    return out, reach


def _nearest_sq(C, rows):
    """``(K,)`` ``float64``: the squared distance from each centroid ``C`` ``(K, 128)`` to the nearest of ``rows``
    ``(n, 128)`` (``inf`` when ``rows`` is empty)."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, C.shape[1])
    if not len(rows):
        return np.full(len(C), np.inf)
    C = np.asarray(C, dtype=np.float64)
    return np.maximum((C * C).sum(1)[:, None] + (rows * rows).sum(1)[None, :] - 2.0 * C @ rows.T, 0.0).min(1)


def _padded(rows, width=SVM_NEGATIVES):
    """A list of index arrays as one ``(len(rows), width)`` ``int32`` array, each row padded with -1."""
    out = np.full((len(rows), width), -1, dtype=np.int32)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def _merged_negatives(X, bg, centroid, negatives, added, n_own):
    """A KOL's negatives after photos ``added`` (indices into ``[X; bg]``) joined the pool: the nearest
    :data:`SVM_NEGATIVES` of its previous negatives ``negatives`` and ``added`` (every other row was farther than
    its previous farthest, so this is :func:`svm_negatives`'s choice over all rows). n_own: its photo count.
    Returns ``(rows, reach)`` like one KOL of :func:`svm_negatives`."""
    cand = np.concatenate([negatives, added]).astype(np.int64)
    data = _rows(X, bg, cand).astype(np.float64)
    d = (data * data).sum(1) - 2.0 * data @ centroid
    n_neg = len(X) + len(bg) - n_own
    take = min(SVM_NEGATIVES, n_neg)
    order = np.argsort(d)[:take]
    return cand[order], (float(d[order[-1]] + centroid @ centroid) if take < n_neg else np.inf)


def add_kol(model, slug, X, chips, name=None, svm_background=None):
    """``model`` with the KOL ``slug``'s pool photos set to ``X`` ``(n, 128)`` (chip ids ``chips``, in pool order):
    a new KOL, or another set of photos for one it has. What :func:`train` on the whole pool builds, fitting only
    what that KOL changes:

    - its rows, centroid and photo count take their place (KOLs stay sorted by slug, as :func:`train` sorts them);
    - the roster's factor is measured again (:func:`shared.recognition.rule.roster_shrink`: a sample of 2,000 photos);
    - its SVM is fitted (its negatives found in one pass over all rows), and so is the SVM of every KOL whose
      nearest negatives (``svm_negs``) a new photo enters (it is within that KOL's ``svm_reach``: the new set is
      the nearest of the old set and the new photos) or a photo that goes leaves (one pass for that KOL); the
      others keep theirs, their negatives are the same. A KOL whose negatives only swapped photos that its SVM
      scores outside its margin (:data:`SVM_OUTSIDE`: no loss, no gradient, the same number of negatives) keeps its
      SVM too: its optimum did not move (a refit finds it again within the solver's tolerance);
    - each KOL's nearest other KOL is updated for the new centroid (the report's look-alike pairs), and
      the report's numbers are measured as :func:`train` measures them.

    name: the KOL's display name (default: the one it has, else the slug); svm_background: as for :func:`train`
    (default the development background). ``meta["metrics"]["added"]`` says ``kol``, ``svms`` (SVMs fitted) and
    ``seconds``. Returns the new unsaved :class:`Model`, or ``None`` when this model cannot be extended (trained
    without SVMs, before ``svm_reach`` and ``svm_negs`` were kept, with another background or another
    :data:`shared.recognition.rule.SVM_NEGATIVES`, or ``X`` empty): :func:`train` it whole.
    Costs a copy of the arrays, about 3 ms per SVM fitted (each photo is among the nearest negatives of about
    ``SVM_NEGATIVES / photos per KOL`` KOLs) and one pass over the rows per 8 KOLs that lost a photo.
    """
    started = time.perf_counter()
    X = np.asarray(X, dtype=np.float32).reshape(-1, engine.EMBEDDING_SIZE)
    chips = [str(c) for c in chips]
    if (model.svm_w is None or model.svm_reach is None or model.svm_negs is None or not len(X)
            or not len(model.classes) or model.svm_negs.shape[1] != SVM_NEGATIVES):
        return None
    bg = np.asarray(background() if svm_background is None else svm_background,
                    dtype=np.float32).reshape(-1, engine.EMBEDDING_SIZE)
    if ((model.meta.get("metrics") or {}).get("roster") or {}).get("background_id") != background_id(bg):
        return None  # its negatives index another background
    slug, K, N = str(slug), len(model.classes), len(model.X)
    old = model._index.get(slug)
    pos = bisect.bisect_left(list(model.classes), slug) if old is None else old
    lo = int(model.offsets[pos]) if pos < K else N
    hi = lo if old is None else int(model.offsets[pos + 1])
    before = {str(c): lo + i for i, c in enumerate(model.chips[lo:hi])}
    kept = {before[c]: lo + i for i, c in enumerate(chips) if c in before}  # old row -> new row of the same photo
    added = np.array([lo + i for i, c in enumerate(chips) if c not in before], dtype=np.int64)
    removed = np.array(sorted(set(range(lo, hi)) - set(kept)), dtype=np.int64)

    def put(array, value):
        """``array`` with row ``pos`` set to ``value`` (inserted for a new KOL)."""
        if old is None:
            return np.insert(np.asarray(array), pos, value, axis=0)
        array = np.array(array)
        array[pos] = value
        return array

    # every stored index into [X; bg] moves to the new layout (a row that went: -1)
    move = np.arange(N + len(bg) + 1, dtype=np.int64) + len(X) - (hi - lo)
    move[:lo] = np.arange(lo)
    move[lo:hi] = -1
    for o, n in kept.items():
        move[o] = n
    move[-1] = -1  # the padding
    negs = move[put(model.svm_negs, -1)]
    new = Model(X=np.concatenate([model.X[:lo], X, model.X[hi:]]),
                offsets=np.concatenate([[0], np.cumsum(put(model.counts, len(X)))]),
                classes=list(model.classes[:pos]) + [slug] + list(model.classes[pos + (old is not None):]),
                chips=np.concatenate([np.asarray(model.chips[:lo], dtype=str), np.asarray(chips, dtype=str),
                                      np.asarray(model.chips[hi:], dtype=str)]),
                names=dict(model.names, **{slug: name or model.names.get(slug, slug)}),
                centroids=put(model.centroids, _svm_centroid(X)), rule=model.rule,
                svm_w=put(model.svm_w, 0.0), svm_b=put(model.svm_b, 0.0), svm_reach=put(model.svm_reach, np.inf))
    new.shrink = roster_shrink(new.X, new.offsets)
    C = new.centroids.astype(np.float64)
    within = new.svm_reach * REACH_SLACK
    again = _nearest_sq(C, model.X[removed]) <= within  # a negative left: found again in a pass over all rows
    again[pos] = True
    joined = (_nearest_sq(C, new.X[added]) <= within) & ~again
    passes = np.flatnonzero(again)
    rows, reach = svm_negatives(new.X, new.offsets, bg, passes)
    for k, r, far in zip(passes, rows, reach):
        negs[k], new.svm_reach[k] = _padded([r])[0], far
    for k in np.flatnonzero(joined):
        before = negs[k][negs[k] >= 0]
        r, new.svm_reach[k] = _merged_negatives(new.X, bg, _svm_centroid(new.X[new.offsets[k]:new.offsets[k + 1]]),
                                                before, added, int(new.counts[k]))
        negs[k] = _padded([r])[0]
        swapped = np.setxor1d(before, r)  # the negatives that came in and those pushed out
        if len(r) == len(before) and (not len(swapped) or
                                      (_rows(new.X, bg, swapped) @ new.svm_w[k] + new.svm_b[k]).max() <= -SVM_OUTSIDE):
            joined[k] = False  # every one outside its margin: its SVM's optimum is the same
    ks = np.flatnonzero(again | joined)
    for k, (w, b) in zip(ks, refit_svms(new.X, new.offsets, bg, negs, ks)):
        new.svm_w[k], new.svm_b[k] = w, b
    new.svm_negs = negs.astype(np.int32)
    _update_nearest(model, new, pos, old is None)
    _with_metrics(new, started, len(bg), background_id(bg))
    new.meta["metrics"]["added"] = {"kol": slug, "svms": int(len(ks)), "seconds": round(time.perf_counter() - started, 3)}
    return new


def refit_svms(X, offsets, bg, negs, ks):
    """The SVMs of the KOLs ``ks``, each fitted against exactly its stored negatives: what :func:`train` fits.

    X: ``(N, 128)`` pool rows grouped by KOL (``offsets``); bg: ``(B, 128)`` the background; negs: ``(K, w)``
    each KOL's negatives (indices into ``[X; bg]``, -1 past the last, nearest first, as :func:`svm_negatives`
    finds them). Returns ``[(w, b)]`` in the order of ``ks`` (:func:`shared.recognition.rule.fit_svm`: the
    same liblinear call as :func:`shared.recognition.rule.fit_svms` makes on the same rows), fitted in one
    thread per core (liblinear runs without the GIL)."""
    def one(k):
        row = negs[k]
        return fit_svm(X[offsets[k]:offsets[k + 1]], _rows(X, bg, row[row >= 0].astype(np.int64)))

    if len(ks) < 2:
        return [one(k) for k in ks]
    with ThreadPoolExecutor(max_workers=len(os.sched_getaffinity(0))) as pool:
        return list(pool.map(one, ks))


def _update_nearest(model, new, pos, inserted):
    """Set ``new.kol_nearest`` and ``new.kol_nearest_d``: ``model``'s, for ``new`` in which KOL ``pos`` is new
    (``inserted``) or has another centroid; all computed again when ``model`` does not keep them."""
    if model.kol_nearest is None:
        new.kol_nearest, new.kol_nearest_d = nearest_kols(new)
        return
    nearest = np.asarray(model.kol_nearest, dtype=np.int64)
    dist = np.array(model.kol_nearest_d, dtype=np.float32)
    if inserted:
        nearest = np.insert(nearest + (nearest >= pos), pos, pos)
        dist = np.insert(dist, pos, np.inf)
    else:  # the KOLs whose nearest it was: their nearest may now be another
        was = np.flatnonzero(nearest == pos)
        nearest[was], dist[was] = nearest_kols(new, was)
    d = np.sqrt(new.sq_distances(new.centroids[pos:pos + 1]))[0]
    d[pos] = np.inf
    closer = d < dist
    nearest[closer], dist[closer] = pos, d[closer]
    nearest[pos], dist[pos] = (int(d.argmin()), d.min()) if len(d) > 1 else (pos, np.inf)
    new.kol_nearest, new.kol_nearest_d = nearest, dist
