"""Model versions on disk: save, load, cache, forget a KOL, prune, switch; one training at a time.

Models are versioned folders ``data/models/<version>/`` holding ``model.npz`` (arrays
only, loaded with ``allow_pickle=False``, nothing refitted on load) and ``meta.json``;
the file ``data/models/current`` names the version in use and is replaced atomically.
A version is ``YYYYmmdd-HHMMSS-<microsecond in hex>`` (UTC), so versions sort by time.
:func:`shared.training.train.retrain` is the whole training step (one at a time, under the
:func:`training_lock`).
"""
import contextlib
import errno
import fcntl
import shutil
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from shared.core import config
from shared.core.errors import UserError
from shared.core.ids import VERSION_RE
from shared.core.storage import (atomic_write, atomic_write_bytes, atomic_write_json, file_identity, locked, read_arrays,
                                 read_json, sweep_temp_files)
from shared.recognition import report
from shared.recognition.model import Model

#: Model versions kept by :meth:`ModelStore.prune` unless told otherwise (the ``MODEL_VERSIONS_KEEP`` setting's default).
KEEP_VERSIONS = config.DEFAULTS["MODEL_VERSIONS_KEEP"]


def _write_model(path, model):
    """Write ``model``'s arrays to ``path`` (``.npz``, uncompressed) atomically (:func:`shared.core.storage.atomic_write`)."""
    def write(fh):
        np.savez(fh, X=model.X, offsets=model.offsets, centroids=model.centroids,
                 classes=np.array(model.classes, dtype=str).reshape(-1),
                 chips=np.array(model.chips, dtype=str).reshape(-1),
                 rule_right=np.array(model.rule["right"]), rule_stranger=np.array(model.rule["stranger"]),
                 shrink=np.array(model.shrink),
                 **({} if model.svm_w is None else {"svm_w": model.svm_w, "svm_b": model.svm_b}))
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
    identity = file_identity(Path(root) / str(version) / "model.npz")
    return None if identity is None else (str(root), str(version), *identity)


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
            arrays = read_arrays(folder / "model.npz")
        except FileNotFoundError:
            raise UserError("No such model version.", 404) from None
        meta = read_json(folder / "meta.json", default={}) or {}
        return Model(X=arrays["X"], offsets=arrays["offsets"], centroids=arrays["centroids"],
                     classes=arrays["classes"].tolist(), chips=arrays["chips"],
                     names=meta.get("names", {}), version=version, meta=meta,
                     rule={"right": arrays["rule_right"].tolist(), "stranger": arrays["rule_stranger"].tolist()},
                     shrink=float(arrays["shrink"]) if "shrink" in arrays else 1.0,
                     svm_w=arrays.get("svm_w"), svm_b=arrays.get("svm_b"))

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
                model = self.load(version)
                if slug not in model.classes:
                    continue
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
                report.forget(meta.get("metrics") or {}, slug)
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
