"""The training pool: the faces of every KOL the tool has been taught, on disk.

Layout under ``data/pool/``::

    manifest.json           {"kols": {slug: {"name": display name, "chips": [chip id, ...], "updated": iso time}}}
    <slug>/<chip id>.png    an aligned chip (lossless), see shared.faces
    <slug>/<chip id>.npy    its 128-d embedding, computed once and cached beside it

The manifest is the truth: a chip file that the manifest does not list does not
exist for anyone (it is an orphan of an interrupted write and is swept away on the
next change). Every change writes the files first and the manifest last, with an
atomic rename, under a cross-process lock, so a crash at any point leaves the pool
exactly as it was before the change or exactly as it is after it.

KOL names are kept as display names (any script, spaces, accents); on disk a KOL
is a *slug*: lower-case ASCII letters, digits and dashes plus a hash of the
display name, so no name can reach outside its folder.
"""
import hashlib
import re
import shutil
import unicodedata
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import faces, images
from .errors import UserError
from .storage import atomic_write_bytes, atomic_write_json, locked, read_json

SLUG_RE = re.compile(r"^[a-z0-9-]{1,64}$")
CHIP_ID_RE = re.compile(r"^[0-9a-f]{16}$")
MAX_NAME_LENGTH = 80


def _name_char(ch):
    """Spaces and tabs become a space; control, format and separator characters vanish."""
    category = unicodedata.category(ch)
    if ch in "\t\n\r" or category == "Zs":
        return " "
    return "" if category[0] in "CZ" else ch


def display_name(raw):
    """Clean a KOL name as typed or as a zip folder name, for display.

    Unicode NFC, control and format characters dropped, whitespace collapsed,
    at most :data:`MAX_NAME_LENGTH` characters. Slashes and dots are kept as text
    (a name is never used as a path). Raises :class:`UserError` when nothing is left.
    """
    text = unicodedata.normalize("NFC", str(raw))
    text = "".join(map(_name_char, text))
    text = " ".join(text.split())[:MAX_NAME_LENGTH].strip()
    if not text or set(text) <= {".", "/", "\\", " "}:
        raise UserError(f"{raw!r} is not usable as a KOL name.")
    return text


def kol_slug(name):
    """The on-disk folder name of a KOL: ``ascii-part-<8 hex>``; stable for a display name."""
    name = display_name(name)
    ascii_part = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    ascii_part = re.sub(r"[^a-z0-9]+", "-", ascii_part.lower()).strip("-")[:40].strip("-")
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
    return f"{ascii_part}-{digest}" if ascii_part else f"kol-{digest}"


def chip_id(chip):
    """Content id of a chip: 16 hex digits of the SHA-1 of its pixels."""
    return hashlib.sha1(np.ascontiguousarray(chip).tobytes()).hexdigest()[:16]


def save_chip(folder, chip, embedding=None):
    """Write ``chip`` as ``<id>.png`` and its embedding as ``<id>.npy`` in ``folder``.

    ``embedding`` ``(128,)`` is computed when not given. Both writes are atomic.
    Returns the chip id.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cid = chip_id(chip)
    png = folder / f"{cid}.png"
    if not png.exists():
        atomic_write_bytes(png, images.encode_png(chip))
    if embedding is not None:
        _write_embedding(png.with_suffix(".npy"), embedding)
    else:
        chip_embedding(png)
    return cid


def _write_embedding(path, embedding):
    import io

    buf = io.BytesIO()
    np.save(buf, np.asarray(embedding, dtype=np.float64).reshape(faces.EMBEDDING_SIZE), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def chip_embedding(png_path):
    """The ``(128,)`` embedding of the chip at ``png_path``, from its ``.npy`` cache.

    Computed (and cached) only when the cache is missing or unreadable.
    """
    png_path = Path(png_path)
    cache = png_path.with_suffix(".npy")
    try:
        vector = np.load(cache, allow_pickle=False)
        if vector.shape == (faces.EMBEDDING_SIZE,):
            return vector
    except (OSError, ValueError):
        pass
    vector = faces.embed([images.load_image(png_path, max_side=None)])[0]
    _write_embedding(cache, vector)
    return vector


def _now():
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Pool:
    """The training pool rooted at ``root`` (normally ``data/pool``)."""

    def __init__(self, root):
        self.root = Path(root)
        self.manifest_path = self.root / "manifest.json"
        self.lock_path = self.root / ".lock"

    # -- reading ----------------------------------------------------------
    def kols(self):
        """``{slug: {"name": str, "chips": [chip id, ...], "updated": str}}``, sorted by slug."""
        data = read_json(self.manifest_path, default={}) or {}
        return dict(sorted((data.get("kols") or {}).items()))

    def names(self):
        """``{slug: display name}``."""
        return {slug: info["name"] for slug, info in self.kols().items()}

    def slug_for(self, name):
        """The slug of an existing KOL with this display name, else ``None``."""
        slug = kol_slug(name)
        return slug if slug in self.kols() else None

    def chip_path(self, slug, cid):
        """Path of a chip's PNG; :class:`UserError` (404) for ids that are malformed or not in the pool."""
        if not (SLUG_RE.match(str(slug)) and CHIP_ID_RE.match(str(cid))):
            raise UserError("No such photo in the training pool.", 404)
        info = self.kols().get(slug)
        if not info or cid not in info["chips"]:
            raise UserError("No such photo in the training pool.", 404)
        return self.root / slug / f"{cid}.png"

    def embeddings(self):
        """All pool embeddings for training.

        Returns ``(X, slugs, chip_ids)``: ``X`` is ``(N, 128)`` ``float64``, ``slugs``
        and ``chip_ids`` are lists of ``N`` strings, KOLs in slug order and each
        KOL's chips in import order. Cached embeddings are read, never recomputed.
        """
        rows, slugs, ids = [], [], []
        for slug, info in self.kols().items():
            for cid in info["chips"]:
                rows.append(chip_embedding(self.root / slug / f"{cid}.png"))
                slugs.append(slug)
                ids.append(cid)
        X = np.array(rows, dtype=np.float64).reshape(-1, faces.EMBEDDING_SIZE)
        return X, slugs, ids

    def summary(self):
        """One dict per KOL: ``slug``, ``name``, ``count``, ``thumb`` (chip id or ``None``), ``updated``."""
        return [{"slug": slug, "name": info["name"], "count": len(info["chips"]),
                 "thumb": info["chips"][0] if info["chips"] else None, "updated": info.get("updated")}
                for slug, info in self.kols().items()]

    def stats(self):
        """``{"kols": int, "chips": int}``."""
        kols = self.kols()
        return {"kols": len(kols), "chips": sum(len(i["chips"]) for i in kols.values())}

    # -- writing ----------------------------------------------------------
    def add(self, name, chip_pngs, replace=False):
        """Import chips for the KOL ``name``.

        chip_pngs: paths of chip PNGs written by :func:`save_chip` (their ``.npy``
            beside them is copied too, so nothing is embedded again).
        replace: drop the KOL's existing chips (else merge, skipping chips already there).

        Returns the KOL's slug. The manifest changes last, atomically.
        """
        return self.add_many([(name, chip_pngs, replace)])[0]

    def add_many(self, items):
        """Import several KOLs as one change: ``items`` is ``[(name, chip_pngs, replace)]`` (see :meth:`add`).

        All of them or none: the files are copied first and the manifest is
        written once, last, atomically; on any error (a full disk...) the copied
        files are removed again and the pool is exactly as it was.
        Returns the slugs, in the order of ``items``.
        """
        prepared = [(display_name(name), list(map(Path, pngs)), replace) for name, pngs, replace in items]
        with locked(self.lock_path):
            before = read_json(self.manifest_path, default={}) or {}
            data = read_json(self.manifest_path, default={}) or {}
            kols = data.setdefault("kols", {})
            slugs = []
            try:
                for name, pngs, replace in prepared:
                    slug = kol_slug(name)
                    slugs.append(slug)
                    folder = self.root / slug
                    folder.mkdir(parents=True, exist_ok=True)
                    current = [] if replace else list(kols.get(slug, {}).get("chips", []))
                    seen = set(current)
                    for png in pngs:
                        cid = png.stem
                        if not CHIP_ID_RE.match(cid) or cid in seen:
                            continue
                        vector = chip_embedding(png)  # cached beside the source chip
                        target = folder / f"{cid}.png"
                        if not target.exists():
                            atomic_write_bytes(target, png.read_bytes())
                        _write_embedding(target.with_suffix(".npy"), vector)
                        current.append(cid)
                        seen.add(cid)
                    kols[slug] = {"name": name, "chips": current, "updated": _now()}
                atomic_write_json(self.manifest_path, data)
            except BaseException:
                self._sweep(before)  # e.g. a full disk: the pool stays exactly as it was, no orphans
                raise
            self._sweep(data)
        return slugs

    def remove(self, slug):
        """Delete a KOL for good: out of the manifest first, then its files. Returns its display name."""
        with locked(self.lock_path):
            data = read_json(self.manifest_path, default={}) or {}
            info = (data.get("kols") or {}).pop(str(slug), None)
            if info is None:
                raise UserError("That KOL is not in the training pool.", 404)
            atomic_write_json(self.manifest_path, data)
            self._sweep(data)
        return info["name"]

    def _sweep(self, data):
        """Delete files and folders that the manifest ``data`` does not list (call under the lock)."""
        listed = {slug: set(info["chips"]) for slug, info in (data.get("kols") or {}).items()}
        if not self.root.exists():
            return
        for entry in self.root.iterdir():
            if entry.name.startswith(".tmp-") and entry.is_file():  # a manifest write cut off by a crash
                entry.unlink(missing_ok=True)
                continue
            if entry.name.startswith(".") or entry == self.manifest_path:
                continue
            if not entry.is_dir() or entry.name not in listed:
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
                continue
            for f in entry.iterdir():
                if f.stem not in listed[entry.name] or f.suffix not in (".png", ".npy"):
                    f.unlink(missing_ok=True)
