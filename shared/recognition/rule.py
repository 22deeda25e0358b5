"""The calibrated open-set rule: whether the nearest KOL is the face's person at all; its maths and constants.

A prediction is two decisions, both made from distances between 128-d dlib embeddings:

1. *which* KOL (the candidate): the KOL whose centroid (mean pool embedding) is the
   nearest to the face, in Euclidean distance (:class:`shared.recognition.model.Model`);
2. *whether* it is that KOL at all (this module): three numbers about the candidate,
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
"""
import numpy as np

#: The margin to the second-best KOL counts up to this distance (a lone KOL gets the cap).
MARGIN_CAP = 0.3
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


def logistic(coef, F):
    """``(M,)`` probabilities of the logistic curve ``coef`` (``[bias, d, margin, 1/n]``) at the rows of ``F`` ``(M, 3)``."""
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
    # imported here: scikit-learn is only needed by the benchmark's --fit, never by a server
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
