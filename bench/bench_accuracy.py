"""Open-set identification on lfw_dev: KOL photos named right, strangers answered "unknown".

    .venv/bin/python bench/bench_accuracy.py          # the protocol below (~3 min once the cache is filled)
    .venv/bin/python bench/bench_accuracy.py --fit    # print KOL_ODDS and RULE chosen and fitted on all of lfw_dev

Data: ``../shared/data/faces/lfw_dev`` (2,616 photos of 403 people), embedded once by
``bench/lfw_cache.py`` (cached under ``bench/out/``, keyed by file hash); a photo's face is the
one nearest its centre; photos with no face found are counted apart (listed, not scored).

Protocol:

- the 403 people are split into two folds at random; each fold is measured with the rule
  fitted on the *other* fold only (nothing fitted ever sees the people it is measured on);
  this is done for :data:`SPLITS` different random splits (seeds 0, 1, ...), and the answers
  of all splits are added up (each photo is a test once per split);
- in the measured fold, people with >= 10 photos are KOLs: each is enrolled with ``shots``
  photos (5; also 1, 2, 3) drawn at random, and their other photos are the KOL tests;
- everyone else in the fold (never enrolled) is a stranger: all their photos are stranger tests;
- a harder variant with many KOLs: everyone in the fold with >= 6 photos is a KOL (about 80);
- the rule's development data on the fitting fold: for shots 1, 2, 3 and 5, three random
  draws each, a random half of the people with more than ``shots`` photos are KOLs (so the
  rule sees many KOLs, about 40-100 per draw) and everyone else is a stranger.

Ratios: "KOL named right" = KOL test photos answered with their own KOL / KOL test photos;
"KOL wrong name" = KOL test photos answered with another KOL / KOL test photos;
"strangers unknown" = stranger photos answered "unknown" / stranger photos. 95 % Wilson
intervals, computed with each photo counted once (counts divided by the number of splits).

Baselines in the same run, on the same embeddings and galleries:

- ``face_recognition.compare_faces`` at its 0.6 tolerance on the nearest gallery photo
  (named when the nearest photo matches, else unknown);
- nearest centroid with the single distance threshold chosen *on the test itself* to maximise
  the lower of the two ratios (an upper bound for a one-threshold centroid rule; it looks at the answers);
- closed-set top-1 of a one-vs-rest linear SVM vs the nearest centroid (KOL tests only): does
  an SVM earn a place as the "which KOL" step?
"""
import argparse
import time

import numpy as np

import lfw_cache
from common import ROOT  # noqa: F401  (puts the repository on sys.path)
from shared.recognition.model import train
from shared.recognition.rule import KOL_ODDS, fit_rule

TARGET = 0.98
SHOTS = (5, 1, 2, 3)
SPLITS = 6


def wilson(k, n, z=1.96):
    """95 % Wilson score interval for ``k`` successes out of ``n``: ``(low, high)``."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def fmt(k, n, splits=1):
    lo, hi = wilson(k / splits, n / splits)
    return f"{k:4d}/{n:<4d} {100 * k / max(n, 1):5.1f}% [{100 * lo:5.1f}, {100 * hi:5.1f}]"


def by_person(rows):
    """``{person: [embedding, ...]}`` (photos with a face) and ``{person: photos without one}``."""
    faces, missing = {}, {}
    for person, _name, emb, _n in rows:
        faces.setdefault(person, [])
        missing.setdefault(person, 0)
        if emb is None:
            missing[person] += 1
        else:
            faces[person].append(emb)
    return faces, missing


def folds(people, k=2, seed=0):
    rng = np.random.default_rng(seed)
    order = rng.permutation(sorted(people))
    return [sorted(order[i::k]) for i in range(k)]


def scenario(faces, kols, people, shots, seed):
    """Gallery and tests for ``people``, the ``kols`` among them enrolled with ``shots`` photos each
    (a KOL with no more than ``shots`` photos is a stranger): ``(X, slugs, tests)``,
    tests ``[(embedding, person, is_kol)]``."""
    rng = np.random.default_rng(seed)
    X, slugs, tests = [], [], []
    for person in people:
        embs = faces[person]
        if person in kols and len(embs) > shots:
            pick = set(rng.choice(len(embs), shots, replace=False).tolist())
            for i, e in enumerate(embs):
                if i in pick:
                    X.append(e)
                    slugs.append(person)
                else:
                    tests.append((e, person, True))
        else:
            tests += [(e, person, False) for e in embs]
    return np.array(X), slugs, tests


def dev_data(faces, people, shot_list=(1, 2, 3, 5), draws=3):
    """Features and outcomes for :func:`shared.recognition.rule.fit_rule` on ``people``."""
    F, right, stranger = [], [], []
    for shots in shot_list:
        for draw in range(draws):
            rng = np.random.default_rng(1000 + 10 * shots + draw)
            able = [p for p in people if len(faces[p]) > shots]
            kols = set(rng.choice(able, len(able) // 2, replace=False).tolist())
            X, slugs, tests = scenario(faces, kols, people, shots, seed=1000 + 10 * shots + draw)
            model = train(X, slugs, {})
            best, f = model.describe(np.array([t[0] for t in tests]))
            F.append(f)
            right += [model.classes[b] == t[1] for b, t in zip(best, tests)]
            stranger += [not t[2] for t in tests]
    return np.concatenate(F), np.array(right), np.array(stranger)


ODDS_CHOICES = (1.0, 2.0, 3.0)


def inner_rates(faces, fit_people, test_people, odds_list, seed):
    """For each odds in ``odds_list``: ``(KOL named right, strangers unknown)`` on ``test_people``
    (a random half of those with more than 5 photos enrolled with 5, the rest strangers) with the
    rule fitted on ``fit_people``."""
    dev = dev_data(faces, fit_people)
    rng = np.random.default_rng(seed)
    able = [p for p in test_people if len(faces[p]) > 5]
    kols = set(rng.choice(able, len(able) // 2, replace=False).tolist())
    X, slugs, tests = scenario(faces, kols, test_people, 5, seed=seed)
    out = []
    for odds in odds_list:
        model = train(X, slugs, {}, rule=fit_rule(*dev, odds=odds))
        tally = Tally()
        run_ours(model, tests, tally, [])
        out.append(np.array(tally.both()))
    return out


def choose_odds(faces, people, seed=0):
    """The stream odds (:data:`shared.recognition.rule.KOL_ODDS`) that these ``people`` alone pick: split them
    in two halves, fit on one and measure on the other (both ways, two draws), and keep the odds
    whose lower share (KOL named right or strangers unknown) is the highest."""
    score = np.zeros((len(ODDS_CHOICES), 2))
    for draw in range(2):
        a, b = folds(people, seed=10_000 + 100 * seed + draw)
        for fit, test in ((a, b), (b, a)):
            score += np.array(inner_rates(faces, fit, test, ODDS_CHOICES, seed=20_000 + 100 * seed + draw))
    return ODDS_CHOICES[int(np.argmax(score.min(axis=1)))]


def fit_on(faces, people, seed=0):
    """``(odds, rule)`` fitted on ``people`` alone: the odds by :func:`choose_odds`, then the rule."""
    odds = choose_odds(faces, people, seed)
    return odds, fit_rule(*dev_data(faces, people), odds=odds)


class Tally:
    def __init__(self):
        self.kol_right = self.kol_wrong = self.kol = self.stranger_unknown = self.stranger = 0

    def add(self, answer, person, is_kol):
        if is_kol:
            self.kol += 1
            self.kol_right += answer == person
            self.kol_wrong += answer is not None and answer != person
        else:
            self.stranger += 1
            self.stranger_unknown += answer is None

    def merge(self, other):
        for k, v in vars(other).items():
            setattr(self, k, getattr(self, k) + v)
        return self

    def line(self, label, splits=1):
        return (f"  {label:44s} KOL named right {fmt(self.kol_right, self.kol, splits)}   wrong name "
                f"{self.kol_wrong:3d}   strangers unknown {fmt(self.stranger_unknown, self.stranger, splits)}")

    def short(self):
        k, s = self.both()
        return f"{100 * k:.1f}% / {100 * s:.1f}%"

    def both(self):
        return self.kol_right / max(1, self.kol), self.stranger_unknown / max(1, self.stranger)


def run_ours(model, tests, tally, reliability, odds=KOL_ODDS):
    for (e, person, is_kol) in tests:
        p = model.predict(e[None, :])[0]
        tally.add(p.slug, person, is_kol)
        reliability.append((p.confidence, (p.slug == person) if is_kol else p.slug is None, is_kol, odds))


def run_compare_faces(X, slugs, tests, tally):
    import face_recognition

    for e, person, is_kol in tests:
        d = face_recognition.face_distance(X, e)
        i = int(np.argmin(d))
        match = face_recognition.compare_faces([X[i]], e, tolerance=0.6)[0]
        tally.add(slugs[i] if match else None, person, is_kol)


def centroid_distances(X, slugs, tests):
    classes = sorted(set(slugs))
    C = np.array([X[[s == c for s in slugs]].mean(0) for c in classes])
    E = np.array([t[0] for t in tests])
    D = np.linalg.norm(E[:, None, :] - C[None, :, :], axis=2)
    return [classes[i] for i in D.argmin(1)], D.min(1)


def best_single_threshold(cases):
    """``cases``: ``[(nearest, distance, person, is_kol)]`` over all folds; the threshold that
    maximises min(KOL right, strangers unknown) on these very answers."""
    grid = np.arange(0.30, 0.80, 0.0025)
    best = None
    for t in grid:
        tally = Tally()
        for nearest, d, person, is_kol in cases:
            tally.add(nearest if d <= t else None, person, is_kol)
        score = min(tally.both())
        if best is None or score > best[0]:
            best = (score, float(t), tally)
    return best[1], best[2]


def svm_vs_centroid(X, slugs, tests):
    """Closed-set top-1 on KOL tests: ``(svm right, centroid right, total)``."""
    from sklearn.svm import LinearSVC

    kol = [t for t in tests if t[2]]
    E = np.array([t[0] for t in kol])
    truth = [t[1] for t in kol]
    svm = LinearSVC(C=1.0, class_weight="balanced").fit(X, slugs)
    nearest, _ = centroid_distances(X, slugs, kol)
    return (sum(a == b for a, b in zip(svm.predict(E), truth)), sum(a == b for a, b in zip(nearest, truth)), len(kol))


def reliability_table(rows):
    """Rows ``(confidence, right, is_kol, odds)``; strangers are re-weighted so that the KOL photos
    weigh ``odds`` times as much as them in total (the stream each answer's rule is calibrated for)."""
    rows = np.array(rows, dtype=float)
    n_kol, n_str = rows[:, 2].sum(), (1 - rows[:, 2]).sum()
    w = np.where(rows[:, 2] == 1, 1.0, n_kol / max(n_str, 1) / rows[:, 3])
    out = ["  confidence   answers  right (raw)   right (weighted to the calibrated stream, odds:1 KOL/stranger)"]
    for lo, hi in [(0.0, 0.5), (0.5, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 0.95), (0.95, 0.99), (0.99, 1.01)]:
        sel = (rows[:, 0] >= lo) & (rows[:, 0] < hi)
        if sel.any():
            raw = rows[sel, 1].mean()
            weighted = (rows[sel, 1] * w[sel]).sum() / w[sel].sum()
            out.append(f"  {lo:.2f}-{min(hi, 1):.2f}  {int(sel.sum()):8d}  {100 * raw:9.1f}%   {100 * weighted:9.1f}%"
                       f"   (mean confidence {100 * rows[sel, 0].mean():.1f}%)")
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fit", action="store_true", help="print the RULE fitted on all of lfw_dev")
    parser.add_argument("--splits", type=int, default=SPLITS, help="random splits of the people into 2 folds")
    args = parser.parse_args()
    started = time.perf_counter()
    rows = lfw_cache.load()
    faces, missing = by_person(rows)
    photo_counts = {p: len(faces[p]) + missing[p] for p in faces}
    people = sorted(faces)
    if args.fit:
        odds, rule = fit_on(faces, people)
        print(f"KOL_ODDS = {odds}")
        print("RULE = {")
        for k, v in rule.items():
            print(f'    "{k}": [{", ".join(f"{c:.4f}" for c in v)}],')
        print("}")
        return
    kols = {p for p in people if photo_counts[p] >= 10}
    S = args.splits
    print(f"lfw_dev: {len(rows)} photos of {len(people)} people; no face found in {sum(missing.values())} photos "
          f"(not scored); {len(kols)} people with >= 10 photos are the KOLs, {len(people) - len(kols)} never-enrolled "
          f"people are the strangers; {S} random splits into 2 folds of people, each fold measured with the rule "
          f"fitted on the other (and the odds it is calibrated for chosen on the other fold alone)")
    splits = [folds(people, seed=seed) for seed in range(S)]
    fitted = [[fit_on(faces, parts[1 - f], seed=seed) for f in range(2)] for seed, parts in enumerate(splits)]
    rules = [[rule for _odds, rule in pair] for pair in fitted]
    odds_of = [[odds for odds, _rule in pair] for pair in fitted]
    print("  odds chosen on the fitting folds (split by split, fold 0 then 1): "
          + ", ".join("/".join(f"{odds:g}" for odds, _rule in pair) for pair in fitted))
    headline = None
    reliability = []
    for shots in SHOTS:
        print(f"\nenrolled with {shots} photo{'s' if shots > 1 else ''} each:")
        total = {k: Tally() for k in ("ours", "cf")}
        cases = []
        svm_right = cen_right = closed = 0
        per_split = []
        for seed, parts in enumerate(splits):
            mine = Tally()
            for f in range(2):
                X, slugs, tests = scenario(faces, kols, parts[f], shots, seed=shots + 100 * seed)
                model = train(X, slugs, {}, rule=rules[seed][f])
                ours, cf = Tally(), Tally()
                run_ours(model, tests, ours, reliability if shots == 5 else [], odds_of[seed][f])
                run_compare_faces(X, slugs, tests, cf)
                nearest, d = centroid_distances(X, slugs, tests)
                cases += [(n, dd, t[1], t[2]) for n, dd, t in zip(nearest, d, tests)]
                mine.merge(ours)
                total["cf"].merge(cf)
                if len(set(slugs)) > 1:
                    s, c, n = svm_vs_centroid(X, slugs, tests)
                    svm_right, cen_right, closed = svm_right + s, cen_right + c, closed + n
            total["ours"].merge(mine)
            per_split.append(mine)
        t, oracle = best_single_threshold(cases)
        print("  ours, split by split (KOL named right / strangers unknown): "
              + ", ".join(m.short() for m in per_split))
        print(total["ours"].line(f"all {S} splits: ours", S))
        print(total["cf"].line("face_recognition.compare_faces 0.6", S))
        print(oracle.line(f"centroid, threshold {t:.3f} chosen on the test", S))
        print(f"  closed-set top-1 on KOL tests: linear SVM (one-vs-rest) {fmt(svm_right, closed, S)}, "
              f"nearest centroid {fmt(cen_right, closed, S)}")
        if shots == 5:
            headline = total["ours"]
    many, cf = Tally(), Tally()
    for seed, parts in enumerate(splits):
        for f in range(2):
            X, slugs, tests = scenario(faces, {p for p in parts[f] if len(faces[p]) >= 6}, parts[f], 5, seed=5 + 100 * seed)
            run_ours(train(X, slugs, {}, rule=rules[seed][f]), tests, many, [])
            run_compare_faces(X, slugs, tests, cf)
    print("\nmany KOLs (everyone in the fold with >= 6 photos is a KOL, about 80 per fold, 5 photos each; "
          "their 1-4 other photos are harder tests):")
    print(many.line(f"all {S} splits: ours", S))
    print(cf.line("face_recognition.compare_faces 0.6", S))
    print("\nreliability of ours' confidence (5 photos each, all splits; 'right' = the answer shown is right):")
    print("\n".join(reliability_table(reliability)))
    kol_rate, stranger_rate = headline.both()
    ok = kol_rate >= TARGET and stranger_rate >= TARGET
    print(f"\ntarget >= {TARGET:.0%} KOL photos named right and >= {TARGET:.0%} strangers unknown (5 photos each): "
          f"{'MET' if ok else 'NOT MET'} ({100 * kol_rate:.1f}% / {100 * stranger_rate:.1f}%)  "
          f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
