import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from shared.recognition.model import SIMILARITY_SCALE, train
from shared.training.train import retrain
from shared.faces import engine
from shared.recognition.store import ModelStore, map_arrays
from shared.core.errors import UserError
from shared.faces.images import load_image
from shared.training.pool import Pool, save_chip

from .conftest import KNN, five_celebs_photos, needs_data, signed_in

ROOT = Path(__file__).resolve().parent.parent


def _training_set(celeb_faces):
    X = np.array([f.embedding for person in celeb_faces for _, f in celeb_faces[person]])
    slugs = [person for person in celeb_faces for _ in celeb_faces[person]]
    return X, slugs


def _people(n_kols, per_kol, seed=0, spread=0.025):
    """Synthetic dlib-like embeddings: ``(X, slugs, centres)``, KOLs named ``k0, k1, ...``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 0.06, size=(n_kols, 128))
    X = np.concatenate([c + rng.normal(0, spread, size=(per_kol, 128)) for c in centres])
    return X, [f"k{i}" for i in range(n_kols) for _ in range(per_kol)], centres


@needs_data
def test_trained_model_names_held_back_photos_and_refuses_strangers(celeb_faces, tmp_path):
    X, slugs = _training_set(celeb_faces)
    model = train(X, slugs, {s: s.replace("_", " ").title() for s in set(slugs)})
    assert model.meta["identities"] == 5 and model.meta["samples"] == len(X)

    right = total = 0
    for person, paths in five_celebs_photos("val_").items():
        for path in paths:
            found = engine.analyze(load_image(path))
            if len(found) != 1:
                continue
            total += 1
            right += model.predict([found[0].embedding])[0].slug == person
    assert total >= 20 and right / total >= 0.9

    strangers = [f for p in sorted((KNN / "train").rglob("*.jp*g"))
                 for f in engine.analyze(load_image(p))[:1]]
    answers = [model.predict([f.embedding])[0] for f in strangers]
    assert len(answers) >= 7
    assert sum(not a.known for a in answers) / len(answers) >= 0.85


@needs_data
def test_save_load_round_trip_and_current_pointer(celeb_faces, tmp_path):
    X, slugs = _training_set(celeb_faces)
    store = ModelStore(tmp_path / "models")
    assert store.current_version() is None and store.current() is None
    model = train(X, slugs, {})
    version = store.save(model)
    assert store.current_version() == version
    loaded = store.current()
    assert loaded.version == version and loaded.classes == model.classes
    probe = X[::7]
    assert [p.slug for p in loaded.predict(probe)] == [p.slug for p in model.predict(probe)]
    assert store.current() is loaded  # cached until `current` changes
    assert not list((tmp_path / "models").rglob("*.pkl"))
    z = map_arrays(tmp_path / "models" / version)
    assert all(a.dtype != object for a in z.values())
    second = store.save(train(X[:40], slugs[:40], {}))
    assert store.current().version == second != version


def test_single_identity_and_similarity():
    rng = np.random.default_rng(0)
    centre = rng.normal(0, 0.06, size=128)
    X = centre + rng.normal(0, 0.02, size=(6, 128))
    model = train(X, ["solo"] * 6, {"solo": "Solo"})
    near, far = model.predict([centre]), model.predict([centre + rng.normal(0, 0.08, size=128)])
    near, far = near[0], far[0]
    assert near.known and near.slug == "solo" and not far.known and far.slug is None
    assert near.p_same > 0.5 > far.p_same
    assert near.confidence > 0.5 and far.confidence > 0.5  # a clear match and a clear stranger
    sims = model.similar(centre, k=3)
    assert len(sims) == 1 and sims[0][0] == "solo" and sims[0][1] > 0.9  # the face is the KOL's own centre


def test_empty_pool_is_a_clear_error():
    with pytest.raises(UserError):
        train(np.zeros((0, 128)), [], {})


def test_malformed_versions_are_refused(tmp_path):
    store = ModelStore(tmp_path)
    for bad in ["../../etc", "", "20260101-000000-zzzzzz"]:
        with pytest.raises(UserError):
            store.load(bad)
        with pytest.raises(UserError):
            store.switch(bad)
    (tmp_path / "current").write_text("../../evil")
    assert store.current_version() is None


def test_similarity_is_graded_fixed_and_half_at_the_scale():
    X, slugs, centres = _people(3, 8, seed=1)
    model = train(X, slugs, {})
    assert model.similarity(0.0) == 1.0
    assert abs(model.similarity(SIMILARITY_SCALE) - 0.5) < 1e-9
    assert model.similarity(2 * SIMILARITY_SCALE) < 0.1
    rows = model.similar(centres[1], k=5)
    assert [r[0] for r in rows][0] == "k1" and len(rows) == 3
    sims = [r[1] for r in rows]
    assert sims == sorted(sims, reverse=True)
    assert sims[0] > 0.5 > sims[1]
    assert model.similar(centres[1], k=1)[0][0] == "k1" and model.similar(centres[1], k=0) == []
    # comparable across retrains: the same face and KOL photos give the same similarity in a bigger model
    X2, slugs2, _ = _people(30, 8, seed=2)
    bigger = train(np.concatenate([X, X2]), slugs + [s + "x" for s in slugs2], {})
    assert bigger.similar(centres[1], k=1)[0][:2] == rows[0][:2]


def test_confidence_follows_the_evidence():
    """Confidence is how sure the answer shown is: a face walked away from a KOL is named with less and
    less confidence, then answered "unknown" with more and more confidence."""
    X, slugs, centres = _people(2, 8, seed=2)
    model = train(X, slugs, {})
    direction = np.random.default_rng(9).normal(0, 1, 128)
    direction /= np.linalg.norm(direction)
    answers = [model.predict([centres[0] + d * direction])[0] for d in np.linspace(0, 1.2, 13)]
    named = [a.confidence for a in answers if a.known]
    unknown = [a.confidence for a in answers if not a.known]
    assert answers[0].known and answers[0].slug == "k0" and not answers[-1].known
    assert {a.slug for a in answers if a.known} == {"k0"}
    assert named[0] > 0.9 and named[0] > named[-1]
    assert unknown[-1] > 0.9 and unknown[-1] > unknown[0]


def test_threshold_depends_on_photo_count_and_is_explained():
    X, slugs, _ = _people(4, 5)
    model = train(X, slugs, {})
    m = model.meta["metrics"]
    t = m["thresholds_by_photos"]
    # distances to an average of many photos are shorter for everyone: the limit tightens with n
    assert t["1"] > t["5"] >= t["20"] > 0.3
    assert "chosen on" in m["threshold_why"] and m["per_kol"] == {f"k{i}": 5 for i in range(4)}


def test_one_kol_names_at_most_one_face_per_photo():
    X, slugs, centres = _people(3, 6, seed=3)
    model = train(X, slugs, {})
    rng = np.random.default_rng(4)
    twins = [centres[0] + rng.normal(0, 0.03, 128), centres[0] + rng.normal(0, 0.005, 128)]
    alone = [model.predict([t])[0] for t in twins]
    assert [p.slug for p in alone] == ["k0", "k0"]  # each face alone would be k0
    together = model.predict(twins)
    named = [p.slug for p in together if p.slug]
    assert len(named) == len(set(named)) and named.count("k0") == 1
    assert together[1].slug == "k0"  # the closer (more confident) face keeps the name
    # faces of different KOLs in one photo are all named
    assert [p.slug for p in model.predict(centres)] == ["k0", "k1", "k2"]


def test_confused_pairs_cover_kols_with_one_photo():
    X, slugs, centres = _people(5, 4, seed=5)
    twin = centres[0] + np.random.default_rng(6).normal(0, 0.02, 128)  # a look-alike with one photo
    model = train(np.concatenate([X, twin[None, :]]), slugs + ["solo"], {})
    pairs = model.meta["metrics"]["confused"]
    assert pairs and {pairs[0]["a"], pairs[0]["b"]} == {"k0", "solo"}


def _store_with_versions(tmp_path, n=3):
    X, slugs, centres = _people(3, 5, seed=7)
    store = ModelStore(tmp_path / "models")
    versions = []
    for i in range(n):
        versions.append(store.save(train(X[: 10 + 5 * (i % 2)], slugs[: 10 + 5 * (i % 2)], {})))
    full = store.save(train(X, slugs, {"k1": "Kay One"}))
    versions.append(full)
    assert versions == sorted(set(versions))  # save names each version after it, in order: no wait needed
    return store, versions, X, slugs, centres


def test_forget_removes_a_kol_from_every_version(tmp_path):
    store, versions, X, slugs, centres = _store_with_versions(tmp_path)
    assert store.current().predict([centres[1]])[0].slug == "k1"
    changed = store.forget("k1")
    assert set(changed) == set(versions)  # every version held k1
    assert store.current().predict([centres[1]])[0].slug != "k1"
    k1_rows = X[[s == "k1" for s in slugs]].astype(np.float32)
    for version in versions:
        z = map_arrays(store.root / version)
        assert "k1" not in z["classes"].tolist()
        held = z["X"]
        assert not any(np.any(np.all(np.isclose(held, row), axis=1)) for row in k1_rows)
        meta = store.meta(version)
        assert "k1" not in meta["names"] and "k1" not in meta["metrics"]["per_kol"]
    assert store.forget("k1") == []


def test_forget_reaches_a_model_cached_by_another_store(tmp_path):
    store, _, _, _, centres = _store_with_versions(tmp_path, n=1)
    other = ModelStore(store.root)  # another server process's view
    assert other.current().predict([centres[1]])[0].slug == "k1"
    store.forget("k1")
    assert other.current().predict([centres[1]])[0].slug != "k1"


def test_prune_keeps_the_newest_and_never_the_current(tmp_path):
    store, versions, *_ = _store_with_versions(tmp_path, n=6)
    store.switch(versions[0])
    deleted = store.prune(3)
    left = store.versions()
    assert versions[0] in left and store.current_version() == versions[0]
    assert set(versions[-3:]) <= set(left) and len(left) == 4 and set(deleted) == set(versions[1:4])


def test_switch_changes_the_current_model(tmp_path):
    store, versions, *_ = _store_with_versions(tmp_path, n=2)
    assert store.switch(versions[0]) == versions[0]
    assert store.current().version == versions[0] and len(store.current().classes) == 2
    with pytest.raises(UserError) as err:
        store.switch("20990101-000000-abcdef")
    assert err.value.status == 404


# -- retrain over a real pool -----------------------------------------------------------------
def _pool(tmp_path, people):
    """A pool under tmp_path with the given ``{name: (n_photos, centre)}`` (chips are noise images)."""
    pool = Pool(tmp_path / "pool")
    rng = np.random.default_rng(len(people))
    items = []
    for name, (n, centre) in people.items():
        pngs = []
        for _ in range(n):
            chip = rng.integers(0, 255, size=(engine.CHIP_SIZE, engine.CHIP_SIZE, 3), dtype=np.uint8)
            cid = save_chip(tmp_path / "staging", chip, embedding=centre + rng.normal(0, 0.02, 128))
            pngs.append(tmp_path / "staging" / f"{cid}.png")
        items.append((name, pngs, False))
    pool.add_many(items)
    return pool


def test_retrain_is_incremental_and_prunes(tmp_path):
    centres = np.random.default_rng(11).normal(0, 0.06, size=(4, 128))
    pool = _pool(tmp_path, {"Ann": (4, centres[0]), "Bob": (3, centres[1])})
    store = ModelStore(tmp_path / "models")
    steps = []
    first = retrain(pool, store, progress=lambda d, t: steps.append((d, t)))
    assert steps[-1] == (3, 3) and first["identities"] == 2 and first["samples"] == 7
    assert first["metrics"]["incremental"] == {"reused": 0, "read": 7}
    staged = _pool(tmp_path / "more", {"Cy": (2, centres[2])})
    pool.add("Cy", [tmp_path / "more" / "pool" / s / f"{c}.png"
                    for s, info in staged.kols().items() for c in info["chips"]])
    second = retrain(pool, store)
    assert second["identities"] == 3 and second["metrics"]["incremental"] == {"reused": 7, "read": 2}
    assert second["metrics"]["compared"]["added"] == [pool.slug_for("Cy")]
    assert store.current().predict([centres[2]])[0].slug == pool.slug_for("Cy")
    assert retrain(pool, store, full=True)["metrics"]["incremental"]["reused"] == 0
    for _ in range(3):
        retrain(pool, store, keep=2)
    assert len(store.versions()) == 2


def test_two_trainings_at_once_one_gets_409(tmp_path):
    centres = np.random.default_rng(12).normal(0, 0.06, size=(2, 128))
    pool = _pool(tmp_path, {"Ann": (3, centres[0]), "Bob": (3, centres[1])})
    store = ModelStore(tmp_path / "models")
    inside = threading.Event()
    release = threading.Event()

    def slow(done, total):
        if done == 1:
            inside.set()
            release.wait(10)

    results = {}
    t = threading.Thread(target=lambda: results.setdefault("first", retrain(pool, store, slow)))
    t.start()
    assert inside.wait(10)
    with pytest.raises(UserError) as err:
        retrain(pool, store)
    assert err.value.status == 409
    release.set()
    t.join(10)
    assert results["first"]["identities"] == 2
    # and across processes: a training held by another process refuses this one
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from shared.recognition.store import training_lock\n"
         "with training_lock(sys.argv[1]):\n print('held', flush=True); time.sleep(30)", str(store.root)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError) as err:
            retrain(pool, store)
        assert err.value.status == 409
    finally:
        holder.kill()
        holder.wait()
    assert retrain(pool, store)["identities"] == 2  # free again once the holder is gone


def test_delete_and_import_during_a_training(tmp_path):
    centres = np.random.default_rng(13).normal(0, 0.06, size=(3, 128))
    pool = _pool(tmp_path, {"Ann": (3, centres[0]), "Bob": (3, centres[1])})
    store = ModelStore(tmp_path / "models")
    retrain(pool, store)
    bob = pool.slug_for("Bob")
    staged = _pool(tmp_path / "more", {"Cy": (2, centres[2])})
    cy_pngs = [tmp_path / "more" / "pool" / s / f"{c}.png" for s, info in staged.kols().items() for c in info["chips"]]

    def meanwhile(done, total):
        if done == 1:  # the pool was read; now a user deletes Bob and imports Cy
            pool.remove(bob)
            store.forget(bob)
            pool.add("Cy", cy_pngs)

    result = retrain(pool, store, meanwhile)
    assert bob not in store.meta(result["model_version"])["names"]
    for version in store.versions():
        assert bob not in map_arrays(store.root / version)["classes"].tolist()
    assert store.current().predict([centres[1]])[0].slug != bob
    assert result["identities"] == 1  # Cy came after the pool was read: the next training gets her
    assert retrain(pool, store)["identities"] == 2


def test_cross_validated_accuracy_counts_photos_closest_to_their_own_kol():
    X, slugs, centres = _people(3, 4, seed=8)
    model = train(X, slugs, {})
    assert model.meta["metrics"]["cv_accuracy"] == 1.0
    # a photo of k0 filed under k1 is closer to k0's average face: one miss out of 13
    wrong = train(np.concatenate([X, centres[:1]]), slugs + ["k1"], {})
    assert wrong.meta["metrics"]["cv_accuracy"] == round(12 / 13, 4)
    assert train(X[:4], slugs[:4], {}).meta["metrics"]["cv_accuracy"] is None


@pytest.mark.parametrize("route", ["/delete_kol", "/import_result"])  # its own route; the older form field too
def test_deleting_a_kol_in_the_wizard_forgets_them_in_every_model(process_app, data_dir, route):
    centres = np.random.default_rng(14).normal(0, 0.06, size=(2, 128))
    pool = _pool(data_dir, {"Ann": (3, centres[0]), "Bob": (3, centres[1])})
    store = ModelStore(data_dir / "models")
    retrain(pool, store)
    retrain(pool, store, full=True)
    bob = pool.slug_for("Bob")
    assert store.current().predict([centres[1]])[0].slug == bob
    r = signed_in(process_app.test_client(), "admin").post(route, data={"delete": bob},
                                                           headers={"Accept": "application/json"})
    assert r.status_code == 200 and r.get_json()["deleted"] == "Bob"
    assert store.current().predict([centres[1]])[0].slug is None
    for version in store.versions():
        z = map_arrays(store.root / version)
        assert bob not in z["classes"].tolist() and len(z["X"]) == 3
