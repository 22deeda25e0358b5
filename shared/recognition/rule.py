"""The calibrated open-set rule: whether the nearest KOL is the face's person at all; its maths and constants.

A prediction is two decisions, both made from 128-d dlib embeddings:

1. *which* KOL (the candidate): the KOL whose centroid (mean pool embedding) is the
   nearest to the face, in Euclidean distance (:class:`shared.recognition.model.Model`);
2. *whether* it is that KOL at all (this module): numbers about the candidate (:func:`features`):
   ``d`` (distance to its centroid), the margin (how much farther the second-best KOL's centroid
   is, capped at :data:`MARGIN_CAP`), ``1/n`` (``n`` = the candidate's number of pool photos: a
   centroid of few photos is a noisier target), the roster's tightness ``u = 1 - shrink``
   (:func:`roster_shrink`: how close this roster's KOLs come to each other compared with a Western
   development roster; dlib packs East Asian faces closer together) with ``d * u``, and the
   candidate's per-KOL linear SVM score (:func:`fit_svms`, against the other KOLs and a background
   of development people; clipped to its margins) go into two logistic curves with fixed coefficients :data:`RULE`:

   - ``p_right = P(the candidate is this person)``; the face is named when ``p_right >= 0.5``
     (and never past :data:`FAR`);
   - ``p_stranger = P(this person is none of the KOLs)``.

   The coefficients were fitted once on development photos of *other* people, lfw_dev and asian_dev
   weighing the same (``bench/bench_accuracy.py --fit``), for a stream of faces in which KOLs
   outnumber strangers :data:`KOL_ODDS` to 1. What is measured on the agency's roster at each
   training is its spread (``shrink``) and its SVMs; the coefficients are the same for every pool.

``confidence`` (:func:`confidence`) is the probability that the answer shown is right, taken at its
worst over streams from 1 KOL face per 4 strangers to 6 per stranger (:data:`SHOWN_ODDS`): a named
face's ``p_right`` for the stranger-heavy end, an "unknown"'s ``p_stranger`` for the KOL-heavy end
(both in [0, 1]; the benchmark prints how often answers at each confidence level are right). So a
named face can show a confidence below 0.5: it is the better answer for the usual stream, not a sure one.
Two roster-aware corrections keep "sure" (>= 0.9) meaning >= 99 % right on East Asian rosters too:
the log-odds are lowered in proportion to the roster's tightness (:data:`DOUBT`), and an "unknown"
beyond the roster's reach (:data:`REACH` times :func:`roster_reach`, the median distance at which this
roster's KOLs, each left out in turn, meet the others) is never sure: on asian_dev most wrong "sure"
answers were KOLs' own odd photos (a small face in a stage photo, a partial crop) far from every centroid.
"""
import functools
from pathlib import Path

import numpy as np

from shared.core.storage import read_arrays
from shared.faces import engine

#: The margin to the second-best KOL counts up to this distance (a lone KOL gets the cap).
MARGIN_CAP = 0.3
#: The stream the rule is calibrated for: KOL faces per stranger face (an agency's own photos
#: and videos are mostly of its KOLs). Chosen among 1, 2 and 3 on lfw_dev before issue 23 (the odds whose
#: lower share, KOL photos named right or strangers answered "unknown", was the highest when half of the
#: people were measured with the rule fitted on the other half); kept, not chosen again on asian_dev.
KOL_ODDS = 3.0
#: The roster's spread (:func:`roster_spread`) is this quantile of the distances between photos of different KOLs.
SPREAD_QUANTILE = 0.1
#: At most this many pool photos (a fixed random sample) are compared for the spread (``O(n ** 2)``: ~0.1 s).
SPREAD_SAMPLE = 2000
#: The spread of a Western development roster (lfw_dev, its 44 KOLs: 0.68; asian_dev's 20: 0.43), the unit of :func:`features' distances.
PRIOR_SPREAD = 0.68
#: The prior spread weighs as much as this many KOLs of the roster (a small roster leans on it).
PRIOR_KOLS = 2
#: Regularisation of the per-KOL linear SVMs (:func:`fit_svms`; scikit-learn's ``C``).
SVM_C = 1.0
#: The SVM score counts within its margins (:func:`features`): past them an SVM says nothing more.
SVM_CLIP = (-1.0, 1.0)
#: A face farther than this from a KOL's centroid is never named that KOL, whatever its SVM says
#: (dlib's same-person distance, :data:`shared.faces.engine.SAME_PERSON_DISTANCE`; on the development
#: sets at most 1 KOL photo in 400 is that far from its KOL's 5-photo centroid): an SVM can score a face
#: unlike anything in its background highly on its KOL's side (that far, its score is not used either).
FAR = engine.SAME_PERSON_DISTANCE
#: Each KOL's SVM is trained against its this many nearest negatives (the ones near its boundary; far ones change little).
SVM_NEGATIVES = 400
#: The streams a shown confidence holds for: from this many KOL faces per stranger face (strangers 4
#: times as common as KOL faces) to the second (strangers rare). The rule decides for :data:`KOL_ODDS`; the
#: confidence shown is the lowest probability of being right over this range (:func:`shown`).
SHOWN_ODDS = (0.25, 6.0)
#: The roster's reach (:func:`roster_reach`) of a roster with one KOL, where no stranger distance can be measured
#: (lfw_dev's 5-photo rosters measure 0.59-0.61; asian_dev's 0.38-0.40).
PRIOR_REACH = 0.6
#: An "unknown" farther than this many times the roster's reach from its nearest KOL's centroid is never shown as
#: sure (:func:`confidence`): it lies beyond where this roster's strangers come, where the development photos are
#: mostly KOLs' own odd photos (a small face in a stage photo, a partial crop), so the stranger curve is not trusted
#: there. Chosen by ``bench/bench_accuracy.py --fit`` on answers cross-fitted over both populations (see there).
REACH = 1.5
#: Beyond :data:`REACH` an "unknown" shows at most this confidence (a guess: the face may be a KOL's odd photo).
BEYOND_REACH = 0.5
#: The rule's log-odds shown are lowered by this much per unit of the roster's tightness ``u = 1 - shrink``
#: (:func:`confidence`; only for rosters tighter than the Western prior, ``u > 0``): without it the rule's sure
#: answers were right less often on tight rosters (asian_dev 94-98 %, lfw_dev 99.4-99.9 %, cross-fitted), most of
#: the rest between two look-alike KOLs. Chosen with :data:`REACH` by ``bench/bench_accuracy.py --fit``.
DOUBT = 0.5
#: Logistic coefficients ``[bias, d, margin, 1/n, u, d * u, svm]`` of the open-set rule (:func:`features`),
#: fitted by ``bench/bench_accuracy.py --fit`` on all of lfw_dev and asian_dev (see the module docstring).
RULE = {
    "right": [5.2506, -14.4832, 23.4000, 1.9143, -4.9897, 2.6243, 4.2600],
    "stranger": [-7.1409, 17.5385, -14.9360, -2.8190, 14.7772, -29.0133, -3.2936],
}


def features(d, second, n, shrink=1.0, svm=None):
    """The rule's inputs, ``(M, 6)``: ``[d, min(second - d, MARGIN_CAP), 1/n, u, d * u, s]`` with ``u = 1 - shrink``.

    d: ``(M,)`` distance to the candidate's centroid; second: ``(M,)`` distance to the
    nearest *other* KOL's centroid (``inf`` when there is none); n: ``(M,)`` the
    candidate's photo count (>= 1); shrink: the roster's :func:`roster_shrink` (1 = as spread
    out as a Western development roster, where ``u = 0`` and ``d * u`` vanish); svm: ``(M,)`` the
    candidate's linear SVM score (:func:`fit_svms`), clipped to :data:`SVM_CLIP` (``None``: 0, a model without SVMs).
    (Also tried: the distance to the candidate's nearest photo as a further input; it did not
    help on the development protocol, see README.)
    """
    d = np.asarray(d, dtype=np.float64)
    margin = np.minimum(np.asarray(second, dtype=np.float64) - d, MARGIN_CAP)
    u = np.full_like(d, 1.0 - float(shrink))
    s = np.zeros_like(d) if svm is None else np.clip(np.asarray(svm, dtype=np.float64).reshape(d.shape), *SVM_CLIP)
    return np.column_stack([d, margin, 1.0 / np.maximum(np.asarray(n, dtype=np.float64), 1.0), u, d * u, s])


#: The SVMs' background negatives: ``(B, 128)`` ``float16`` dlib embeddings of development people
#: (``bench/make_background.py``: lfw_dev and asian_dev people; none is ever an agency's KOL).
BACKGROUND = Path(__file__).with_name("background.npy")


@functools.lru_cache(maxsize=1)
def background():
    """The background negatives :data:`BACKGROUND` as ``(B, 128)`` ``float32``, read once per process
    (on the first training, never at import); ``(0, 128)`` when the file is missing."""
    if not BACKGROUND.is_file():
        return np.zeros((0, 128), dtype=np.float32)
    return np.asarray(read_arrays(BACKGROUND), dtype=np.float32).reshape(-1, 128)


def fit_svms(X, offsets, background, C=None):
    """One linear SVM per KOL against the negatives: the other KOLs' photos and ``background``.

    X: ``(N, 128)`` pool embeddings grouped by KOL (``offsets``, ``(K + 1,)``); background: ``(B, 128)``
    embeddings of development people who are none of the KOLs. KOL ``k``'s SVM sees its photos and the
    :data:`SVM_NEGATIVES` negatives nearest its centroid, its photos weighing as much as those negatives
    together (:func:`fit_svm`). Returns ``(W, b)``, ``(K, 128)``
    and ``(K,)`` ``float32``: KOL ``k``'s score of a face ``e`` is ``W[k] @ e + b[k]`` (> 0: on the KOL's
    side); ``(None, None)`` when there are no negatives at all (one KOL, no background).
    Costs ``K`` small fits (about 1.5 ms each).
    """
    X = np.asarray(X, dtype=np.float64)
    background = np.asarray(background, dtype=np.float64).reshape(-1, X.shape[1])
    offsets = np.asarray(offsets, dtype=np.int64)
    K = len(offsets) - 1
    if K < 1 or (K == 1 and not len(background)):
        return None, None
    y = np.repeat(np.arange(K), np.diff(offsets))
    data = np.vstack([X, background])
    labels = np.concatenate([y, np.full(len(background), -1)])
    centroids = np.add.reduceat(X, offsets[:-1], axis=0) / np.maximum(np.diff(offsets), 1)[:, None]
    sq = (data * data).sum(1)
    W, b = np.zeros((K, X.shape[1]), dtype=np.float32), np.zeros(K, dtype=np.float32)
    for k in range(K):
        mine = labels == k
        d = sq - 2.0 * data @ centroids[k]
        d[mine] = np.inf
        hard = np.argsort(d)[:min(SVM_NEGATIVES, len(d) - int(mine.sum()))]
        W[k], b[k] = fit_svm(data[mine], data[hard], C)
    return W, b


#: liblinear's solver of ``LinearSVC(dual=False)`` with its default squared hinge and L2 penalty
#: (``L2R_L2LOSS_SVC``, a trust-region Newton method in the primal: no random order, the seed is unused).
_LIBLINEAR_PRIMAL = 2


def fit_svm(own, negatives, C=None):
    """One KOL's linear SVM: its photos ``own`` ``(n, 128)`` against ``negatives`` ``(m, 128)`` (``m >= 1``),
    the photos weighing as much as the negatives together. Returns ``(w, b)``: ``(128,)`` ``float64`` and a float.

    Exactly ``LinearSVC(C, class_weight="balanced", dual=False).fit`` on the rows ``[own; negatives]`` (float64,
    in that order; labels ``True`` for ``own``): the same liblinear call with the same arguments (tolerance 1e-4,
    1,000 iterations, intercept scaling 1, class weights ``(n + m) / (2 * [m, n])``), without scikit-learn's
    checks of its input, which cost more than the fit (measured: ~2.1 ms against ~1.5 ms per fit of 420
    rows). liblinear runs without the GIL, so fits in threads run at once. scikit-learn's ``LinearSVC``
    itself when its liblinear wrapper (private) is not there."""
    data = np.ascontiguousarray(np.vstack([own, negatives]), dtype=np.float64)
    n, m = len(own), len(negatives)
    C = SVM_C if C is None else C
    try:
        from sklearn.svm._liblinear import set_verbosity_wrap, train_wrap  # only a training needs scikit-learn
    except ImportError:  # pragma: no cover - another scikit-learn
        from sklearn.svm import LinearSVC

        svm = LinearSVC(C=C, class_weight="balanced", dual=False).fit(data, np.arange(n + m) < n)
        return svm.coef_[0], float(svm.intercept_[0])
    set_verbosity_wrap(0)  # liblinear prints its iterations unless told not to (LinearSVC tells it on every fit)
    y = (np.arange(n + m) < n).astype(np.float64)
    weight = (n + m) / (2.0 * np.array([m, n], dtype=np.float64))
    raw, _ = train_wrap(data, y, False, _LIBLINEAR_PRIMAL, 1e-4, 1.0, float(C), weight, 1000, 0, 0.1,
                        np.ones(n + m))
    return raw[0, :-1], float(raw[0, -1])


def roster_spread(X, offsets, limit=SPREAD_SAMPLE, seed=0):
    """How close different KOLs of this roster come to each other: ``(spread, kols)``.

    X: ``(N, 128)`` pool embeddings grouped by KOL (rows of KOL ``i`` are ``X[offsets[i]:offsets[i + 1]]``).
    ``spread`` is the :data:`SPREAD_QUANTILE` quantile of the Euclidean distances between pool photos
    of *different* KOLs (each KOL in turn plays a stranger against the rest; a pair of photos of
    the same KOL never counts), over at most ``limit`` photos (a fixed random sample, so the cost
    stays ``O(limit ** 2)``); ``kols`` is the number of KOLs that took part. ``(None, kols)`` when
    fewer than 2 KOLs. Independent of the number of photos per KOL and, in expectation, of the number of KOLs.
    """
    X = np.asarray(X, dtype=np.float32)
    offsets = np.asarray(offsets, dtype=np.int64)
    kols = len(offsets) - 1
    if kols < 2:
        return None, max(kols, 0)
    y = np.repeat(np.arange(kols), np.diff(offsets))
    rows = np.arange(len(X))
    if len(rows) > limit:
        rows = np.sort(np.random.default_rng(seed).choice(len(X), limit, replace=False))
    E, y = X[rows], y[rows]
    sq = (E * E).sum(1)
    D = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * (E @ E.T), 0.0))
    upper = np.triu(y[:, None] != y[None, :], 1)
    return float(np.quantile(D[upper], SPREAD_QUANTILE)), int(len(np.unique(y)))


def roster_shrink(X, offsets):
    """How much tighter this roster's faces are than a Western development roster's: a factor for
    :func:`features`, ``spread / PRIOR_SPREAD`` where ``spread`` is :func:`roster_spread` pulled toward
    the development prior :data:`PRIOR_SPREAD` as if the prior were :data:`PRIOR_KOLS` more KOLs
    (a roster of one KOL gets the prior: 1.0)."""
    spread, kols = roster_spread(X, offsets)
    if spread is None:
        return 1.0
    blended = (kols * spread + PRIOR_KOLS * PRIOR_SPREAD) / (kols + PRIOR_KOLS)
    return float(blended / PRIOR_SPREAD)


def roster_reach(X, offsets, centroids, limit=SPREAD_SAMPLE, seed=0):
    """How far this roster's strangers come: the median distance from a pool photo to the nearest centroid of
    another KOL (each KOL in turn plays a stranger against the rest: leave-one-KOL-out, which for centroids only
    hides the photo's own), over at most ``limit`` photos (a fixed random sample); :data:`PRIOR_REACH` for a roster
    of one KOL. X: ``(N, 128)`` grouped by KOL (``offsets``, ``(K + 1,)``); centroids: ``(K, 128)``. Costs ``O(limit * K)``."""
    X = np.asarray(X, dtype=np.float32)
    C = np.asarray(centroids, dtype=np.float32)
    offsets = np.asarray(offsets, dtype=np.int64)
    if len(C) < 2:
        return PRIOR_REACH
    y = np.repeat(np.arange(len(C)), np.diff(offsets))
    rows = np.arange(len(X))
    if len(rows) > limit:
        rows = np.sort(np.random.default_rng(seed).choice(len(X), limit, replace=False))
    E, y = X[rows], y[rows]
    sq_e, sq_c = (E * E).sum(1), (C * C).sum(1)
    nearest = np.empty(len(E), dtype=np.float32)
    for start in range(0, len(E), 256):  # 256 photos at a time: no (limit, K) temporaries
        part = slice(start, start + 256)
        D = sq_e[part, None] + sq_c[None, :] - 2.0 * (E[part] @ C.T)
        D[np.arange(len(D)), y[part]] = np.inf
        nearest[part] = D.min(1)
    return float(np.median(np.sqrt(np.maximum(nearest, 0.0))))


def logistic(coef, F):
    """``(M,)`` probabilities of the logistic curve ``coef`` (``[bias, d, margin, 1/n, u, d * u, s]``) at the rows of
    ``F`` ``(M, 6)`` (:func:`features`). A shorter rule uses the first columns only (a model saved before
    the roster inputs has 4 coefficients: ``[bias, d, margin, 1/n]``)."""
    coef = np.asarray(coef, dtype=np.float64)
    F = np.asarray(F, dtype=np.float64)
    z = coef[0] + F[:, :len(coef) - 1] @ coef[1:]
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def shown(p, named, doubt=0.0):
    """The confidence shown for the rule's probabilities ``p`` (array, at :data:`KOL_ODDS`): the lowest
    probability of being right over the streams :data:`SHOWN_ODDS` (a change of the prior odds shifts
    the logit by their log ratio). named: ``p`` is ``p_right`` of a named face (the stranger-heaviest
    stream is the worst case) or ``p_stranger`` of an "unknown" (the KOL-heaviest stream is).
    doubt: a further shift of the log-odds (>= 0; :func:`confidence` gives the roster's)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    shift = np.log(KOL_ODDS / SHOWN_ODDS[0]) if named else np.log(SHOWN_ODDS[1] / KOL_ODDS)
    return 1.0 / (1.0 + np.exp(-(np.log(p / (1 - p)) - max(shift, 0.0) - np.maximum(doubt, 0.0))))


def confidence(p, named, shrink=1.0, d=None, reach=None, doubt=None, beyond=None):
    """The confidence shown for an answer, the same promise on every roster: :func:`shown` of the rule's ``p``
    (``p_right`` of a named face, ``p_stranger`` of an "unknown"; arrays), with the log-odds lowered by
    ``doubt * u`` for a roster tighter than the Western prior (``u = 1 - shrink > 0``; default :data:`DOUBT`),
    and an "unknown" farther than ``beyond`` (default :data:`REACH`) times the roster's ``reach``
    (:func:`roster_reach`) from its nearest centroid (``d``) shown at most :data:`BEYOND_REACH`.
    ``reach`` or ``d`` ``None`` (a model saved before it was measured): no such cap. ``shrink``, ``d`` and
    ``reach`` may be arrays shaped like ``p`` (the benchmark's many rosters at once); ``named`` is one bool."""
    doubt = DOUBT if doubt is None else doubt
    out = shown(p, named, doubt * np.maximum(1.0 - np.asarray(shrink, dtype=np.float64), 0.0))
    if named or reach is None or d is None:
        return out
    beyond = REACH if beyond is None else beyond
    far = np.asarray(d, dtype=np.float64) > beyond * np.asarray(reach, dtype=np.float64)
    return np.where(far, np.minimum(out, BEYOND_REACH), out)


def fit_rule(F, right, stranger, odds=KOL_ODDS, groups=None):
    """Fit :data:`RULE`-shaped coefficients on development faces.

    F: ``(M, 6)`` :func:`features` of each face's candidate; right: ``(M,)`` bool, the
    candidate is the face's person; stranger: ``(M,)`` bool, the face's person is not enrolled.
    The faces are weighted so that KOL faces weigh ``odds`` times as much as stranger faces in
    total (the stream the probabilities are calibrated for, :data:`KOL_ODDS`); groups: optional ``(M,)``
    labels (e.g. the development population of each face): each group then weighs the same in total,
    with that KOL/stranger balance inside it.
    Returns ``{"right": [7 floats], "stranger": [7 floats]}`` (bias, then one per feature).
    """
    # imported here: scikit-learn is only needed by the benchmark's --fit, never by a server
    from sklearn.linear_model import LogisticRegression

    stranger = np.asarray(stranger, bool)
    groups = np.zeros(len(stranger)) if groups is None else np.asarray(groups)
    weight = np.zeros(len(stranger))
    for g in np.unique(groups):
        mine = groups == g
        n_str, n_kol = max(1, (stranger & mine).sum()), max(1, (~stranger & mine).sum())
        weight[mine] = np.where(stranger[mine], 1.0 / n_str, odds / n_kol)
    weight *= len(weight) / weight.sum()
    out = {}
    for key, target in (("right", right), ("stranger", stranger)):
        lr = LogisticRegression(C=10.0, max_iter=3000).fit(F, np.asarray(target, bool), sample_weight=weight)
        out[key] = [float(lr.intercept_[0])] + [float(c) for c in lr.coef_[0]]
    return out



def decision_distance(rule, n, margin=MARGIN_CAP, shrink=1.0):
    """The centroid distance below which a clear-margin face is named, for a KOL with ``n`` photos.

    Solves ``p_right = 0.5`` for the given margin to the second-best KOL (default: at its cap),
    at an SVM score of 0 (on the KOL's SVM boundary); ``None`` when the rule does
    not decrease with distance. shrink: the model's roster factor (:func:`roster_shrink`,
    ``Model.shrink``; default 1: a Western-like roster).
    """
    c = np.concatenate([np.asarray(rule["right"], dtype=np.float64), np.zeros(3)])[:7]
    u = 1.0 - float(shrink)
    slope = c[1] + c[5] * u
    if slope >= 0:
        return None
    return float(-(c[0] + c[2] * margin + c[3] / max(1, n) + c[4] * u) / slope)
