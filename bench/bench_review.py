"""The review queue's simulated reviewer (issue 23, item 6): do the answers help the faces nobody reviewed?

    .venv/bin/python bench/bench_review.py             # lfw_dev and asian_dev, 3 draws each (~2 min once cached)
    .venv/bin/python bench/bench_review.py --compare   # also other veto rules on the held-out half (~4 min)

Data: ``../shared/data/faces/lfw_dev`` (people with >= 10 photos are the KOLs, everyone else a stranger)
and ``../shared/data/faces/asian_dev`` (its ``PEOPLE.tsv`` says who is a KOL and who a stranger); each
photo's face is the one nearest its centre, embedded once and cached by file hash under
``bench/out/lfw_cache/`` (:mod:`lfw_cache`'s cache and code, for both folders).

Protocol, per population and draw (seed): each KOL is enrolled with 5 photos drawn at random
(:func:`shared.recognition.model.train`, the shipped rule); every other photo is a test, one photo at a
time, as ``/predictSingleImage`` answers it. The answers below "sure" (< 0.9) go to the queue, and a
simulated reviewer answers, per KOL (the candidate the model named or came nearest to), the 20 least sure
of them from the truth, as the review page offers it:

- the face is that KOL: "this is X", added to X's photos (the pool then retrained: centroids only);
- the face is another KOL: "this is not X" (a negative of X);
- the face is a stranger: "nobody we know" (a negative of each of its 3 candidates, as the app stores it).

Reported on the faces NOT reviewed (the same faces before and after): KOL photos named right, stranger
photos answered "unknown", and the answers shown as sure (>= 0.9) that were right; "after" is the
retrained model with the negatives (:func:`shared.recognition.review.veto` in
:meth:`~shared.recognition.model.Model.predict`), "negatives only" the unchanged model with the
negatives (what a "not" answer does before anyone retrains). A second protocol holds half of each
person's test photos out of the queue altogether (never predicted before the review), so the effect
on faces the reviewer never saw is measured apart from the queue's own leftovers.

Nothing is fitted here: the veto has no constant. The shipped rule (:data:`shared.recognition.rule.RULE`,
:data:`~shared.recognition.rule.REACH`, :data:`~shared.recognition.rule.DOUBT`) was fitted on all of lfw_dev and
asian_dev, so the shares before are optimistic on both; what is measured is the change the reviewer makes.
"""
import argparse
import csv
import multiprocessing
import time

import numpy as np

import lfw_cache
from common import SHARED_DATA
from shared.recognition import review
from shared.recognition.model import train

ASIAN = SHARED_DATA / "faces" / "asian_dev"
SHOTS, PER_KOL, SURE = 5, 20, review.SURE


def population(folder, kols_of):
    """``({person: [embedding]}, set of KOLs)`` of a face folder (one folder per person), cache filled first."""
    photos = [(p.name, f) for p in sorted(x for x in folder.iterdir() if x.is_dir())
              for f in sorted(p.iterdir()) if f.suffix.lower() in (".jpg", ".jpeg", ".png")]
    todo = [str(f) for _, f in photos if not (lfw_cache.CACHE / f"{lfw_cache._key(f)}.npz").exists()]
    if todo:
        lfw_cache.CACHE.mkdir(parents=True, exist_ok=True)
        print(f"embedding {len(todo)} photos of {folder.name} into {lfw_cache.CACHE} ...", flush=True)
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            list(pool.imap_unordered(lfw_cache._compute, todo, chunksize=4))
    faces = {}
    for person, f in photos:
        with np.load(lfw_cache.CACHE / f"{lfw_cache._key(f)}.npz", allow_pickle=False) as z:
            e = lfw_cache.subject((z["boxes"], z["embeddings"], z["shape"]))
        faces.setdefault(person, [])
        if e is not None:
            faces[person].append(e)
    return faces, kols_of(faces)


def lfw_kols(faces):
    return {p for p, e in faces.items() if len(e) >= 10}


def asian_kols(_faces):
    with open(ASIAN / "PEOPLE.tsv", newline="") as fh:
        return {row["person"] for row in csv.DictReader(fh, delimiter="\t") if row["role"] == "kol"}


def draw(faces, kols, seed, hold_out):
    """``(X, slugs, queue_tests, held_tests)``: 5 enrolled photos per KOL; tests ``[(embedding, person, is_kol)]``,
    half of each person's test photos held out of the queue when ``hold_out``."""
    rng = np.random.default_rng(seed)
    X, slugs, tests, held = [], [], [], []
    for person in sorted(faces):
        embs = faces[person]
        order = rng.permutation(len(embs))
        is_kol = person in kols and len(embs) > SHOTS
        if is_kol:
            X += [embs[i] for i in order[:SHOTS]]
            slugs += [person] * SHOTS
            order = order[SHOTS:]
        rest = [(embs[i], person, is_kol) for i in order]
        cut = len(rest) // 2 if hold_out else 0
        held += rest[:cut]
        tests += rest[cut:]
    return np.array(X), slugs, tests, held


def answer(model, e, negatives=None):
    return model.predict(e[None, :], negatives=negatives)[0]


def review_queue(model, tests):
    """The simulated reviewer: ``(reviewed test positions, added (X, slugs), Negatives)``."""
    answers = [answer(model, t[0]) for t in tests]
    per_kol = {}
    for i, a in enumerate(answers):
        if a.confidence < SURE and a.candidate is not None:
            per_kol.setdefault(a.candidate, []).append((a.confidence, i))
    reviewed, add_X, add_slugs, neg_E, neg_slugs = set(), [], [], [], []
    for kol, items in per_kol.items():
        for _, i in sorted(items)[:PER_KOL]:
            e, person, is_kol = tests[i]
            reviewed.add(i)
            if person == kol:
                add_X.append(e)
                add_slugs.append(kol)
            elif is_kol:
                neg_E.append(e)
                neg_slugs.append(kol)
            else:
                for slug, _sim, _d in model.similar(e, review.CANDIDATES):
                    neg_E.append(e)
                    neg_slugs.append(slug)
    negatives = review.Negatives(np.array(neg_E, np.float32).reshape(-1, 128), np.array(neg_slugs, dtype=str),
                                 np.array(["sim"] * len(neg_slugs), dtype=str))
    return reviewed, (add_X, add_slugs), negatives


class Tally:
    def __init__(self):
        self.kol = self.kol_right = self.stranger = self.stranger_unknown = self.sure = self.sure_right = 0

    def add(self, a, person, is_kol):
        right = (a.known and a.slug == person) if is_kol else not a.known
        if is_kol:
            self.kol += 1
            self.kol_right += right
        else:
            self.stranger += 1
            self.stranger_unknown += right
        if a.confidence >= SURE:
            self.sure += 1
            self.sure_right += right

    def line(self, label):
        def pct(k, n):
            return f"{k}/{n} ({100 * k / n:.1f} %)" if n else "-"
        return (f"  {label:<25} KOL named right {pct(self.kol_right, self.kol):<20} strangers unknown "
                f"{pct(self.stranger_unknown, self.stranger):<20} sure answers right {pct(self.sure_right, self.sure)}")


def measure(faces, kols, draws, hold_out):
    """Before / after / negatives only, on the faces not reviewed (and on the held-out half when ``hold_out``)."""
    out = {k: Tally() for k in ("before", "after", "negatives only")}
    counts = {"reviewed": 0, "is": 0, "negatives": 0, "tests": 0}
    for seed in range(draws):
        X, slugs, tests, held = draw(faces, kols, seed, hold_out)
        model = train(X, slugs, {})
        reviewed, (add_X, add_slugs), negatives = review_queue(model, tests)
        after = train(np.vstack([X, np.array(add_X).reshape(-1, 128)]), slugs + add_slugs, {}) if add_X else model
        scored = held if hold_out else [t for i, t in enumerate(tests) if i not in reviewed]
        for e, person, is_kol in scored:
            out["before"].add(answer(model, e), person, is_kol)
            out["after"].add(answer(after, e, negatives), person, is_kol)
            out["negatives only"].add(answer(model, e, negatives), person, is_kol)
        counts["reviewed"] += len(reviewed)
        counts["is"] += len(add_X)
        counts["negatives"] += len(negatives)
        counts["tests"] += len(tests)
    return out, counts


def radius_veto(radius):
    """Another rule, for comparison only: the shipped one with "nearer than k's nearest photo" replaced by
    "within ``radius`` of a 'not k' face" (sure answers still left alone, the same face still dropped)."""
    def veto(E, idx, P, S, dn, classes, negatives):
        return _shipped(E, idx, P, S, np.full(np.shape(dn), radius), classes, negatives)
    return veto


def overturning_veto(E, idx, P, S, dn, classes, negatives):
    """Another rule, for comparison only: the shipped one applied to sure answers too."""
    capped = np.minimum(P, SURE - 1e-6)
    P2, S2 = _shipped(E, idx, capped, S, dn, classes, negatives)
    return np.where((P2 == 0) & (capped > 0), 0.0, P), S2


_shipped = review.veto


def compare_rules(faces, kols, draws):
    """"after" on the held-out half with the shipped rule and with the other rules above."""
    for label, rule in (("shipped rule", _shipped), ("sure ones overturned too", overturning_veto),
                        ("within 0.40 of a 'not'", radius_veto(0.40)), ("within 0.50 of a 'not'", radius_veto(0.50))):
        review.veto = rule
        try:
            out, _ = measure(faces, kols, draws, hold_out=True)
        finally:
            review.veto = _shipped
        print(out["after"].line(label))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--draws", type=int, default=3, help="random enrolments per population")
    parser.add_argument("--compare", action="store_true", help="also the held-out half with fixed-radius rules")
    args = parser.parse_args()
    started = time.perf_counter()
    for name, folder, kols_of in (("lfw_dev", lfw_cache.LFW, lfw_kols), ("asian_dev", ASIAN, asian_kols)):
        faces, kols = population(folder, kols_of)
        n_kol = sum(1 for p in kols if len(faces.get(p, [])) > SHOTS)
        print(f"\n{name}: {sum(map(len, faces.values()))} faces of {len(faces)} people; {n_kol} KOLs enrolled with "
              f"{SHOTS} photos, {len(faces) - n_kol} strangers; {args.draws} draws; the reviewer answers the "
              f"{PER_KOL} least sure queued faces per KOL")
        for hold_out, title in ((False, "faces not reviewed (all test photos went through the queue)"),
                                (True, "held-out half of each person's test photos (never queued)")):
            out, counts = measure(faces, kols, args.draws, hold_out)
            print(f" {title}: {counts['reviewed']} of {counts['tests']} queued test faces reviewed, "
                  f"{counts['is']} added as photos, {counts['negatives']} negatives stored")
            for label, tally in out.items():
                print(tally.line(label))
        if args.compare:
            print(" the held-out half, after, by veto rule:")
            compare_rules(faces, kols, args.draws)
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
