"""The inbox of recurring unknown people: unknown faces of the library grouped, incrementally, into
persistent people ("unknown #12") that keep their number as new media arrives.

Input (:meth:`Inbox.add_faces`): faces as ``(face id, embedding, chip, source)``: a face id (text,
:data:`FACE_ID_RE`), a dlib embedding ``(128,)`` (any float dtype), a small face crop (JPEG or PNG
bytes, or the path of such a file; ``None`` for none) and where the face was seen
``{"media": media id, "name": media name, "t": seconds into a video | "photo": photo index,
"box": [top, right, bottom, left] in the media's pixels (optional)}``.

The join rule (:func:`assign`), in dlib's Euclidean distance: a new face joins the group whose
average distance to the face (average link over all its members) is smallest, when that average is
at most ``join`` (:data:`JOIN_DISTANCE`), for a group of one face at most ``single``
(:data:`SINGLE_DISTANCE`, stricter: one photo is a weak picture of a person), and at most ``ratio``
(:data:`CLEAR_RATIO`) times the average distance to the next nearest group (the face is clearly
nearer that group than any other); otherwise it starts a new group. A face within the bar of two
groups never merges them: it joins the nearer one when that one is clearly nearer (else neither), and
the pair is proposed as "maybe the same person" (:meth:`Inbox.proposals`) until a person merges
them or says they are two people. Faces of one call are taken one by one in the order given, each
seeing the groups as the earlier ones left them.

Groups keep their number for ever: numbers count up from 1 (``next``) and are never reused, not
even after a merge or after a group emptied by a forget disappears. A group is ``open`` (in the
inbox), ``naming`` (open, a training job made from its faces is being cleaned and imported: it
leaves the inbox when that import lands, :meth:`Inbox.settle_naming`), ``named`` or ``dismissed``.
Named and dismissed groups still take part in the join rule, as sinks: a new face of a dismissed
person joins the dismissed group silently (it never shows up as a new unknown, and never groups with
an open group), and a face of a named person joins the named group; neither is ever proposed.

Stored under ``DATA_DIR/library/unknowns/`` (:data:`FOLDER`), every write atomic
(:mod:`shared.core.storage`) under one cross-process lock (``.lock``): ``inbox.npz`` holds
``state`` (the JSON record below as UTF-8 bytes, ``uint8``) and ``embeddings`` ``(N, 128)``
``float32`` (row i is ``faces[i]``), in one file so that the two never disagree; ``chips/<face id>.jpg``
or ``.png`` the faces' crops. Each process keeps the last file it read and reads it again only when
it changed (:func:`shared.core.storage.file_identity`).

The record: ``{"next": next group number, "faces": [{"id", "group": number, "source": {...},
"chip": file name or null, "added": UTC ISO time}] (in the order they were added),
"groups": {"<number>": {"number", "state", "faces": [face ids, in the order they joined],
"created", "active" (UTC ISO: when a face last joined), "name": null | the KOL name it was named,
"job": null | the training job making it a KOL}}, "proposals": [{"a": number, "b": number (a < b),
"faces": [the face ids that bridged them]}], "apart": [[a, b]] (pairs a person said are two people)}``.
"""
import copy
import io
import json
import re
import threading
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from shared.core.errors import UserError
from shared.core.storage import atomic_write, atomic_write_bytes, file_identity, locked, read_arrays

#: The inbox's folder under DATA_DIR.
FOLDER = ("library", "unknowns")
#: The rule's bars (dlib units), chosen by bench/bench_unknowns.py, cross-fitted (2026-12-03): a face joins
#: the group whose average distance to it is smallest when that is at most JOIN_DISTANCE (SINGLE_DISTANCE
#: for a group of one face: one photo is a weak picture of a person) and at most CLEAR_RATIO times the
#: average distance to the next nearest group. The ratio is what lets one rule serve both populations:
#: East Asian faces sit closer together in dlib's space (median distance between two asian_dev people 0.53,
#: lfw_dev 0.82), where a plain bar fitted on lfw_dev (0.52) mixes people in 42 % of asian_dev's groups; a
#: face among close strangers has a close runner-up, and the ratio keeps it out. Fitted on asian_dev, reported
#: on lfw_dev (and on the other half of each population's people): see the README's numbers.
JOIN_DISTANCE = 0.50
SINGLE_DISTANCE = 0.46
CLEAR_RATIO = 0.90
#: A face id: what the library gives (also a file name here, so nothing else).
FACE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Chips larger than this are refused (a face crop is a few kilobytes).
MAX_CHIP_BYTES = 2 * 1024 * 1024
#: The states of a group; the inbox shows the first two.
STATES = ("open", "naming", "named", "dismissed")
SHOWN = ("open", "naming")
SINKS = ("named", "dismissed")
EMBEDDING_SIZE = 128

_cache = {}
_cache_lock = threading.Lock()


def now_iso():
    """The current UTC time as ISO 8601 text, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _empty():
    return {"next": 1, "faces": [], "groups": {}, "proposals": [], "apart": []}


# -- the join rule (pure) ---------------------------------------------------------------------------
def assign(X, labels, E, join=JOIN_DISTANCE, single=SINGLE_DISTANCE, ratio=CLEAR_RATIO, next_label=None):
    """Where each new face goes, one after the other (the rule of the module's docstring).

    X: ``(N, 128)`` embeddings of the faces already grouped; labels: ``(N,)`` ints, each one's group;
    E: ``(M, 128)`` the new faces in order; join, single, ratio: the rule's bars; next_label: the label of
    the first new group (default: one more than the largest).
    Returns ``(labels of the M new faces, [(face index in E, label a, label b)])``: the second list has a
    row for every new face within the bar of two groups or more (the nearest two): the "maybe the same
    person" proposals.
    """
    X = np.asarray(X, dtype=np.float64).reshape(-1, EMBEDDING_SIZE)
    E = np.asarray(E, dtype=np.float64).reshape(-1, EMBEDDING_SIZE)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    nxt = int(labels.max()) + 1 if next_label is None and len(labels) else (next_label or 1)
    allX = np.vstack([X, E])
    all_labels = np.concatenate([labels, np.full(len(E), -1, dtype=np.int64)])
    out, bridges = [], []
    for m in range(len(E)):
        n = len(X) + m
        chosen, pair = _nearest_groups(allX[:n], all_labels[:n], allX[n], join, single, ratio)
        if chosen is None:
            chosen = nxt
            nxt += 1
        if pair is not None:
            bridges.append((m, *pair))
        all_labels[n] = chosen
        out.append(chosen)
    return out, bridges


def _nearest_groups(X, labels, e, join, single, ratio):
    """``(the group e joins or None, the two nearest groups when both are within the bar or None)``.

    e joins the nearest group within the bar when that group's average distance is at most ``ratio`` times
    the next nearest group's (whether or not that one is within the bar): clearly nearer than any other."""
    if not len(X):
        return None, None
    uniq, idx = np.unique(labels, return_inverse=True)
    d = np.sqrt(((X - e) ** 2).sum(axis=1))
    counts = np.bincount(idx)
    avg = np.bincount(idx, weights=d) / counts
    ok = (avg <= join) & ((counts > 1) | (avg <= single))
    order = [int(i) for i in np.argsort(avg) if ok[i]]
    if not order:
        return None, None
    first = order[0]
    pair = (int(uniq[first]), int(uniq[order[1]])) if len(order) > 1 else None
    runner_up = np.delete(avg, first).min() if len(avg) > 1 else np.inf
    return (int(uniq[first]) if avg[first] <= ratio * runner_up else None), pair


# -- the store --------------------------------------------------------------------------------------
class Inbox:
    """The unknown people of the data folder ``data_dir`` (``DATA_DIR/library/unknowns/``).

    join / single / ratio: the rule's bars (:data:`JOIN_DISTANCE`, :data:`SINGLE_DISTANCE`, :data:`CLEAR_RATIO`).
    Methods that change something return the group(s) changed, as :meth:`group` shows them; a bad
    number or face id is a :class:`UserError` (404 / 400) and changes nothing.
    """

    def __init__(self, data_dir, join=JOIN_DISTANCE, single=SINGLE_DISTANCE, ratio=CLEAR_RATIO):
        self.root = Path(data_dir).joinpath(*FOLDER)
        self.path = self.root / "inbox.npz"
        self.chips = self.root / "chips"
        self.join, self.single, self.ratio = join, single, ratio

    # -- reading ---------------------------------------------------------------
    def _read(self):
        """``(record, embeddings (N, 128) float32)`` as stored now; the process's copy when the file is unchanged.
        Callers must not change what they get (:meth:`_change` works on a copy)."""
        identity = file_identity(self.path)
        key = str(self.path)
        with _cache_lock:
            hit = _cache.get(key)
            if hit and hit[0] == identity:
                return hit[1], hit[2]
        if identity is None:
            state, X = _empty(), np.zeros((0, EMBEDDING_SIZE), dtype=np.float32)
        else:
            arrays = read_arrays(self.path)
            state = json.loads(arrays["state"].tobytes().decode("utf-8"))
            X = arrays["embeddings"].astype(np.float32).reshape(-1, EMBEDDING_SIZE)
        with _cache_lock:
            _cache[key] = (identity, state, X)
        return state, X

    def _write(self, state, X):
        self.root.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, state=np.frombuffer(json.dumps(state, ensure_ascii=False).encode("utf-8"), dtype=np.uint8),
                 embeddings=np.asarray(X, dtype=np.float32).reshape(-1, EMBEDDING_SIZE))
        atomic_write(self.path, lambda fh: fh.write(buf.getvalue()), suffix=".npz")

    def _change(self, change):
        """Run ``change(state, X) -> (result, X)`` on a copy of the stored inbox under the lock, then store it."""
        self.root.mkdir(parents=True, exist_ok=True)
        with locked(self.root / ".lock"):
            state, X = self._read()
            state = copy.deepcopy(state)
            result, X = change(state, X)
            self._write(state, X)
            with _cache_lock:  # what this process just wrote is the file now (no other writer holds the lock)
                _cache[str(self.path)] = (file_identity(self.path), state, np.asarray(X, dtype=np.float32))
            return result

    def groups(self, states=SHOWN):
        """The groups in ``states``, as :meth:`group` shows them without faces' embeddings: newest active first
        (a face joining makes a group active), then the higher number first."""
        state, _ = self._read()
        faces = {f["id"]: f for f in state["faces"]}
        chosen = [g for g in state["groups"].values() if g["state"] in states]
        chosen.sort(key=lambda g: (g["active"], g["number"]), reverse=True)
        return [_public(g, faces) for g in chosen]

    def count(self):
        """How many groups the inbox shows (open or being named)."""
        state, _ = self._read()
        return sum(1 for g in state["groups"].values() if g["state"] in SHOWN)

    def group(self, number):
        """One group: ``{"number", "label" ("unknown #12"), "state", "name", "job", "created", "active",
        "appearances": faces, "media": [{"media", "name", "times": [s], "photos": [i]}] (in order of first
        appearance), "faces": [{"id", "source", "chip" (bool), "added"}] (in the order they joined)}``. 404 when
        there is no such group."""
        state, _ = self._read()
        g = _find(state, number)
        return _public(g, {f["id"]: f for f in state["faces"]})

    def face_ids(self):
        """The ids of every face the inbox holds, in the order they were added."""
        return [f["id"] for f in self._read()[0]["faces"]]

    def chip_path(self, number, face_id):
        """The crop of a face of a group (a path under the chips folder); 404 for a face not in that group or without one."""
        state, _ = self._read()
        g = _find(state, number)
        face = next((f for f in state["faces"] if f["id"] == face_id), None) if face_id in g["faces"] else None
        if face is None or not face.get("chip") or not (self.chips / face["chip"]).is_file():
            raise UserError("This unknown person has no such face.", 404)
        return self.chips / face["chip"]

    def proposals(self):
        """``[{"a", "b", "faces": n}]``: pairs of open groups some face was close to both of, most bridging faces first."""
        state, _ = self._read()
        rows = [{"a": p["a"], "b": p["b"], "faces": len(p["faces"])} for p in state["proposals"]]
        return sorted(rows, key=lambda p: (-p["faces"], p["a"], p["b"]))

    def labels(self):
        """``(face ids, group numbers)`` of every face, in the order added (for measuring the grouping)."""
        state, _ = self._read()
        return [f["id"] for f in state["faces"]], [f["group"] for f in state["faces"]]

    # -- adding ----------------------------------------------------------------
    def add_faces(self, faces):
        """Add unknown faces ``[(face id, embedding, chip, source)]`` (see the module's docstring), each joining a
        group by the rule or starting one. A face id already in the inbox (or twice in ``faces``) is left as it is.
        Returns ``{"added": n, "groups": {face id: group number}, "new_groups": [numbers], "proposals": n}``.
        Raises ``ValueError`` for a malformed face (a wrong id, embedding or source) before anything is stored.
        """
        checked = [_checked_face(face) for face in faces]
        for fid, _, chip, _ in checked:  # crops first: a crash leaves a crop no record names, never the reverse
            if chip is not None:
                self._save_chip(fid, chip)

        def change(state, X):
            known = {f["id"] for f in state["faces"]}
            new = []
            for face in checked:
                if face[0] not in known:
                    known.add(face[0])
                    new.append(face)
            if not new:
                return {"added": 0, "groups": {}, "new_groups": [], "proposals": 0}, X
            labels = [f["group"] for f in state["faces"]]
            E = np.array([f[1] for f in new], dtype=np.float64)
            chosen, bridges = assign(X, labels, E, self.join, self.single, self.ratio,
                                     next_label=state["next"])
            at, new_groups = now_iso(), []
            for (fid, _, chip, source), number in zip(new, chosen):
                key = str(number)
                if key not in state["groups"]:
                    state["groups"][key] = {"number": number, "state": "open", "faces": [], "created": at,
                                            "active": at, "name": None, "job": None}
                    state["next"] = number + 1
                    new_groups.append(number)
                g = state["groups"][key]
                g["faces"].append(fid)
                g["active"] = at
                state["faces"].append({"id": fid, "group": number, "source": source,
                                       "chip": self._chip_name(fid, chip), "added": at})
            proposed = sum(_propose(state, a, b, new[m][0]) for m, a, b in bridges)
            X = np.vstack([X, E.astype(np.float32)])
            return {"added": len(new), "groups": {f[0]: n for f, n in zip(new, chosen)},
                    "new_groups": new_groups, "proposals": proposed}, X
        return self._change(change)

    def _chip_name(self, fid, chip):
        if chip is None:
            return None
        return f"{fid}{_chip_suffix(chip)}"

    def _save_chip(self, fid, chip):
        self.chips.mkdir(parents=True, exist_ok=True)
        target = self.chips / f"{fid}{_chip_suffix(chip)}"
        if not target.exists():
            atomic_write_bytes(target, chip)

    # -- a person's changes ----------------------------------------------------
    def merge(self, source, target):
        """Put every face of group ``source`` into group ``target`` (which keeps its number; ``source``'s is retired).
        400 for a group merged with itself; 404 for a number that is not an open group. Returns ``target``'s view."""
        def change(state, X):
            src, dst = _find(state, source, SHOWN), _find(state, target, SHOWN)
            if src is dst:
                raise UserError("A group cannot be merged with itself: pick another unknown person.", 400)
            for fid in src["faces"]:
                _face(state, fid)["group"] = dst["number"]
            dst["faces"].extend(src["faces"])
            dst["active"] = max(dst["active"], src["active"])
            _drop_group(state, src["number"])
            return dst["number"], X
        number = self._change(change)
        return self.group(number)

    def split(self, number, face_ids):
        """Move the faces ``face_ids`` of group ``number`` into a new group (a new number). 400 for a face not in
        the group, for none, or for all of its faces. Returns the new group's view."""
        picked = list(dict.fromkeys(face_ids))

        def change(state, X):
            g = _find(state, number, SHOWN)
            if not picked:
                raise UserError("Pick the faces to split out of this group first.", 400)
            stray = [f for f in picked if f not in g["faces"]]
            if stray:
                raise UserError(f"'{str(stray[0])[:64]}' is not a face of unknown #{g['number']}.", 400)
            if len(picked) == len(g["faces"]):
                raise UserError("Splitting out every face would leave the group empty: leave at least one.", 400)
            new = {"number": state["next"], "state": "open", "faces": picked, "created": now_iso(),
                   "active": g["active"], "name": None, "job": None}
            state["next"] += 1
            state["groups"][str(new["number"])] = new
            g["faces"] = [f for f in g["faces"] if f not in set(picked)]
            for fid in picked:
                _face(state, fid)["group"] = new["number"]
            _mark_apart(state, g["number"], new["number"])
            return new["number"], X
        return self.group(self._change(change))

    def dismiss(self, number):
        """Dismiss a group: it leaves the inbox, and its look keeps new faces of the same person out of it too
        (they join the dismissed group). 404 for a number that is not in the inbox."""
        def change(state, X):
            g = _find(state, number, SHOWN)
            g["state"] = "dismissed"
            _drop_proposals(state, g["number"])
            return g["number"], X
        return self.group(self._change(change))

    def apart(self, a, b):
        """Say that groups ``a`` and ``b`` are two people: their proposal goes and is never made again."""
        def change(state, X):
            ga, gb = _find(state, a, SHOWN), _find(state, b, SHOWN)
            if ga is gb:
                raise UserError("Pick two different unknown people.", 400)
            _mark_apart(state, ga["number"], gb["number"])
            return None, X
        self._change(change)

    def name(self, number):
        """The faces to enrol when group ``number`` is named: ``[(face id, embedding (128,) float32, chip path or None, source)]``
        in the order they joined. Nothing changes until :meth:`start_naming`. 404 for a group not in the inbox."""
        state, X = self._read()
        g = _find(state, number, SHOWN)
        rows = {f["id"]: i for i, f in enumerate(state["faces"])}
        out = []
        for fid in g["faces"]:
            face = state["faces"][rows[fid]]
            chip = self.chips / face["chip"] if face.get("chip") else None
            out.append((fid, X[rows[fid]].copy(), chip, face["source"]))
        return out

    def start_naming(self, number, name, job):
        """Record that group ``number`` is being made the KOL ``name`` by training job ``job`` (state ``naming``)."""
        def change(state, X):
            g = _find(state, number, SHOWN)
            g.update(state="naming", name=name, job=job)
            return g["number"], X
        return self.group(self._change(change))

    def settle_naming(self, imported):
        """Mark named the groups whose job's import has landed: ``imported(job id) -> list of KOL names imported``
        (``None`` while the import has not run; raises nothing for a job gone). A group whose job is gone or
        whose import left its name out goes back to ``open``. Returns the numbers marked named."""
        state, _ = self._read()
        waiting = [g for g in state["groups"].values() if g["state"] == "naming"]
        if not waiting:
            return []
        verdicts = {g["number"]: imported(g["job"]) for g in waiting}
        if all(v is None for v in verdicts.values()):
            return []

        def change(state, X):
            done = []
            for number, names in verdicts.items():
                g = state["groups"].get(str(number))
                if g is None or g["state"] != "naming" or names is None:
                    continue
                if g["name"] in names:
                    g["state"] = "named"
                    _drop_proposals(state, number)
                    done.append(number)
                else:
                    g.update(state="open", name=None, job=None)
            return done, X
        return self._change(change)

    def forget_faces(self, face_ids):
        """Remove faces (by id) from the inbox and their crops; a group left empty disappears (its number is not
        reused). Unknown ids are ignored. Returns how many faces were removed."""
        wanted = set(face_ids)
        return self._forget(lambda f: f["id"] in wanted)

    def forget_media(self, media_id):
        """Remove every face seen in the media ``media_id`` (as :meth:`forget_faces`). Returns how many."""
        return self._forget(lambda f: f["source"].get("media") == media_id)

    def _forget(self, chosen):
        def change(state, X):
            keep = [i for i, f in enumerate(state["faces"]) if not chosen(f)]
            gone = [f for f in state["faces"] if chosen(f)]
            for f in gone:
                g = state["groups"].get(str(f["group"]))
                if g is not None:
                    g["faces"].remove(f["id"])
                    if not g["faces"]:
                        _drop_group(state, g["number"])
                for p in state["proposals"]:
                    if f["id"] in p["faces"]:
                        p["faces"].remove(f["id"])
                state["proposals"] = [p for p in state["proposals"] if p["faces"]]
            state["faces"] = [state["faces"][i] for i in keep]
            return gone, X[keep]
        gone = self._change(change)
        for f in gone:
            if f.get("chip"):
                (self.chips / f["chip"]).unlink(missing_ok=True)
        return len(gone)


# -- helpers on the record --------------------------------------------------------------------------
def _checked_face(face):
    """``(id, embedding (128,) float64, chip bytes or None, source dict)`` of one input face; ``ValueError`` when malformed."""
    fid, embedding, chip, source = face
    if not isinstance(fid, str) or not FACE_ID_RE.match(fid):
        raise ValueError(f"face id {str(fid)[:70]!r} does not match {FACE_ID_RE.pattern}")
    e = np.asarray(embedding, dtype=np.float64).reshape(-1)
    if e.shape != (EMBEDDING_SIZE,) or not np.isfinite(e).all():
        raise ValueError(f"face {fid}: an embedding is {EMBEDDING_SIZE} finite numbers")
    if not isinstance(source, dict) or "media" not in source:
        raise ValueError(f"face {fid}: the source needs at least its 'media' id")
    source = {k: source[k] for k in ("media", "name", "t", "photo", "box") if k in source}
    if isinstance(chip, (str, Path)):
        chip = Path(chip).read_bytes()
    if chip is not None and (not isinstance(chip, bytes) or not _chip_suffix(chip) or len(chip) > MAX_CHIP_BYTES):
        raise ValueError(f"face {fid}: a chip is JPEG or PNG bytes of at most {MAX_CHIP_BYTES} bytes")
    return fid, e, chip, source


def _chip_suffix(data):
    """``".jpg"`` or ``".png"`` from the bytes' signature, ``""`` for anything else."""
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    return ""


def _find(state, number, states=STATES):
    """The group record ``number`` (an int or its digits) in one of ``states``; 404 otherwise."""
    g = state["groups"].get(str(number)) if re.fullmatch(r"[0-9]{1,9}", str(number)) else None
    if g is None or g["state"] not in states:
        raise UserError("There is no such unknown person in the inbox (it may have been merged, named or dismissed).",
                        404)
    return g


def _face(state, fid):
    return next(f for f in state["faces"] if f["id"] == fid)


def _drop_group(state, number):
    state["groups"].pop(str(number), None)
    _drop_proposals(state, number)


def _drop_proposals(state, number):
    state["proposals"] = [p for p in state["proposals"] if number not in (p["a"], p["b"])]


def _mark_apart(state, a, b):
    pair = sorted((a, b))
    if pair not in state["apart"]:
        state["apart"].append(pair)
    state["proposals"] = [p for p in state["proposals"] if [p["a"], p["b"]] != pair]


def _propose(state, a, b, fid):
    """Record face ``fid`` as bridging groups ``a`` and ``b`` (both open, not said to be apart); 1 when recorded."""
    ga, gb = state["groups"].get(str(a)), state["groups"].get(str(b))
    pair = sorted((a, b))
    if not ga or not gb or ga["state"] in SINKS or gb["state"] in SINKS or pair in state["apart"]:
        return 0
    row = next((p for p in state["proposals"] if [p["a"], p["b"]] == pair), None)
    if row is None:
        row = {"a": pair[0], "b": pair[1], "faces": []}
        state["proposals"].append(row)
    row["faces"].append(fid)
    return 1


def _public(g, faces):
    """A group as pages and scripts see it (see :meth:`Inbox.group`)."""
    media = {}
    for fid in g["faces"]:
        src = faces[fid]["source"]
        entry = media.setdefault(src["media"], {"media": src["media"], "name": src.get("name") or src["media"],
                                                "times": [], "photos": []})
        if "t" in src:
            entry["times"].append(src["t"])
        if "photo" in src:
            entry["photos"].append(src["photo"])
    return {"number": g["number"], "label": f"unknown #{g['number']}", "state": g["state"], "name": g["name"],
            "job": g["job"], "created": g["created"], "active": g["active"], "appearances": len(g["faces"]),
            "media": list(media.values()),
            "faces": [{"id": fid, "source": faces[fid]["source"], "chip": bool(faces[fid].get("chip")),
                       "added": faces[fid]["added"]} for fid in g["faces"]]}
