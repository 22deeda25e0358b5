"""The cleaning rule checked against its own mistakes: of the photos it removes, how many were the right person.

    nice .venv/bin/python bench/bench_cleaning.py              # lfw_dev, asian_dev, five_celebs
    nice .venv/bin/python bench/bench_cleaning.py five_celebs  # one set
    nice .venv/bin/python bench/bench_cleaning.py --details    # and each intruder's verdict with its numbers

Each development set is cleaned as one training job (:func:`shared.training.cleaning.clean` on the
app's own align step, :func:`shared.training.sampling.align_job`; the align result is cached under
``bench/out/cleaning/<set>.json``, its chips in a scratch folder):

- ``lfw_dev``: the 44 people with 10 or more photos, one KOL folder each;
- ``asian_dev``: its 20 KOLs (the people with 8 or more photos; the strangers are left out);
- ``five_celebs``: its 5 people.

The truth for a removed face: a photo of the folder's person with ONE face found is that person
(the sets were checked by eye; asian_dev's README warns a few crops may be someone else); in a
photo with several faces, for lfw_dev (whose photos are centred on their person) the face nearest
the centre is the person and the others are not; several faces in the other sets: not scored.
Blur, size and duplicates remove the right person by design (the photo is poor or already there);
for them the count says how much of the folder they take. For the reasons about WHO is in the photo
("looks like another KOL", "unlike the other photos", "none is clearly X"), a removed right person is
a mistake. Photos with no face found are counted apart.

Then the rule's other side: one photo of someone else (:func:`intruders`) put into each KOL folder.

Prints, per set and per reason: faces removed, of those the right person, and the faces judged;
the faces kept with a warning; what became of the intruders. Measured 2026-12-03 (README, Benchmarks).
"""
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import ROOT, SHARED_DATA
from shared.training import cleaning, sampling

FACES = SHARED_DATA / "faces"
SETS = {"lfw_dev": (FACES / "lfw_dev", 10), "asian_dev": (FACES / "asian_dev", 8), "five_celebs": (FACES / "five_celebs", 1)}
OUT = ROOT / "bench" / "out" / "cleaning"
DETAILS = "--details" in sys.argv
PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def job_kols(folder, min_photos):
    """The job's KOL folders: ``[{"name", "files": [{"path": absolute path, "name"}]}]`` for every
    sub-folder of ``folder`` with at least ``min_photos`` photos, sorted by name."""
    kols = []
    for person in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
        files = sorted(f for f in person.iterdir() if f.suffix.lower() in PHOTO_EXTENSIONS)
        if len(files) >= min_photos:
            kols.append({"name": person.name, "files": [{"path": str(f), "name": f.name} for f in files]})
    return kols


def aligned(name):
    """The align step's result for the set ``name`` (computed once, then read from ``bench/out/cleaning``)."""
    cached = OUT / f"{name}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    folder, min_photos = SETS[name]
    kols = job_kols(folder, min_photos)
    print(f"aligning {sum(len(k['files']) for k in kols)} photos of {len(kols)} people in {name} ...", flush=True)
    with tempfile.TemporaryDirectory() as scratch:  # absolute paths: Path(scratch) / path is the photo itself
        result = sampling.align_job(kols, scratch, "image")
    OUT.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(result))
    return result


def truth(name, src, rec):
    """Whether the crop ``rec`` of the photo ``src`` is the folder's person: True, False, or None (not known)."""
    crops = src["crops"]
    if len(crops) == 1:
        return True
    if name != "lfw_dev" or not src.get("width"):
        return None
    centre = np.array([src["height"] / 2, src["width"] / 2])

    def off(r):
        top, right, bottom, left = r["box"]
        return float(np.sum((np.array([(top + bottom) / 2, (left + right) / 2]) - centre) ** 2))
    return rec["crop"] == min(crops, key=off)["crop"]


def tally(name, align, result):
    """``{reason code: [removed, right person, not known]}`` and the number of faces judged."""
    records = {(k, rec["crop"]): (src, rec) for k, kol in enumerate(align["kols"])
               for src in kol["sources"] for rec in src["crops"]}
    rows, judged = {}, 0
    for k, kol in enumerate(result["kols"]):
        judged += len(kol["kept"]) + sum(not item["photo"] for item in kol["removed"])
        for item in kol["removed"]:
            row = rows.setdefault(item["code"], [0, 0, 0])
            row[0] += 1
            if item["photo"]:
                continue
            src, rec = records[(k, item["crop"])]
            right = truth(name, src, rec)
            row[1] += right is True
            row[2] += right is None
    return rows, judged


def kept_wrong(name, align, result):
    """Kept faces that are NOT the folder's person (by :func:`truth`), the kept faces scored, and the
    kept faces with a warning ``[warned, right person]``."""
    records = {(k, rec["crop"]): (src, rec) for k, kol in enumerate(align["kols"])
               for src in kol["sources"] for rec in src["crops"]}
    wrong = scored = 0
    warned = [0, 0]
    for k, kol in enumerate(result["kols"]):
        for item in kol["kept"]:
            right = truth(name, *records[(k, item["crop"])])
            scored += right is not None
            wrong += right is False
            if item.get("warning"):
                warned[0] += 1
                warned[1] += right is True
    return wrong, scored, warned


def intruders(align, within):
    """The rule's other side: one photo of someone else put into each KOL folder. For KOL ``k`` the
    intruder is the first one-face photo of the next KOL ``k + 1`` that cleaning keeps (moved: it leaves
    that KOL's folder); ``within``: that person's folder stays in the job (else it is left out: a
    stranger to the job).
    Returns ``{verdict code, or "warned" / "kept": count}``."""
    base = cleaning.clean(align)
    n = len(align["kols"])
    out = {}
    for k in range(n):
        j = (k + 1) % n
        kept = {item["crop"] for item in base["kols"][j]["kept"]}
        src = next(s for s in align["kols"][j]["sources"] if len(s["crops"]) == 1 and s["crops"][0]["crop"] in kept)
        intruder = dict(src, id="intruder", name="intruder")
        kols = [dict(kol, sources=kol["sources"] + [intruder]) if i == k else
                dict(kol, sources=[s for s in kol["sources"] if s is not src]) if i == j else kol
                for i, kol in enumerate(align["kols"])]
        if not within:
            kols = [kol for i, kol in enumerate(kols) if i != j]
        result = cleaning.clean(dict(align, kols=kols))
        entry = next(kol for kol in result["kols"] if kol["name"] == align["kols"][k]["name"])
        item = next(i for i in entry["kept"] + entry["removed"] if i["source"] == "intruder")
        code = item["code"] if item in entry["removed"] else ("warned" if item.get("warning") else "kept")
        out[code] = out.get(code, 0) + 1
        if DETAILS:
            print("    intruder", code, item["detail"])
    return out


def main(names):
    for name in names:
        align = aligned(name)
        result = cleaning.clean(align)
        rows, judged = tally(name, align, result)
        wrong, scored, warned = kept_wrong(name, align, result)
        print(f"\n{name}: {len(align['kols'])} KOL folders, {judged} faces judged; "
              f"kept {sum(len(k['kept']) for k in result['kols'])}, of them not the person: {wrong} of {scored} scored; "
              f"kept with a warning {warned[0]}, of them the right person {warned[1]}")
        print(f"  {'reason':<16} {'removed':>8} {'right person':>13} {'not scored':>11}")
        for code in sorted(rows, key=lambda c: -rows[c][0]):
            removed, right, unknown = rows[code]
            share = f"{100 * right / max(removed - unknown, 1):5.1f} %" if code not in ("no_face", "unreadable") else "    -  "
            print(f"  {code:<16} {removed:>8} {right:>6} {share} {unknown:>11}")
        for within in (True, False):
            where = "whose own folder is in the job" if within else "not in the job"
            print(f"  a photo of someone else {where}, put into each folder: {intruders(align, within)}")


if __name__ == "__main__":
    main([a for a in sys.argv[1:] if not a.startswith("--")] or list(SETS))
