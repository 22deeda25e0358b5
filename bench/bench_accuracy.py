"""Open-set identification on lfw_dev, asian_dev and both mixed: KOL photos named right, strangers "unknown",
and whether answers shown as sure are right.

    .venv/bin/python bench/bench_accuracy.py            # the protocol below (a few minutes once the caches are filled)
    .venv/bin/python bench/bench_accuracy.py --splits 1 --shots 5   # a quick look
    .venv/bin/python bench/bench_accuracy.py --fit      # print the RULE fitted on all of both populations, REACH and DOUBT
    .venv/bin/python bench/bench_accuracy.py --train-cost   # seconds to train 100 KOLs x 10 photos (SVMs, roster factor)

Data: ``../shared/data/faces/lfw_dev`` (2,616 photos of 403 people, mostly Western) and
``../shared/data/faces/asian_dev`` (336 photos: 20 East Asian KOLs and 15 strangers, PEOPLE.tsv), embedded
once by ``bench/lfw_cache.py`` (cached under ``bench/out/``, keyed by file hash); a photo's face is the one
nearest its centre; photos with no face found are counted apart (not scored).

Protocol (cross-fitted: nothing fitted ever sees the people it is measured on):

- each population's people are split into two folds at random, :data:`SPLITS` times (seeds 0, 1, ...);
  fold ``f`` is measured with the rule fitted on fold ``1 - f`` only, and the answers of all folds and
  splits are added up (each photo is a test once per split; the intervals count it once);
- measured populations: lfw_dev (KOLs: people with >= 10 photos), asian_dev (KOLs: PEOPLE.tsv role "kol")
  and mixed (the two folds' people together, one roster);
- in the measured fold each KOL is enrolled with ``shots`` photos (1, 3, 5, 10) drawn at random (a KOL with
  no more photos than that is not enrolled: a stranger), its other photos are the KOL tests; everyone
  else in the fold is a stranger (all their photos are tests);
- every test face is predicted on its own (``Model.predict`` of one row);
- the rule's development data on the fitting fold: for shots 1, 2, 3 and 5, three random draws each, a
  random half of the people with more than ``shots`` photos are KOLs and everyone else is a stranger.

The roster-aware confidence (:func:`shared.recognition.rule.confidence`: :data:`~shared.recognition.rule.REACH`
and :data:`~shared.recognition.rule.DOUBT`) of the "shipped" variant is chosen for fold ``f`` inside fold
``1 - f`` only: its people are split in two halves, the rule fitted on one half answers the other half's
development rosters (and the other way round), and :func:`choose_gate` picks the pair that shows the most
answers as sure while those are right >= :data:`GATE_TARGET` on each population. ``--fit`` chooses the
shipped pair the same way on 2-fold splits of all the people.

Rules compared (:data:`VARIANTS`): "today" is the shipped procedure before issue 23 (fitted on lfw_dev, plain
distances); "both" is fitted on both populations (each weighs the same); "roster" is fitted on both with
distances in units of the roster's own spread (:func:`shared.recognition.rule.roster_shrink`, measured at
each training from the enrolment photos alone); "roster+svm" adds the per-KOL SVM score; "shipped" is
"roster+svm" with the roster-aware confidence (the servers' rule).

Ratios: "named right" = KOL test photos answered with their own KOL / KOL test photos; "wrong" = KOL test
photos answered with another KOL; "unknown" = stranger photos answered "unknown" / stranger photos;
"sure" = answers with confidence >= 0.9 / all answers, and how many of those are right. 95 % Wilson intervals.

Baselines in the same run, on the same embeddings and galleries: ``face_recognition.compare_faces`` at its
0.6 tolerance on the nearest gallery photo; the nearest centroid with the one distance threshold chosen *on
the test itself* (per population and photo count) to maximise the lower of the two ratios (an upper bound
for a one-threshold centroid rule: it looks at the answers); the closed-set top-1 of a linear SVM.
"""
import argparse
import csv
import time

import numpy as np

import lfw_cache
from common import ROOT  # noqa: F401  (puts the repository on sys.path)
from shared.recognition.model import train
from shared.recognition import rule as rules_mod
from shared.recognition.rule import KOL_ODDS, fit_rule

TARGET = 0.98
SURE = 0.9
SHOTS = (5, 1, 3, 10)
SPLITS = 3
POPULATIONS = ("lfw_dev", "asian_dev", "mixed")
#: name: (populations the rule is fitted on, the roster's spread as an input, the per-KOL SVM score as an input,
#: the roster-aware confidence: rule.DOUBT and rule.REACH, chosen fold by fold as :func:`choose_gate` says)
VARIANTS = {
    "today": (("lfw_dev",), False, False, False),
    "both": (("lfw_dev", "asian_dev"), False, False, False),
    "roster": (("lfw_dev", "asian_dev"), True, False, False),
    "roster+svm": (("lfw_dev", "asian_dev"), True, True, False),
    "shipped": (("lfw_dev", "asian_dev"), True, True, True),
}
#: The roster-aware confidence's two constants are chosen on cross-fitted answers (:func:`gate_answers`) as the pair
#: that shows the most answers as sure while the sure ones are right at least this often on each population.
GATE_TARGET = 0.995
REACHES = (1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 2.0, 2.2, float("inf"))
DOUBTS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0)
#: No roster-aware correction (the variants before it).
NO_GATE = (float("inf"), 0.0)


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
    return f"{k:5d}/{n:<5d} {100 * k / max(n, 1):5.1f}% [{100 * lo:5.1f}, {100 * hi:5.1f}]"


def load_population(name):
    """``(faces, kols)``: ``{"name/person": [embedding, ...]}`` (photos with a face; the others are
    left out) and the set of its KOLs; plus the number of photos with no face found."""
    rows = lfw_cache.load(name)
    faces, counts, missing = {}, {}, 0
    for person, _file, emb, _n in rows:
        key = f"{name}/{person}"
        faces.setdefault(key, [])
        counts[key] = counts.get(key, 0) + 1
        if emb is None:
            missing += 1
        else:
            faces[key].append(emb)
    if name == "asian_dev":
        with open(lfw_cache.SETS[name] / "PEOPLE.tsv", newline="") as fh:
            kols = {f"{name}/{r['person']}" for r in csv.DictReader(fh, delimiter="\t") if r["role"] == "kol"}
    else:
        kols = {p for p in faces if counts[p] >= 10}
    return faces, kols & set(faces), missing, len(rows)


def load_both():
    """Both populations (:func:`load_population`, their sizes printed): ``(faces, kols, people)``, ``faces``
    ``{"pop/person": [embedding]}``, ``kols`` a set of those keys, ``people`` ``{pop: sorted keys}``."""
    faces, kols, people = {}, set(), {}
    for name in ("lfw_dev", "asian_dev"):
        f, k, missing, photos = load_population(name)
        faces.update(f)
        kols |= k
        people[name] = sorted(f)
        print(f"{name}: {photos} photos of {len(f)} people, no face found in {missing} (not scored); "
              f"{len(k)} KOLs, {len(f) - len(k)} strangers")
    return faces, kols, people


def shipped_rules(faces, splits):
    """The shipped rule's procedure (both populations, the roster's spread, the SVM score) fitted for each fold
    on the other fold only: ``rules[seed][f]`` measures fold ``f`` of split ``seed`` (:func:`split_people`)."""
    pops = ("lfw_dev", "asian_dev")
    return [[fit_variant(faces, {p: fold_people(splits, seed, 1 - f, p) for p in pops}, pops, True, True)
             for f in range(2)] for seed in range(len(splits))]


def splits_parser():
    """An argument parser with ``--splits`` (random splits of the people into 2 folds, default 3), for the benchmarks
    that measure on :func:`cross_fitted` folds."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--splits", type=int, default=SPLITS, help="random splits of the people into 2 folds")
    return parser


def cross_fitted(n_splits):
    """``(faces, kols, people, splits, rules)``: both populations (:func:`load_both`), their people split ``n_splits``
    times (:func:`split_people`) and the shipped rule fitted for each fold on the other (:func:`shipped_rules`)."""
    started = time.perf_counter()
    faces, kols, people = load_both()
    splits = split_people(people, n_splits)
    rules = shipped_rules(faces, splits)
    print(f"rules fitted ({time.perf_counter() - started:.0f} s); {n_splits} splits x 2 folds")
    return faces, kols, people, splits, rules


def rosters(faces, kols, splits, rules, pop, shots):
    """The measured rosters of ``pop`` with the shipped procedure: yields ``(seed, f, model, tests)`` for each split and
    fold with KOLs (:func:`scenario` with seed ``shots + 100 * seed``; the model trained with ``rules[seed][f]``,
    :func:`shipped_rules`, and the SVMs' background :func:`svm_negatives_of`)."""
    for seed in range(len(splits)):
        for f in range(2):
            X, slugs, tests = scenario(faces, kols, fold_people(splits, seed, f, pop), shots, seed=shots + 100 * seed)
            if slugs:
                yield seed, f, train(X, slugs, {}, rule=rules[seed][f],
                                     svm_background=svm_negatives_of(faces, splits, seed, f)), tests


def folds(people, k=2, seed=0):
    rng = np.random.default_rng(seed)
    order = rng.permutation(sorted(people))
    return [sorted(order[i::k]) for i in range(k)]


def split_people(people, splits=SPLITS):
    """``[{pop: [fold 0 people, fold 1 people]}]``: each population's people split into two folds, once per seed
    ``0 .. splits - 1`` (``people``: ``{"lfw_dev": [...], "asian_dev": [...]}``)."""
    return [{pop: folds(people[pop], seed=seed) for pop in ("lfw_dev", "asian_dev")} for seed in range(splits)]


def fold_people(splits, seed, f, pop):
    """The people of fold ``f`` of split ``seed`` (:func:`split_people`) of ``pop`` ("mixed": both populations')."""
    if pop == "mixed":
        return splits[seed]["lfw_dev"][f] + splits[seed]["asian_dev"][f]
    return splits[seed][pop][f]


def svm_negatives_of(faces, splits, seed, f):
    """The SVMs' background when fold ``f`` is measured: every photo of the fitting fold's people (both
    populations), ``(B, 128)``."""
    return np.array([e for p in fold_people(splits, seed, 1 - f, "mixed") for e in faces[p]])


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
    return np.array(X).reshape(-1, 128), slugs, tests


def dev_scenarios(faces, people, scaled, svm, rule=None, shot_list=(1, 2, 3, 5), draws=3):
    """The rule's development rosters on ``people``: yields ``(model, tests)`` (``scaled``: with the roster's
    spread; ``svm``: with per-KOL SVMs, whose background is a random half of the non-KOL people, the other half
    being the strangers). For shots 1, 2, 3 and 5, three random draws each, a random half of the people with more
    than ``shots`` photos are KOLs and everyone else is a stranger."""
    for shots in shot_list:
        for draw in range(draws):
            rng = np.random.default_rng(1000 + 10 * shots + draw)
            able = [p for p in people if len(faces[p]) > shots]
            kols = set(rng.choice(able, len(able) // 2, replace=False).tolist())
            others = [p for p in people if p not in kols]
            bg = set(rng.choice(others, len(others) // 2, replace=False).tolist()) if svm else set()
            X, slugs, tests = scenario(faces, kols, [p for p in people if p not in bg], shots,
                                       seed=1000 + 10 * shots + draw)
            if len(set(slugs)) < 2:
                continue
            negatives = np.array([e for p in sorted(bg) for e in faces[p]]).reshape(-1, 128) if svm else False
            yield train(X, slugs, {}, rule=rule, shrink=None if scaled else 1.0, svm_background=negatives), tests


def dev_data(faces, people, scaled, svm):
    """Features and outcomes for :func:`shared.recognition.rule.fit_rule` on ``people`` (:func:`dev_scenarios`)."""
    F, right, stranger = [], [], []
    for model, tests in dev_scenarios(faces, people, scaled, svm):
        best, f = model.describe(np.array([t[0] for t in tests]))
        F.append(f)
        right += [model.classes[b] == t[1] for b, t in zip(best, tests)]
        stranger += [not t[2] for t in tests]
    return np.concatenate(F), np.array(right), np.array(stranger)


def answer(model, e):
    """The rule's answer for one face before a confidence is shown: ``(slug or None, p, d)``, ``p`` = ``p_right``
    of the KOL named or ``p_stranger`` of an "unknown", ``d`` the distance to the nearest centroid."""
    a = model.decide(e[None, :])
    j = int(a["choice"][0])
    if j < 0:
        return None, float(a["S"][0, 0]), float(a["d"][0])
    return model.classes[int(a["idx"][0, j])], float(a["P"][0, j]), float(a["d"][0])


def gate_answers(faces, people_by_pop, rule_people_by_pop):
    """Answers for :func:`choose_gate`, cross-fitted: the shipped rule's procedure fitted on
    ``rule_people_by_pop``, its answers on the development rosters (:func:`dev_scenarios`) of
    ``people_by_pop`` (other people). Returns ``{pop: (named, p, right, d, shrink, reach)}`` arrays."""
    pops = ("lfw_dev", "asian_dev")
    rule = fit_variant(faces, rule_people_by_pop, pops, True, True)
    out = {}
    for pop in pops:
        rows = []
        for model, tests in dev_scenarios(faces, people_by_pop[pop], True, True, rule=rule):
            for e, person, is_kol in tests:
                slug, p, d = answer(model, e)
                rows.append((slug is not None, p, (slug == person) if is_kol else slug is None, d, model.shrink,
                             model.reach))
        out[pop] = tuple(np.array(c) for c in zip(*rows))
    return out


def gated_confidence(named, p, d, shrink, reach, gate):
    """:func:`shared.recognition.rule.confidence` of answers (arrays) with ``gate = (REACH, DOUBT)``."""
    beyond, doubt = gate
    conf = np.empty(len(p))
    conf[named] = rules_mod.confidence(p[named], True, shrink[named], doubt=doubt)
    conf[~named] = rules_mod.confidence(p[~named], False, shrink[~named], d[~named], reach[~named], doubt, beyond)
    return conf


def choose_gate(parts, target=GATE_TARGET):
    """``(REACH, DOUBT)``: the pair of :data:`REACHES` x :data:`DOUBTS` under which the sure answers of each
    population's answers (``parts``, a list of :func:`gate_answers` results, pooled) are right at least
    ``target`` of the time and the most answers (mean share of the populations) are sure; when no pair
    qualifies, the pair whose worse population is right most often."""
    pooled = {pop: tuple(np.concatenate([part[pop][i] for part in parts]) for i in range(6)) for pop in parts[0]}
    best, fallback = None, None
    for beyond in REACHES:
        for doubt in DOUBTS:
            shares, ok, worst = [], True, 1.0
            for named, p, right, d, shrink, reach in pooled.values():
                sure = gated_confidence(named, p, d, shrink, reach, (beyond, doubt)) >= SURE
                rate = right[sure].mean() if sure.any() else 1.0
                ok &= rate >= target
                worst = min(worst, rate)
                shares.append(sure.mean())
            score = float(np.mean(shares))
            if ok and (best is None or score > best[0] + 1e-12):
                best = (score, (beyond, doubt))
            if fallback is None or worst > fallback[0] + 1e-12:
                fallback = (worst, (beyond, doubt))
    return best[1] if best else fallback[1]


def fit_variant(faces, people_by_pop, pops, scaled, svm):
    """The rule fitted on the people of ``pops`` (``people_by_pop[pop]``), each population weighing the same."""
    parts = [dev_data(faces, people_by_pop[pop], scaled, svm) for pop in pops]
    groups = np.concatenate([np.full(len(p[0]), i) for i, p in enumerate(parts)])
    F, right, stranger = (np.concatenate([p[i] for p in parts]) for i in range(3))
    return fit_rule(F, right, stranger, odds=KOL_ODDS, groups=groups)


class Tally:
    def __init__(self):
        self.kol_right = self.kol_wrong = self.kol = self.stranger_unknown = self.stranger = 0
        self.sure = self.sure_right = self.answers = self.sure_wrong_named = 0

    def add(self, answer, person, is_kol, confidence=None):
        if is_kol:
            self.kol += 1
            self.kol_right += answer == person
            self.kol_wrong += answer is not None and answer != person
            right = answer == person
        else:
            self.stranger += 1
            self.stranger_unknown += answer is None
            right = answer is None
        self.answers += 1
        if confidence is not None and confidence >= SURE:
            self.sure += 1
            self.sure_right += right
            self.sure_wrong_named += (not right) and answer is not None

    def merge(self, other):
        for k, v in vars(other).items():
            setattr(self, k, getattr(self, k) + v)
        return self

    def line(self, label, splits=1, sure=True):
        out = (f"    {label:34s} named right {fmt(self.kol_right, self.kol, splits)}  wrong {self.kol_wrong:4d}  "
               f"unknown {fmt(self.stranger_unknown, self.stranger, splits)}")
        if sure:
            out += (f"  sure {100 * self.sure / max(1, self.answers):5.1f}% of answers, right "
                    f"{fmt(self.sure_right, self.sure, splits)} (wrong: {self.sure_wrong_named} named, "
                    f"{self.sure - self.sure_right - self.sure_wrong_named} unknown)")
        return out

    def both(self):
        return self.kol_right / max(1, self.kol), self.stranger_unknown / max(1, self.stranger)

    def sure_rate(self):
        return self.sure_right / max(1, self.sure)


def run_ours(model, tests, tally, reliability, gate=NO_GATE):
    """Each test face predicted on its own (:meth:`Model.decide` of one row, as ``Model.predict`` answers it),
    the confidence shown with the roster-aware constants ``gate = (REACH, DOUBT)``."""
    for (e, person, is_kol) in tests:
        slug, p, d = answer(model, e)
        named = np.array([slug is not None])
        conf = round(float(gated_confidence(named, np.array([p]), np.array([d]), np.array([model.shrink]),
                                            np.array([model.reach]), gate)[0]), 4)  # as Model.predict rounds it
        tally.add(slug, person, is_kol, conf)
        reliability.append((conf, (slug == person) if is_kol else slug is None))


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
    nearest = np.array([c[0] for c in cases], dtype=object)
    d = np.array([c[1] for c in cases])
    person = np.array([c[2] for c in cases], dtype=object)
    is_kol = np.array([c[3] for c in cases], dtype=bool)
    hit = nearest == person
    best = None
    for t in np.arange(0.20, 0.80, 0.0025):
        named = d <= t
        score = min((named & hit & is_kol).sum() / max(1, is_kol.sum()), (~named & ~is_kol).sum() / max(1, (~is_kol).sum()))
        if best is None or score > best[0]:
            best = (score, float(t))
    tally = Tally()
    for n, dd, p, k in cases:
        tally.add(n if dd <= best[1] else None, p, k)
    return best[1], tally


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
    """Rows ``(confidence, right)``: how often the answers at each confidence level are right."""
    rows = np.array(rows, dtype=float).reshape(-1, 2)
    out = ["      confidence   answers   right   (mean confidence)"]
    for lo, hi in [(0.0, 0.5), (0.5, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 0.95), (0.95, 0.99), (0.99, 1.01)]:
        sel = (rows[:, 0] >= lo) & (rows[:, 0] < hi)
        if sel.any():
            out.append(f"      {lo:.2f}-{min(hi, 1):.2f}  {int(sel.sum()):8d}  {100 * rows[sel, 1].mean():6.1f}%"
                       f"   ({100 * rows[sel, 0].mean():.1f}%)")
    return out


def train_cost(faces, repeat=3):
    """Median seconds of :func:`shared.recognition.model.train` (shipped background, SVMs and roster
    factor included) for 100 KOLs x 10 photos: lfw_dev photos, each person's photos reused as needed."""
    people = sorted(faces, key=lambda p: -len(faces[p]))[:100]
    X = np.array([faces[p][i % len(faces[p])] for p in people for i in range(10)])
    slugs = [p for p in people for _ in range(10)]
    train(X[:20], slugs[:20], {})  # the first training reads the background and imports scikit-learn
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        train(X, slugs, {})
        times.append(time.perf_counter() - t)
    plain = time.perf_counter()
    train(X, slugs, {}, svm_background=False, shrink=1.0)
    return float(np.median(times)), time.perf_counter() - plain


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fit", action="store_true", help="print the RULE fitted on all of both populations")
    parser.add_argument("--splits", type=int, default=SPLITS, help="random splits of the people into 2 folds")
    parser.add_argument("--shots", type=int, nargs="*", default=list(SHOTS), help="photos per KOL")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), help="rules compared")
    parser.add_argument("--no-baselines", action="store_true", help="ours only")
    parser.add_argument("--train-cost", action="store_true", help="time a training of 100 KOLs x 10 photos")
    args = parser.parse_args()
    started = time.perf_counter()
    faces, kols, people = load_both()
    if args.train_cost:
        full, plain = train_cost(faces)
        print(f"train 100 KOLs x 10 photos: {full:.2f} s (median of 3; without SVMs and roster factor: {plain:.2f} s)")
        return
    if args.fit:
        rule = fit_variant(faces, people, ("lfw_dev", "asian_dev"), True, True)
        print("RULE = {")
        for k, v in rule.items():
            print(f'    "{k}": [{", ".join(f"{c:.4f}" for c in v)}],')
        print("}")
        parts = []
        for seed in range(args.splits):
            halves = {pop: folds(people[pop], seed=seed) for pop in ("lfw_dev", "asian_dev")}
            parts += [gate_answers(faces, {p: h[f] for p, h in halves.items()}, {p: h[1 - f] for p, h in halves.items()})
                      for f in range(2)]
        beyond, doubt = choose_gate(parts)
        print(f"REACH = {beyond:g}\nDOUBT = {doubt:g}  (cross-fitted answers of {args.splits} splits, target {GATE_TARGET:.1%})")
        return
    S = args.splits
    print(f"{S} random splits of each population into 2 folds of people; each fold measured with the rules "
          f"fitted on the other fold; KOL_ODDS {KOL_ODDS:g}; every test face predicted on its own")
    splits = split_people(people, S)

    rules, fitted = {}, {}
    for v in args.variants:
        pops, scaled, svm, _gate = VARIANTS[v]
        if (pops, scaled, svm) not in fitted:
            fitted[(pops, scaled, svm)] = [[fit_variant(faces, {p: fold_people(splits, seed, 1 - f, p) for p in pops}, pops,
                                                        scaled, svm) for f in range(2)] for seed in range(S)]
        rules[v] = fitted[(pops, scaled, svm)]
    # the roster-aware confidence's constants for fold f: chosen inside the fitting fold 1 - f (its two halves,
    # a rule fitted on one answering the other's development rosters), never on fold f's people
    gates = [[NO_GATE, NO_GATE] for _ in range(S)]
    if any(VARIANTS[v][3] for v in args.variants):
        for seed in range(S):
            for f in range(2):
                halves = {p: folds(fold_people(splits, seed, 1 - f, p), seed=100 + seed) for p in ("lfw_dev", "asian_dev")}
                gates[seed][f] = choose_gate([gate_answers(faces, {p: h[i] for p, h in halves.items()},
                                                           {p: h[1 - i] for p, h in halves.items()}) for i in range(2)])
        print("  roster-aware confidence (REACH, DOUBT) per split and fold: " +
              ", ".join(f"{g[0]:g}/{g[1]:g}" for row in gates for g in row))
    # the SVMs' background at test time: every photo of the fitting fold's people (both populations)
    negatives = [[svm_negatives_of(faces, splits, seed, f) for f in range(2)] for seed in range(S)]
    print(f"  rules fitted ({time.perf_counter() - started:.0f} s)")
    summary = {}
    reliability = {(v, pop): [] for v in args.variants for pop in POPULATIONS}
    for shots in args.shots:
        print(f"\nenrolled with {shots} photo{'s' if shots > 1 else ''} each:")
        for pop in POPULATIONS:
            ours = {v: Tally() for v in args.variants}
            roster = {v: [] for v in args.variants}
            cf = Tally()
            cases = []
            svm_right = cen_right = closed = 0
            for seed in range(S):
                for f in range(2):
                    X, slugs, tests = scenario(faces, kols, fold_people(splits, seed, f, pop), shots, seed=shots + 100 * seed)
                    if not slugs:
                        continue
                    models = {}
                    for v in args.variants:
                        _pops, scaled, svm, gated = VARIANTS[v]
                        key = (id(rules[v]), scaled, svm)
                        if key not in models:
                            models[key] = train(X, slugs, {}, rule=rules[v][seed][f], shrink=None if scaled else 1.0,
                                                svm_background=negatives[seed][f] if svm else False)
                        run_ours(models[key], tests, ours[v], reliability[(v, pop)] if shots == 5 else [],
                                 gates[seed][f] if gated else NO_GATE)
                        roster[v].append(models[key].shrink)
                    if args.no_baselines:
                        continue
                    run_compare_faces(X, slugs, tests, cf)
                    nearest, d = centroid_distances(X, slugs, tests)
                    cases += [(n, dd, t[1], t[2]) for n, dd, t in zip(nearest, d, tests)]
                    if len(set(slugs)) > 1:
                        s, c, n = svm_vs_centroid(X, slugs, tests)
                        svm_right, cen_right, closed = svm_right + s, cen_right + c, closed + n
            print(f"  {pop}:")
            for v in args.variants:
                print(ours[v].line(f"ours ({v})", S) + f"  [roster shrink {np.mean(roster[v]):.2f}]")
                summary[(v, pop, shots)] = ours[v]
            if not args.no_baselines:
                t, oracle = best_single_threshold(cases)
                print(cf.line("compare_faces 0.6", S, sure=False))
                print(oracle.line(f"centroid, best threshold {t:.3f} on test", S, sure=False))
                print(f"    closed-set top-1 on KOL tests: linear SVM {fmt(svm_right, closed, S)}, "
                      f"nearest centroid {fmt(cen_right, closed, S)}")
                summary[("oracle", pop, shots)] = oracle
    if 5 in args.shots:
        print("\nreliability (5 photos each, all splits; 'right' = the answer shown is right, the test's own mix):")
        for v in args.variants:
            for pop in POPULATIONS:
                print(f"  {v}, {pop}:")
                print("\n".join(reliability_table(reliability[(v, pop)])))
        print(f"\ntargets at 5 photos (sure answers >= 99 % right everywhere; lfw_dev >= {TARGET:.0%} / {TARGET:.0%}; "
              f"asian_dev above the best-threshold centroid on both):")
        for v in args.variants:
            lfw, asian = summary[(v, "lfw_dev", 5)], summary[(v, "asian_dev", 5)]
            sure_ok = all(summary[(v, pop, s)].sure_rate() >= 0.99 for pop in POPULATIONS for s in args.shots)
            line = (f"  {v:18s} sure >= 99 % right at every count and population: {'MET' if sure_ok else 'NOT MET'}; "
                    f"lfw_dev {100 * lfw.both()[0]:.1f}% / {100 * lfw.both()[1]:.1f}% "
                    f"({'MET' if min(lfw.both()) >= TARGET else 'NOT MET'})")
            if ("oracle", "asian_dev", 5) in summary:
                o = summary[("oracle", "asian_dev", 5)].both()
                a = asian.both()
                line += (f"; asian_dev {100 * a[0]:.1f}% / {100 * a[1]:.1f}% vs bound {100 * o[0]:.1f}% / "
                         f"{100 * o[1]:.1f}% ({'MET' if a[0] > o[0] and a[1] > o[1] else 'NOT MET'})")
            print(line)
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
