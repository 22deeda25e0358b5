"""The review queue's simulated reviewer (issue 23, item 6): do the answers help the faces nobody reviewed?

    nice .venv/bin/python bench/bench_review.py             # lfw_dev, asian_dev, mixed; 3 splits (~10 min on 2 cores)
    nice .venv/bin/python bench/bench_review.py --compare   # also other veto rules on the held-out half

Data and folds: :mod:`bench_accuracy`'s (``../shared/data/faces/lfw_dev``: people with >= 10 photos are the KOLs;
``asian_dev``: its ``PEOPLE.tsv``; embeddings from ``bench/out/lfw_cache/``). Each population's people are split
into two folds at random (3 splits); each fold is a roster, trained with the shipped rule's procedure fitted on the
*other* fold only and the SVMs' background the other fold's photos (:func:`bench_accuracy.shipped_rules`), so
nothing that answers a face was fitted on its person.

Protocol, per roster: each KOL of the fold is enrolled with 5 photos drawn at random
(:func:`shared.recognition.model.train`); every other photo of the fold is a test, one photo at a time, as
``/predictSingleImage`` answers it. The queue (:data:`QUEUES`: the answers below "sure", as the app queues them, or
those and the sure "unknown"s within the roster's reach of a KOL) is
answered by a simulated reviewer, per KOL (the candidate the model named or came nearest to), the 20 least sure
first, from the truth, as the review page offers it, and the app does with the answers:

- the face is that KOL: "this is X", added to X's photos (one click, admins) and the roster trained again
  (centroids, roster factors and SVMs, as a training of the pool does);
- the face is another KOL: "this is not X" (a negative of X);
- the face is a stranger: "nobody we know" (a negative of each of its 3 candidates, as the app stores it).

Reported on the faces NOT reviewed (the same faces before and after): KOL photos named right, stranger
photos answered "unknown", and the answers shown as sure (>= 0.9) that were right; "after" is the
retrained model with the negatives (:func:`shared.recognition.review.veto` in
:meth:`~shared.recognition.model.Model.predict`), "negatives only" the unchanged model with the
negatives (what a "not" answer does before anyone retrains), "after, negatives in SVMs" (studied, not in the app)
"after" with the faces answered "nobody we know" also in every SVM's background. A second protocol holds half of each
person's test photos out of the queue altogether (never predicted before the review), so the effect
on faces the reviewer never saw is measured apart from the queue's own leftovers.

The veto and the queue have no constant. The confidence's ``REACH`` and ``DOUBT`` are the shipped ones (chosen on all
of both populations by ``bench_accuracy.py --fit``), so "sure right" is slightly optimistic before and after alike.
(Before 2026-12-04 this benchmark trained every roster of a whole population with the shipped rule and the shipped
``background.npy``, which holds these very people's photos as SVM negatives.)
"""
import time

import numpy as np

from bench_accuracy import POPULATIONS, cross_fitted, fold_people, splits_parser, svm_negatives_of
from shared.recognition import review
from shared.recognition.model import train

SHOTS, PER_KOL, SURE = 5, 20, review.SURE
#: The queues compared: what the reviewer is offered. "unsure": the answers below "sure" (the app's queue);
#: "unsure + near": also the "unknown"s shown as sure within the roster's reach of a KOL (:func:`queued`; studied,
#: not in the app: it raised nothing, see README).
QUEUES = ("unsure", "unsure + near")


def draw(faces, kols, people, seed, hold_out):
    """``(X, slugs, queue_tests, held_tests)`` of ``people``: 5 enrolled photos per KOL; tests
    ``[(embedding, person, is_kol)]``, half of each person's test photos held out of the queue when ``hold_out``."""
    rng = np.random.default_rng(seed)
    X, slugs, tests, held = [], [], [], []
    for person in people:
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


def queued(model, e, a, queue):
    """Whether the answer ``a`` for the face ``e`` ``(128,)`` goes to the queue ``queue`` (:data:`QUEUES`): below
    "sure" (the app's queue), or also an "unknown" whose nearest KOL centroid is within the roster's reach
    (:attr:`shared.recognition.model.Model.reach`: as near as this roster's KOLs come to each other's centroids)."""
    if a.candidate is None:
        return False
    if a.confidence < SURE:
        return True
    near = float(np.sqrt(model.sq_distances(e[None, :])[0].min())) <= model.reach
    return queue == "unsure + near" and not a.known and near


def review_queue(model, tests, queue):
    """The simulated reviewer: ``(reviewed test positions, added (X, slugs), Negatives)``."""
    answers = [answer(model, t[0]) for t in tests]
    per_kol = {}
    for i, a in enumerate(answers):
        if queued(model, tests[i][0], a, queue):
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


def measure(faces, kols, splits, rules, pop, hold_out, queue):
    """Before / after / negatives only, on the faces not reviewed (and on the held-out half when ``hold_out``),
    over every split and fold of ``pop`` (each fold's roster trained with the rule ``rules[seed][f]`` and the SVMs'
    background fitted on the other fold, as :mod:`bench_accuracy` measures)."""
    out = {k: Tally() for k in ("before", "after", "negatives only", "after, negatives in SVMs")}
    counts = {"reviewed": 0, "is": 0, "negatives": 0, "tests": 0, "kols": 0}
    for seed in range(len(splits)):
        for f in range(2):
            X, slugs, tests, held = draw(faces, kols, fold_people(splits, seed, f, pop), seed, hold_out)
            bg = svm_negatives_of(faces, splits, seed, f)
            model = train(X, slugs, {}, rule=rules[seed][f], svm_background=bg)
            reviewed, (add_X, add_slugs), negatives = review_queue(model, tests, queue)
            pool = (np.vstack([X, np.array(add_X).reshape(-1, 128)]), slugs + add_slugs)
            after = train(*pool, {}, rule=rules[seed][f], svm_background=bg) if add_X else model
            # studied, not in the app: the faces reviewed "nobody we know" also in every SVM's background
            nobody = np.array([t[0] for i, t in enumerate(tests) if i in reviewed and not t[2]]).reshape(-1, 128)
            svms = train(*pool, {}, rule=rules[seed][f], svm_background=np.vstack([bg, nobody]))
            scored = held if hold_out else [t for i, t in enumerate(tests) if i not in reviewed]
            for e, person, is_kol in scored:
                out["before"].add(answer(model, e), person, is_kol)
                out["after"].add(answer(after, e, negatives), person, is_kol)
                out["negatives only"].add(answer(model, e, negatives), person, is_kol)
                out["after, negatives in SVMs"].add(answer(svms, e, negatives), person, is_kol)
            counts["reviewed"] += len(reviewed)
            counts["is"] += len(add_X)
            counts["negatives"] += len(negatives)
            counts["tests"] += len(tests)
            counts["kols"] += len(set(slugs))
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


def compare_rules(faces, kols, splits, rules, pop):
    """"after" on the held-out half with the shipped rule and with the other rules above (the app's queue)."""
    for label, rule in (("shipped rule", _shipped), ("sure ones overturned too", overturning_veto),
                        ("within 0.40 of a 'not'", radius_veto(0.40)), ("within 0.50 of a 'not'", radius_veto(0.50))):
        review.veto = rule
        try:
            out, _ = measure(faces, kols, splits, rules, pop, hold_out=True, queue=QUEUES[0])
        finally:
            review.veto = _shipped
        print(out["after"].line(label))


def main():
    parser = splits_parser()
    parser.add_argument("--compare", action="store_true", help="also the held-out half with fixed-radius rules")
    args = parser.parse_args()
    started = time.perf_counter()
    faces, kols, _people, splits, rules = cross_fitted(args.splits)
    print(f"{SHOTS} photos per KOL; the reviewer answers the {PER_KOL} least sure queued faces per KOL")
    for pop in POPULATIONS:
        print(f"\n{pop}:")
        for hold_out, title in ((False, "faces not reviewed (all test photos went through the queue)"),
                                (True, "held-out half of each person's test photos (never queued)")):
            for queue in QUEUES:
                out, counts = measure(faces, kols, splits, rules, pop, hold_out, queue)
                print(f" {title}, queue '{queue}': {counts['kols']} rosters' KOLs, {counts['reviewed']} of "
                      f"{counts['tests']} test faces reviewed, {counts['is']} added as photos, "
                      f"{counts['negatives']} negatives stored")
                for label, tally in out.items():
                    print(tally.line(label))
        if args.compare:
            print(" the held-out half, after, by veto rule:")
            compare_rules(faces, kols, splits, rules, pop)
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
