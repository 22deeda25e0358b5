"""The training report (issue 23 item 5, issue 25): what to do first, in plain words; what this roster
can expect, from the model's own answers with each photo left out; one minimum photo count."""
import numpy as np

from shared.recognition import report
from shared.recognition.model import train
from shared.training import cleaning

from .conftest import needs_data


def _faces(celeb_faces, counts):
    """``(X, slugs, chips)`` of the first ``counts[person]`` real faces of each five_celebs person."""
    rows = [(f.embedding, person, f"{person}-{i}") for person, n in counts.items()
            for i, (_, f) in enumerate(celeb_faces[person][:n])]
    return np.array([r[0] for r in rows]), [r[1] for r in rows], [r[2] for r in rows]


def _crowd(n_kols=30, per_kol=4, seed=0):
    """Synthetic dlib-like embeddings of ``n_kols // 2`` pairs of look-alike KOLs (twins ~0.16 apart,
    each photo ~0.34 from its KOL's centre), so that the roster confuses some of its own photos:
    ``(X, slugs, chips)``."""
    rng = np.random.default_rng(seed)
    centres = np.repeat(rng.normal(0, 0.06, size=((n_kols + 1) // 2, 128)), 2, axis=0)[:n_kols]
    centres = centres + rng.normal(0, 0.01, size=centres.shape)
    X = np.concatenate([c + rng.normal(0, 0.03, size=(per_kol, 128)) for c in centres])
    slugs = [f"k{i:02d}" for i in range(n_kols) for _ in range(per_kol)]
    return X, slugs, [f"{s}-{j}" for j, s in enumerate(slugs)]


def test_one_minimum_photo_count_everywhere():
    """Cleaning, import and the report use one number (cleaning said "at least 5", the report "fewer than 3")."""
    assert cleaning.FEW_CROPS == report.MIN_PHOTOS == 5
    X, slugs, chips = _crowd(n_kols=4, per_kol=6)
    keep = [i for i, s in enumerate(slugs) if s != "k01" or chips[i].endswith(("-6", "-7", "-8", "-9"))]
    model = train(X[keep], [slugs[i] for i in keep], {}, chips=[chips[i] for i in keep])
    metrics = model.meta["metrics"]
    assert metrics["per_kol"]["k01"] == 4 and metrics["few_photos"] == ["k01"] and metrics["min_photos"] == 5
    assert report.roster_report(model)["advice"][0] == {"do": "more_photos", "kols": ["k01"], "more": 1}
    assert metrics["advice"][0]["do"] == "more_photos"  # added to the model's report


def test_expected_answers_are_the_models_own_with_each_photo_left_out():
    """:func:`report.expectations` keeps only each photo's nearest KOLs: its counts equal those of
    the whole model's :meth:`Model.predict`, without the photo (KOL side) and without its KOL (stranger side)."""
    X, slugs, chips = _crowd()
    model = train(X, slugs, {}, chips=chips)
    expected = report.expectations(model)
    assert expected["photos"] == len(X)  # 120 photos: all held out (budget 300)
    brute = dict.fromkeys(("named_right", "sure_right", "sure_wrong", "unknown", "wrong_name",
                           "stranger_unknown", "stranger_sure_wrong"), 0)
    for r in range(len(X)):
        slug = slugs[r]
        p = model.without_photos(slug, [chips[r]]).predict(X[r:r + 1])[0]
        right, sure = p.slug == slug, p.confidence >= report.SURE
        brute["named_right"] += right
        brute["sure_right"] += right and sure
        brute["sure_wrong"] += sure and not right
        brute["unknown"] += p.slug is None
        brute["wrong_name"] += p.slug is not None and not right
        q = model.without([slug]).predict(X[r:r + 1])[0]
        brute["stranger_unknown"] += q.slug is None
        brute["stranger_sure_wrong"] += q.slug is not None and q.confidence >= report.SURE
    assert {k: expected[k] for k in brute} == brute
    assert brute["wrong_name"] and brute["named_right"]  # the crowd is confused now and then: a real check
    assert sum(n for n, _ in expected["per_kol"].values()) == len(X)
    assert sum(n for _, _, n, _ in expected["wrong_pairs"]) == brute["wrong_name"]
    # the budget spreads the held-out photos over every KOL
    spread = report.expectations(model, budget=45)["per_kol"]
    assert sum(n for n, _ in spread.values()) == 45 and len(spread) == 30 and max(n for n, _ in spread.values()) == 2


@needs_data
def test_look_alikes_are_only_pairs_that_were_confused(celeb_faces):
    """Real photos: five_celebs' KOLs, 8 photos each, are not confused with each other, so no pair is
    listed as look-alikes (the nearest pairs stay behind the details). A "Madonna twin" made of four
    other real photos of Madonna is, with the photos to check."""
    counts = {person: 8 for person in celeb_faces}
    X, slugs, chips = _faces(celeb_faces, counts)
    model = train(X, slugs, {}, chips=chips)
    report.roster_report(model)
    metrics = model.meta["metrics"]
    assert len(metrics["confused"]) >= 3 and metrics["look_alike"] == []
    assert not [item for item in metrics["advice"] if item["do"] == "check_look_alike"]
    twin = [f.embedding for _, f in celeb_faces["madonna"][8:12]]
    model = train(np.concatenate([X, twin]), slugs + ["twin"] * 4, {}, chips=chips + [f"twin-{i}" for i in range(4)])
    report.roster_report(model)
    metrics = model.meta["metrics"]
    assert [(p["a"], p["b"]) for p in metrics["look_alike"]] == [("madonna", "twin")]
    [item] = [item for item in metrics["advice"] if item["do"] == "check_look_alike"]
    assert item["kols"] == ["madonna", "twin"] and item["chips"]
    assert all(slug in ("madonna", "twin") and chip.startswith(slug) for slug, chip in item["chips"])
    expected = metrics["expected"]
    assert expected["photos"] == len(X) + 4 and 0 < expected["sure_right"] <= expected["named_right"] <= expected["photos"]


def test_how_sure_in_words():
    assert [report.how_sure(c) for c in (1.0, 0.99, 0.95, 0.9, 0.8, 0.7, 0.5)] == [
        "almost certainly", "almost certainly", "very likely", "very likely", "probably", "probably", "possibly"]


def test_forget_drops_a_kol_from_every_part_of_the_report():
    X, slugs, chips = _crowd()
    model = train(X, slugs, {}, chips=chips)
    report.roster_report(model)
    metrics = model.meta["metrics"]
    gone = next(item["kols"][0] for item in metrics["advice"] if item["do"] == "check_look_alike")
    report.forget(metrics, gone)
    assert gone not in metrics["per_kol"] and gone not in metrics["expected"]["per_kol"]
    assert all(gone not in item["kols"] for item in metrics["advice"])
    assert all(gone not in (p["a"], p["b"]) for p in metrics["look_alike"] + metrics["confused"])
    assert all(gone not in p[:2] for p in metrics["expected"]["wrong_pairs"])
