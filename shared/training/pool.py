"""The training pool: the faces of every KOL the tool has been taught, on disk.

Layout under ``data/pool/``::

    manifest.json           {"kols": {slug: {"name": display name, "chips": [chip id, ...], "updated": iso time}},
                             "aliases": {merged slug: slug it went into}, "merges": [merge record, ...]}
    <slug>/<chip id>.png    an aligned chip (lossless), see shared.faces.engine
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
import io
import json
import re
import shutil
import unicodedata
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from shared.core import names
from shared.core.errors import UserError
from shared.core.ids import CHIP_ID_RE
from shared.core.names import display_name
from shared.core.storage import atomic_write_bytes, atomic_write_json, locked, read_arrays, read_json
from shared.faces import engine, images

SLUG_RE = re.compile(r"^[a-z0-9-]{1,64}$")


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
    buf = io.BytesIO()
    np.save(buf, np.asarray(embedding, dtype=np.float64).reshape(engine.EMBEDDING_SIZE), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def chip_embedding(png_path):
    """The ``(128,)`` embedding of the chip at ``png_path``, from its ``.npy`` cache.

    Computed (and cached) only when the cache is missing or unreadable.
    """
    png_path = Path(png_path)
    cache = png_path.with_suffix(".npy")
    try:
        vector = read_arrays(cache)
        if vector.shape == (engine.EMBEDDING_SIZE,):
            return vector
    except (OSError, ValueError):
        pass
    vector = engine.embed([images.load_image(png_path, max_side=None)])[0]
    _write_embedding(cache, vector)
    return vector


def _copy_chip(src_png, dst_png):
    """The chip ``src_png`` and its embedding at ``dst_png`` (and its ``.npy``): the PNG copied unless one is
    there already, the embedding read from the source's cache (computed when missing) and written beside it."""
    vector = chip_embedding(src_png)
    if not dst_png.exists():
        atomic_write_bytes(dst_png, src_png.read_bytes())
    _write_embedding(dst_png.with_suffix(".npy"), vector)


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
        return _existing_slug(self.kols(), display_name(name))

    def chip_path(self, slug, cid):
        """Path of a chip's PNG; :class:`UserError` (404) for ids that are malformed or not in the pool."""
        if not (SLUG_RE.match(str(slug)) and CHIP_ID_RE.match(str(cid))):
            raise UserError("No such photo in the training pool.", 404)
        info = self.kols().get(slug)
        if not info or cid not in info["chips"]:
            raise UserError("No such photo in the training pool.", 404)
        return self.root / slug / f"{cid}.png"

    def embeddings(self, known=None):
        """All pool embeddings for training.

        Returns ``(X, slugs, chip_ids)``: ``X`` is ``(N, 128)`` ``float64``, ``slugs``
        and ``chip_ids`` are lists of ``N`` strings, KOLs in slug order and each
        KOL's chips in import order. Cached embeddings are read, never recomputed;
        known: optional ``{(slug, chip id): embedding}`` already at hand (a model's rows),
        used instead of reading those chips.
        """
        known = known or {}
        rows, slugs, ids = [], [], []
        for slug, info in self.kols().items():
            for cid in info["chips"]:
                row = known.get((slug, cid))
                rows.append(chip_embedding(self.root / slug / f"{cid}.png") if row is None else row)
                slugs.append(slug)
                ids.append(cid)
        X = np.array(rows, dtype=np.float64).reshape(-1, engine.EMBEDDING_SIZE)
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
                    slug = _existing_slug(kols, name) or kol_slug(name)  # a renamed KOL keeps its slug
                    name = kols.get(slug, {}).get("name", name)  # the pool's display name stays
                    slugs.append(slug)
                    folder = self.root / slug
                    folder.mkdir(parents=True, exist_ok=True)
                    current = [] if replace else list(kols.get(slug, {}).get("chips", []))
                    seen = set(current)
                    for png in pngs:
                        cid = png.stem
                        if not CHIP_ID_RE.match(cid) or cid in seen:
                            continue
                        _copy_chip(png, folder / f"{cid}.png")
                        current.append(cid)
                        seen.add(cid)
                    kols[slug] = {"name": name, "chips": current, "updated": _now(),
                                  "added": kols.get(slug, {}).get("added") or _now()}
                atomic_write_json(self.manifest_path, data)
            except BaseException:
                self._sweep(before)  # e.g. a full disk: the pool stays exactly as it was, no orphans
                raise
            self._sweep(data)
        return slugs

    def remove(self, slug):
        """Delete a KOL for good: out of the manifest first, then its files. Returns its display name.
        The records of merges into it go too (they cannot be undone any more)."""
        with locked(self.lock_path):
            data = read_json(self.manifest_path, default={}) or {}
            info = (data.get("kols") or {}).pop(str(slug), None)
            if info is None:
                raise UserError("That KOL is not in the training pool.", 404)
            if data.get("merges"):
                data["merges"] = [m for m in data["merges"] if m["target"] != str(slug)]
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

    # -- roster: rename, merge, remove one chip (issue 12) -------------------------
    def display_names(self):
        """``{slug: display name}`` for naming predictions: every KOL of the pool, plus the
        slugs of KOLs merged into another one (an older model still answers with them),
        which show the name of the KOL they were merged into."""
        data = read_json(self.manifest_path, default={}) or {}
        kols = data.get("kols") or {}
        names = {slug: info["name"] for slug, info in kols.items()}
        for old, new in (data.get("aliases") or {}).items():
            if old not in names and new in kols:
                names[old] = kols[new]["name"]
        return names

    def same_name(self, name):
        """The slug of the KOL whose name is the same as ``name`` up to case, spaces,
        underscores, dashes and accents (see :func:`name_key`), else ``None``."""
        return _existing_slug(self.kols(), display_name(name))

    def rename(self, slug, new_name):
        """Give the KOL ``slug`` the display name ``new_name``; its slug (and so every trained
        model's answers) stays the same, so no retraining is needed.

        Raises :class:`UserError` 404 for an unknown KOL, 409 when another KOL already has
        that name (up to :func:`name_key`): merge the two instead. Returns the new name.
        """
        name = display_name(new_name)
        with locked(self.lock_path):
            data = read_json(self.manifest_path, default={}) or {}
            kols = data.get("kols") or {}
            if str(slug) not in kols:
                raise UserError("That KOL is not in the training pool.", 404)
            other = _existing_slug(kols, name)
            if other is not None and other != slug:
                raise UserError(f"'{kols[other]['name']}' is already in the pool with that name: "
                                "merge the two KOLs instead of renaming.", 409)
            kols[slug]["name"] = name
            kols[slug]["renamed"] = _now()
            atomic_write_json(self.manifest_path, data)
        return name

    def merge(self, source, target):
        """Move every chip of KOL ``source`` into KOL ``target`` and delete ``source``.

        Chips the target already has are not doubled. The target keeps its name; a model
        trained before the merge that answers ``source`` is shown with the target's name
        (:meth:`display_names`). The merge is recorded (:meth:`merges`) so that :meth:`unmerge` can
        undo it. One atomic manifest write under the pool lock: a crash leaves the pool before or
        after the merge. Returns ``(target name, chips moved)``.
        """
        source, target = str(source), str(target)
        if source == target:
            raise UserError("Choose two different KOLs to merge.", 400)
        with locked(self.lock_path):
            data = read_json(self.manifest_path, default={}) or {}
            kols = data.get("kols") or {}
            if source not in kols or target not in kols:
                raise UserError("That KOL is not in the training pool.", 404)
            before = json_copy(data)
            into = kols[target]
            seen = set(into["chips"])
            moved = 0
            try:
                for cid in kols[source]["chips"]:
                    if cid in seen:
                        continue
                    _copy_chip(self.root / source / f"{cid}.png", self.root / target / f"{cid}.png")
                    into["chips"].append(cid)
                    seen.add(cid)
                    moved += 1
                at = _now()  # one time for the KOL's change, the record and its id
                into["updated"] = at
                gone = kols.pop(source)
                aliases = data.setdefault("aliases", {})
                pointed = sorted(old for old, new in aliases.items() if new == source)
                for old in pointed:
                    aliases[old] = target
                aliases[source] = target
                data.setdefault("merges", []).append({
                    "id": merge_id(source, target, at), "at": at, "source": source, "name": gone["name"],
                    "added": gone.get("added"), "target": target, "into": into["name"],
                    "chips": [c for c in gone["chips"] if c not in before["kols"][target]["chips"]],
                    "aliases": pointed})
                atomic_write_json(self.manifest_path, data)
            except BaseException:
                self._sweep(before)
                raise
            self._sweep(data)
        return into["name"], moved

    def merges(self, target=None, undone=False):
        """The merge records, newest first (only those into ``target`` when given; the undone ones
        too with ``undone=True``): ``[{"id", "at", "source" (slug), "name" (its display name then),
        "target" (slug), "into" (its display name then), "chips" (the chip ids that moved),
        "aliases", "undone" (iso time, once undone)}]``."""
        data = read_json(self.manifest_path, default={}) or {}
        rows = [m for m in data.get("merges") or [] if (target is None or m["target"] == target)
                and (undone or not m.get("undone"))]
        return rows[::-1]

    def merged_into(self):
        """``{source slug: target slug}``: where each KOL that was ever merged went, by its newest merge
        (undone ones included: a model trained before the undo may still lack the source)."""
        return {m["source"]: m["target"] for m in reversed(self.merges(undone=True))}

    def unmerge(self, mid):
        """Undo the merge ``mid`` (see :meth:`merges`): the merged KOL comes back under its slug and
        name with the photos that moved (those the target still has), which leave the target.

        One atomic manifest write under the pool lock; the record is kept, marked ``undone``.
        Raises :class:`UserError` 404 for an unknown or already undone merge, 409 when the target
        KOL was deleted since, another KOL now has the merged KOL's name, none of the moved photos is
        left, or the target would be left without photos. Returns the record.
        """
        with locked(self.lock_path):
            data = read_json(self.manifest_path, default={}) or {}
            kols = data.setdefault("kols", {})
            record = next((m for m in data.get("merges") or [] if m["id"] == str(mid) and not m.get("undone")), None)
            if record is None:
                raise UserError("There is no such merge to undo (it may have been undone already).", 404)
            source, target = record["source"], record["target"]
            if target not in kols:
                raise UserError(f"{record['into']} was deleted since the merge, so it cannot be undone.", 409)
            other = _existing_slug(kols, record["name"])
            if source in kols or other is not None:
                raise UserError(f"'{record['name']}' is in the pool again, so the merge cannot be undone: "
                                "merge or rename that KOL first.", 409)
            into = kols[target]
            back = [c for c in record["chips"] if c in into["chips"]]
            if not back:
                raise UserError(f"None of the photos that came from {record['name']} is left in "
                                f"{into['name']}, so there is nothing to move back.", 409)
            if len(back) == len(into["chips"]):
                raise UserError(f"{into['name']} would be left without photos: delete it instead.", 409)
            before = json_copy(data)
            try:
                for cid in back:
                    dst = self.root / source / f"{cid}.png"
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    _copy_chip(self.root / target / f"{cid}.png", dst)
                went_back = set(back)
                into["chips"] = [c for c in into["chips"] if c not in went_back]
                into["updated"] = _now()
                kols[source] = {"name": record["name"], "chips": back, "updated": _now(),
                                "added": record.get("added") or _now()}
                aliases = data.setdefault("aliases", {})
                aliases.pop(source, None)
                for old in record.get("aliases") or []:
                    if aliases.get(old) == target:
                        aliases[old] = source
                record["undone"] = _now()
                record["moved_back"] = back
                atomic_write_json(self.manifest_path, data)
            except BaseException:
                self._sweep(before)
                raise
            self._sweep(data)
        return dict(record)

    def remove_chip(self, slug, cid):
        """Take one chip (a bad photo) out of the KOL ``slug``; its files are deleted.

        Refuses (409) to remove a KOL's last chip: delete the KOL instead.
        Returns the number of chips the KOL has left.
        """
        self.chip_path(slug, cid)  # 404 for malformed or unknown ids
        with locked(self.lock_path):
            data = read_json(self.manifest_path, default={}) or {}
            info = (data.get("kols") or {}).get(slug)
            if not info or cid not in info["chips"]:
                raise UserError("No such photo in the training pool.", 404)
            if len(info["chips"]) == 1:
                raise UserError("This is the KOL's only photo: delete the KOL instead.", 409)
            info["chips"].remove(cid)
            info["updated"] = _now()
            atomic_write_json(self.manifest_path, data)
            self._sweep(data)
        return len(info["chips"])

    def kol_embeddings(self, slug):
        """``(chip ids, X)`` of one KOL: ``X`` is ``(n, 128)`` ``float64`` in chip order."""
        info = self.kols().get(str(slug)) or {"chips": []}
        X = [chip_embedding(self.root / slug / f"{cid}.png") for cid in info["chips"]]
        return list(info["chips"]), np.array(X, dtype=np.float64).reshape(-1, engine.EMBEDDING_SIZE)

    def needs_training(self, meta):
        """True when the pool changed since the model with metadata ``meta`` was trained
        (KOLs or photos added, removed or merged); a rename alone does not count.
        ``False`` for an empty pool; ``True`` for a non-empty pool with no model."""
        kols = self.kols()
        if not kols:
            return False
        if not meta:
            return True
        if set(kols) != set((meta.get("names") or {}).keys()):
            return True
        if sum(len(i["chips"]) for i in kols.values()) != meta.get("samples"):
            return True
        created = meta.get("created") or ""
        return any((i.get("updated") or "") > created for i in kols.values())


def merge_id(source, target, at):
    """The id of a merge record: 12 hex digits from the two slugs and the time."""
    return hashlib.sha1(f"{source}>{target}@{at}".encode()).hexdigest()[:12]


def json_copy(data):
    """A deep copy of a JSON-ready value."""
    return json.loads(json.dumps(data))


def name_key(name):
    """The comparison key of a KOL name: two names with the same key are the same KOL.

    Case, accents, spaces, underscores, dashes and dots are ignored:
    ``name_key("Mindy Kaling") == name_key("mindy_kaling") == name_key("Mindy  KALING")`` and
    ``name_key("Beyoncé") == name_key("beyonce")``. Other scripts are kept as they are
    (:func:`shared.core.names.name_key`, the rule user and token names follow too).
    """
    return names.name_key(display_name(name))


def _existing_slug(kols, name):
    """The slug in ``kols`` (manifest dict) whose name has the same :func:`name_key` as
    ``name`` (an exact display-name match first), else ``None``."""
    for slug, info in kols.items():
        if info.get("name") == name:
            return slug
    key = name_key(name)
    return next((slug for slug, info in kols.items() if name_key(info.get("name", "")) == key), None)
