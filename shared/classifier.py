"""Who is this face? An SVM over pool embeddings plus a calibrated "unknown" rule.

An SVM always names one of the KOLs it was trained on, even for a stranger. So a
prediction is two decisions:

1. *which* KOL: a scikit-learn ``SVC`` (C chosen by cross-validation on the pool);
2. *whether* it is that KOL at all: the Euclidean distance ``d`` from the face to
   the nearest pool embedding of the predicted KOL, turned into
   ``confidence = P(same person | d)`` by a logistic curve fitted on the pool
   itself (distances between photos of one KOL versus between different KOLs).
   The face is *known* when ``P(same | d) >= 0.5``, i.e. ``d <= threshold``.

The reported ``confidence`` is the probability that the answer given is right:
``P(same | d)`` for a named face, ``1 - P(same | d)`` for an "unknown" one, so it
is always in [0.5, 1] and reads the same way for both answers.

Similarity between a face and a KOL (find-similar) comes from the Euclidean
distance ``d`` to the KOL's nearest pool photo: ``similarity = 2 ** -(d / threshold) ** 2``,
in [0, 1]; 1 for the same embedding, 0.5 exactly at the model's known/unknown
threshold (above 0.5 the model would name that KOL), about 0.1 for faces that are
clearly different people.

Models are versioned folders ``data/models/<version>/`` holding ``model.npz``
(arrays only, loaded with ``allow_pickle=False``) and ``meta.json``; the file
``data/models/current`` names the version in use and is replaced atomically.
Loading refits the SVM from the stored embeddings and hyper-parameters, which is
deterministic and takes milliseconds: nothing is ever unpickled.
"""
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import faces
from .errors import UserError
from .storage import atomic_write_bytes, atomic_write_json, locked, read_json

VERSION_RE = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")
#: The threshold used when the pool is too small to calibrate one (dlib's LFW threshold).
DEFAULT_THRESHOLD = 0.6
DEFAULT_SLOPE = 12.0
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


@dataclass
class Prediction:
    """The answer for one face: ``identity`` is a pool slug or ``None`` (unknown).

    confidence: probability that this answer (the KOL, or "unknown") is right, in [0.5, 1].
    candidate: the KOL the SVM picked, even when the face is unknown.
    distance: Euclidean distance to the candidate's nearest pool embedding.
    p_same: ``P(same person as candidate | distance)``, in [0, 1].
    """

    identity: object
    confidence: float
    known: bool
    candidate: object
    distance: float
    p_same: float = 0.0


def _svc(C, n_classes):
    from sklearn.svm import SVC

    return SVC(kernel="linear", C=C, class_weight="balanced") if n_classes > 1 else None


def _nearest_distances(X, y):
    """For each row: distance to the nearest *other* row of its class and to the nearest row of another class."""
    sq = np.einsum("ij,ij->i", X, X)
    D = np.sqrt(np.clip(sq[:, None] + sq[None, :] - 2.0 * (X @ X.T), 0.0, None))  # (N, N), no (N, N, 128)
    np.fill_diagonal(D, np.inf)
    same = y[:, None] == y[None, :]
    genuine = np.where(same, D, np.inf).min(axis=1)
    impostor = np.where(~same, D, np.inf).min(axis=1)
    return genuine, impostor


def calibrate(X, y):
    """Fit ``P(same | d)`` on the pool.

    X: ``(N, 128)`` embeddings; y: ``(N,)`` integer class labels.
    Returns ``(threshold, slope)``: ``P = 1 / (1 + exp(slope * (d - threshold)))``.
    Falls back to ``(0.6, 12)`` when there are not both same-KOL and different-KOL pairs.
    """
    if len(X) > 3000:  # the pairwise matrix is O(N^2): calibrate on a fixed sample
        idx = np.random.default_rng(0).choice(len(X), 3000, replace=False)
        X, y = X[idx], y[idx]
    genuine, impostor = _nearest_distances(X, y)
    genuine, impostor = genuine[np.isfinite(genuine)], impostor[np.isfinite(impostor)]
    if len(genuine) < 2 or len(impostor) < 2:
        return DEFAULT_THRESHOLD, DEFAULT_SLOPE
    from sklearn.linear_model import LogisticRegression

    d = np.concatenate([genuine, impostor]).reshape(-1, 1)
    target = np.concatenate([np.ones(len(genuine)), np.zeros(len(impostor))])
    lr = LogisticRegression(class_weight="balanced", C=100.0).fit(d, target)
    a, b = float(lr.coef_[0][0]), float(lr.intercept_[0])
    if a >= 0:  # same-KOL photos are not closer than different KOLs: nothing to calibrate on
        return DEFAULT_THRESHOLD, DEFAULT_SLOPE
    return float(np.clip(-b / a, 0.3, 0.75)), float(-a)


@dataclass
class Model:
    """A trained model. ``classes[i]`` is the slug of label ``i``; ``names`` maps slug to display name."""

    X: np.ndarray
    y: np.ndarray
    classes: list
    names: dict
    C: float = 1.0
    threshold: float = DEFAULT_THRESHOLD
    slope: float = DEFAULT_SLOPE
    version: str = ""
    meta: dict = field(default_factory=dict)
    svm: object = None

    def fit(self):
        """(Re)build the SVM from the stored embeddings; returns ``self``."""
        self.svm = _svc(self.C, len(self.classes))
        if self.svm is not None:
            self.svm.fit(self.X, self.y)
        return self

    def confidence(self, d):
        """``P(same person | distance d)``, a float in [0, 1]."""
        return float(1.0 / (1.0 + np.exp(np.clip(self.slope * (d - self.threshold), -50, 50))))

    def predict(self, embeddings):
        """One :class:`Prediction` per row of ``embeddings`` ``(M, 128)``."""
        E = np.asarray(embeddings, dtype=np.float64).reshape(-1, faces.EMBEDDING_SIZE)
        if not len(E):
            return []
        labels = self.svm.predict(E) if self.svm is not None else np.zeros(len(E), dtype=int)
        out = []
        for e, label in zip(E, labels):
            d = float(faces.distances(self.X[self.y == label], e).min())
            p_same = self.confidence(d)
            known = d <= self.threshold
            slug = self.classes[int(label)]
            answer_right = p_same if known else 1.0 - p_same
            out.append(Prediction(slug if known else None, round(answer_right, 4), bool(known), slug,
                                  round(d, 4), round(p_same, 4)))
        return out

    def similarity(self, d):
        """Similarity in [0, 1] for an embedding distance ``d`` (array or float): ``2 ** -(d / threshold) ** 2``."""
        return np.exp2(-np.square(np.asarray(d, dtype=np.float64) / self.threshold))

    def similar(self, embedding, k=5):
        """The ``k`` KOLs most similar to ``embedding`` ``(128,)``.

        Returns ``[(slug, similarity, distance)]`` sorted by similarity, highest
        first; similarity is :meth:`similarity` of the Euclidean distance to the
        KOL's nearest pool embedding (0.5 at the known/unknown threshold).
        """
        e = np.asarray(embedding, dtype=np.float64).reshape(faces.EMBEDDING_SIZE)
        d = faces.distances(self.X, e)
        rows = []
        for label, slug in enumerate(self.classes):
            nearest = float(d[self.y == label].min())
            rows.append((slug, round(float(self.similarity(nearest)), 4), round(nearest, 4)))
        rows.sort(key=lambda r: (-r[1], r[2], r[0]))
        return rows[:max(0, int(k))]


def choose_C(X, y):
    """Pick the SVM's ``C`` from :data:`C_GRID` by stratified cross-validation; returns ``(C, cv_accuracy)``."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    counts = np.bincount(y)
    folds = int(min(5, counts.min()))
    if len(counts) < 2 or folds < 2:
        return 1.0, None
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    scores = {C: cross_val_score(_svc(C, len(counts)), X, y, cv=cv).mean() for C in C_GRID}
    best = max(C_GRID, key=lambda C: (round(scores[C], 6), -C))
    return best, float(scores[best])


def confused_pairs(X, y, classes, C, top=5):
    """The KOL pairs most often mistaken for each other in cross-validation: ``[(slug_a, slug_b, count)]``."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    counts = np.bincount(y)
    folds = int(min(5, counts.min()))
    if len(counts) < 2 or folds < 2:
        return []
    pred = cross_val_predict(_svc(C, len(counts)), X, y,
                             cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=0))
    pairs = {}
    for t, p in zip(y, pred):
        if t != p:
            key = tuple(sorted((classes[t], classes[p])))
            pairs[key] = pairs.get(key, 0) + 1
    return sorted(((a, b, n) for (a, b), n in pairs.items()), key=lambda r: -r[2])[:top]


def train(X, slugs, names):
    """Train a model on pool embeddings.

    X: ``(N, 128)``; slugs: ``N`` KOL slugs; names: ``{slug: display name}``.
    Returns an unsaved :class:`Model` with ``meta`` holding the metrics.
    Raises :class:`UserError` when the pool is empty.
    """
    X = np.asarray(X, dtype=np.float64).reshape(-1, faces.EMBEDDING_SIZE)
    if not len(X):
        raise UserError("The training pool is empty: import some KOLs first.", 409)
    classes = sorted(set(slugs))
    index = {s: i for i, s in enumerate(classes)}
    y = np.array([index[s] for s in slugs], dtype=np.int64)
    started = time.perf_counter()
    C, cv_accuracy = choose_C(X, y)
    threshold, slope = calibrate(X, y)
    model = Model(X=X, y=y, classes=classes, names={s: names.get(s, s) for s in classes},
                  C=C, threshold=threshold, slope=slope).fit()
    model.meta = {
        "identities": len(classes),
        "samples": int(len(X)),
        "metrics": {
            "cv_accuracy": cv_accuracy,
            "C": C,
            "threshold": round(threshold, 4),
            "slope": round(slope, 3),
            "per_kol": {s: int((y == i).sum()) for i, s in enumerate(classes)},
            "confused": [{"a": a, "b": b, "count": n} for a, b, n in confused_pairs(X, y, classes, C)],
            "train_seconds": round(time.perf_counter() - started, 3),
        },
    }
    return model


class ModelStore:
    """Versioned models under ``root`` (normally ``data/models``)."""

    def __init__(self, root):
        self.root = Path(root)
        self._cache = None
        self._cache_lock = threading.Lock()

    def current_version(self):
        """The version named by ``current``, or ``None`` when no model was trained yet."""
        try:
            version = (self.root / "current").read_text().strip()
        except FileNotFoundError:
            return None
        return version if VERSION_RE.match(version) else None

    def save(self, model):
        """Write ``model`` as a new version and make it current (atomically). Returns the version."""
        self.root.mkdir(parents=True, exist_ok=True)
        version = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        folder = self.root / version
        folder.mkdir()
        import io

        buf = io.BytesIO()
        np.savez(buf, X=model.X, y=model.y, classes=np.array(model.classes, dtype=str),
                 params=np.array([model.C, model.threshold, model.slope]))
        atomic_write_bytes(folder / "model.npz", buf.getvalue())
        meta = dict(model.meta, version=version, names=model.names,
                    created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        atomic_write_json(folder / "meta.json", meta)
        with locked(self.root / ".lock"):
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
        """Load and refit a saved model (arrays only, no pickle)."""
        if not VERSION_RE.match(str(version)):
            raise UserError("No such model version.", 404)
        folder = self.root / version
        try:
            with np.load(folder / "model.npz", allow_pickle=False) as z:
                X, y, classes, params = z["X"], z["y"], [str(c) for c in z["classes"]], z["params"]
        except FileNotFoundError:
            raise UserError("No such model version.", 404) from None
        meta = read_json(folder / "meta.json", default={}) or {}
        model = Model(X=X, y=y, classes=classes, names=meta.get("names", {}), C=float(params[0]),
                      threshold=float(params[1]), slope=float(params[2]), version=version, meta=meta)
        return model.fit()

    def current(self):
        """The current model, loaded once and reloaded when ``current`` changes; ``None`` if none yet.

        Cheap to call before every prediction: one small file read when nothing changed.
        """
        version = self.current_version()
        if version is None:
            return None
        with self._cache_lock:
            if self._cache is None or self._cache.version != version:
                self._cache = self.load(version)
            return self._cache
