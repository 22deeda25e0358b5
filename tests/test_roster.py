"""The roster (issue 12): pool rename / merge / remove one chip, duplicate names and faces,
and the KOL pages (list, search, one page per KOL, actions) through the Flask app."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from shared.training import roster
from shared.core.errors import UserError
from shared.training.pool import Pool, name_key, save_chip
from shared.training.roster import matching_kols

from .builders import build_pool
from .conftest import FACES, FIVE, ROOT, needs_data, signed_in


LFW = FACES / "lfw_dev"


def _chip(seed):
    return np.random.default_rng(seed).integers(0, 255, (150, 150, 3), dtype=np.uint8)


def _staged(tmp_path, n, seed=0, centre=None):
    """``n`` chips with embeddings (near ``centre`` when given), as a job folder would hold them."""
    folder = tmp_path / f"job{seed}"
    rng = np.random.default_rng(seed)
    vecs = [(centre if centre is not None else np.full(128, seed + i / 100.0)) + rng.normal(0, 0.01, 128)
            for i in range(n)]
    ids = [save_chip(folder, _chip(seed * 100 + i), v) for i, v in enumerate(vecs)]
    return [folder / f"{cid}.png" for cid in ids]


def _files(pool):
    return {slug: sorted(p.stem for p in (pool.root / slug).glob("*.png")) for slug in pool.kols()}


# -- names ------------------------------------------------------------------------------

@pytest.mark.parametrize("a, b", [("Mindy Kaling", "mindy_kaling"), ("Mindy  KALING", "mindy-kaling"),
                                  ("Beyoncé", "beyonce"), ("Zoë Kravitz", "Zoe_Kravitz"), ("周杰伦", "周杰伦 ")])
def test_names_that_differ_in_case_spaces_underscores_accents_are_the_same(a, b):
    assert name_key(a) == name_key(b)


@pytest.mark.parametrize("a, b", [("Mindy Kaling", "Mindy Kalling"), ("Ben", "Bena"), ("周杰伦", "周杰")])
def test_different_names_stay_different(a, b):
    assert name_key(a) != name_key(b)


def test_import_under_a_near_duplicate_name_goes_to_the_existing_kol(tmp_path):
    pool = Pool(tmp_path / "pool")
    slug = pool.add("mindy_kaling", _staged(tmp_path, 2))
    assert pool.same_name("Mindy Kaling") == slug
    assert pool.add("Mindy Kaling", _staged(tmp_path, 3, seed=1)) == slug
    assert pool.names() == {slug: "mindy_kaling"} and pool.stats()["chips"] == 5


# -- rename -----------------------------------------------------------------------------

def test_rename_keeps_the_slug_and_the_photos(tmp_path):
    pool = Pool(tmp_path / "pool")
    slug = pool.add("ben_afflek", _staged(tmp_path, 3))
    other = pool.add("Madonna", _staged(tmp_path, 1, seed=3))
    assert pool.rename(slug, "  Ben   Affleck ") == "Ben Affleck"
    assert pool.names() == {slug: "Ben Affleck", other: "Madonna"}
    assert pool.display_names()[slug] == "Ben Affleck"
    assert len(pool.kols()[slug]["chips"]) == 3
    # a later import under the new name (or the old one) adds to the same KOL
    assert pool.add("Ben Affleck", _staged(tmp_path, 1, seed=4)) == slug
    with pytest.raises(UserError) as err:
        pool.rename(slug, "madonna")  # another KOL's name: merge instead
    assert err.value.status == 409 and "merge" in err.value.message
    with pytest.raises(UserError) as err:
        pool.rename("nobody-00000000", "X")
    assert err.value.status == 404
    with pytest.raises(UserError):
        pool.rename(slug, "  ")


def test_rename_does_not_ask_for_retraining_but_other_changes_do(tmp_path, monkeypatch):
    from shared.training import pool as pool_module

    pool = Pool(tmp_path / "pool")
    monkeypatch.setattr(pool_module, "_now", lambda: "2026-01-01T10:00:00+00:00")  # the import's time
    a = pool.add("A", _staged(tmp_path, 3))
    b = pool.add("B", _staged(tmp_path, 2, seed=1))
    meta = {"names": {a: "A", b: "B"}, "samples": 5, "created": "2026-01-01T10:00:00+00:00"}  # trained then
    assert not pool.needs_training(meta)
    # every change from here on is an hour later (times have one-second resolution: set, not slept)
    monkeypatch.setattr(pool_module, "_now", lambda: "2026-01-01T11:00:00+00:00")
    pool.rename(a, "Alpha")
    assert not pool.needs_training(meta)
    assert pool.needs_training(None)
    pool.remove_chip(a, pool.kols()[a]["chips"][0])
    assert pool.needs_training(meta)


# -- merge ------------------------------------------------------------------------------

def test_merge_moves_every_photo_and_old_answers_show_the_new_name(tmp_path):
    pool = Pool(tmp_path / "pool")
    shared_chip = _staged(tmp_path, 1, seed=9)
    a = pool.add("Mindy Kaling", _staged(tmp_path, 3) + shared_chip)
    b = pool.add("M. Kaling", _staged(tmp_path, 2, seed=1) + shared_chip)
    name, moved = pool.merge(b, a)
    assert (name, moved) == ("Mindy Kaling", 2)  # the chip both had is not doubled
    assert list(pool.kols()) == [a] and len(pool.kols()[a]["chips"]) == 6
    assert _files(pool) == {a: sorted(pool.kols()[a]["chips"])}  # files moved, source folder gone
    assert not (pool.root / b).exists()
    assert pool.display_names() == {a: "Mindy Kaling", b: "Mindy Kaling"}  # an older model's answer b
    X, slugs, _ = pool.embeddings()
    assert X.shape == (6, 128) and set(slugs) == {a}
    with pytest.raises(UserError):
        pool.merge(a, a)
    with pytest.raises(UserError) as err:
        pool.merge(b, a)
    assert err.value.status == 404


def test_a_merge_can_be_undone_with_the_photos_that_moved(tmp_path):
    """Undo puts the merged KOL back under its slug and name with the photos that came from it (the
    one both had stays with the target), the answer of an older model shows its own name again."""
    pool = Pool(tmp_path / "pool")
    shared_chip = _staged(tmp_path, 1, seed=9)
    a = pool.add("Naomi_Watts", _staged(tmp_path, 3) + shared_chip)
    b = pool.add("Naomi", _staged(tmp_path, 2, seed=1) + shared_chip)
    own_b = [c for c in pool.kols()[b]["chips"] if c not in pool.kols()[a]["chips"]]
    before = pool.kols()
    pool.merge(b, a)
    (record,) = pool.merges(a)
    assert (record["source"], record["name"], record["target"], record["into"]) == (b, "Naomi", a, "Naomi_Watts")
    assert record["chips"] == own_b and pool.merges("someone-else") == []
    back = pool.unmerge(record["id"])
    assert back["moved_back"] == own_b and back["undone"]
    kols = pool.kols()
    assert kols[b]["name"] == "Naomi" and kols[b]["chips"] == own_b
    assert kols[a]["chips"] == before[a]["chips"] and _files(pool) == {a: sorted(before[a]["chips"]), b: sorted(own_b)}
    assert pool.display_names() == {a: "Naomi_Watts", b: "Naomi"}
    assert pool.merges() == [] and len(pool.merges(undone=True)) == 1
    with pytest.raises(UserError) as err:
        pool.unmerge(record["id"])  # undone already
    assert err.value.status == 404


def test_where_a_kol_went_is_its_newest_merge(tmp_path):
    """Merged into one KOL, undone, merged into another: the Models page and the retrain report say the second."""
    pool = Pool(tmp_path / "pool")
    a = pool.add("Ann", _staged(tmp_path, 2))
    b = pool.add("Bea", _staged(tmp_path, 2, seed=1))
    c = pool.add("Cat", _staged(tmp_path, 2, seed=2))
    pool.merge(a, b)
    pool.unmerge(pool.merges(b)[0]["id"])
    pool.merge(a, c)
    assert pool.merged_into() == {a: c}


def test_undoing_a_merge_is_refused_when_it_no_longer_fits(tmp_path):
    pool = Pool(tmp_path / "pool")
    a = pool.add("A", _staged(tmp_path, 2))
    b = pool.add("B", _staged(tmp_path, 2, seed=1))
    pool.merge(b, a)
    mid = pool.merges()[0]["id"]
    pool.add("b", _staged(tmp_path, 1, seed=3))  # a new "B" (same name key) came in since
    with pytest.raises(UserError) as err:
        pool.unmerge(mid)
    assert err.value.status == 409 and "in the pool again" in str(err.value)
    pool.remove(pool.same_name("b"))
    for cid in pool.merges()[0]["chips"]:
        pool.remove_chip(a, cid)  # the moved photos were removed since: nothing to move back
    with pytest.raises(UserError) as err:
        pool.unmerge(mid)
    assert err.value.status == 409 and "nothing to move back" in str(err.value)
    assert set(pool.kols()) == {a}
    pool.remove(a)  # deleting the KOL a merge went into drops its record: there is nothing to undo
    assert pool.merges(undone=True) == []


CRASH = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {root!r})
    from shared.training import pool as P
    pool = P.Pool({pool!r})
    real, calls = P.atomic_write_bytes, []
    def dying(path, data):
        calls.append(path)
        if len(calls) == {after}:
            os._exit(9)
        real(path, data)
    P.atomic_write_bytes = dying
    P.atomic_write_json = lambda *a, **k: os._exit(9)
    pool.{call}
""")


@pytest.mark.parametrize("call, after", [("merge(b, a)", 2), ("merge(b, a)", 99), ("rename(a, 'New')", 99),
                                         ("remove_chip(a, cid)", 99)])
def test_a_crash_in_the_middle_leaves_the_pool_as_it_was(tmp_path, call, after):
    pool = Pool(tmp_path / "pool")
    a = pool.add("A", _staged(tmp_path, 3))
    b = pool.add("B", _staged(tmp_path, 3, seed=1))
    before = json.loads(pool.manifest_path.read_text())
    cid = pool.kols()[a]["chips"][0]
    script = f"a, b, cid = {a!r}, {b!r}, {cid!r}\n" + CRASH.format(root=str(ROOT), pool=str(pool.root),
                                                                  after=after, call=call)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == 9, proc.stderr.decode()
    assert json.loads(pool.manifest_path.read_text()) == before
    assert pool.embeddings()[0].shape == (6, 128)  # every listed chip is still readable


# -- remove one chip ----------------------------------------------------------------------

def test_remove_one_chip(tmp_path):
    pool = Pool(tmp_path / "pool")
    slug = pool.add("A", _staged(tmp_path, 2))
    first, second = pool.kols()[slug]["chips"]
    assert pool.remove_chip(slug, first) == 1
    assert pool.kols()[slug]["chips"] == [second] and _files(pool) == {slug: [second]}
    with pytest.raises(UserError) as err:
        pool.remove_chip(slug, first)
    assert err.value.status == 404
    with pytest.raises(UserError) as err:
        pool.remove_chip(slug, second)  # the last one: delete the KOL instead
    assert err.value.status == 409
    with pytest.raises(UserError):
        pool.remove_chip(slug, "../manifest")


# -- faces that match a pool KOL's ---------------------------------------------------------

def test_matching_kols_flags_the_same_faces_only():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 0.09, 128), rng.normal(0, 0.09, 128)  # two people ~1.0 apart
    pool_X = np.vstack([a + rng.normal(0, 0.02, (5, 128)), b + rng.normal(0, 0.02, (5, 128))])
    model = roster.pool_model(pool_X, ["a"] * 5 + ["b"] * 5)
    same = matching_kols(a + rng.normal(0, 0.02, (4, 128)), model)
    assert [m["slug"] for m in same] == ["a"] and same[0]["share"] == 1.0 and same[0]["faces"] == 4
    assert same[0]["confidence"] >= 0.99 and same[0]["sure"] == "almost certainly"
    stranger = rng.normal(0, 0.09, 128)
    assert matching_kols(stranger + rng.normal(0, 0.02, (4, 128)), model) == []
    assert matching_kols(np.zeros((0, 128)), model) == []


def test_the_pool_model_is_trained_once_per_version_of_the_pool(tmp_path):
    """The import page checks duplicates on every view: the same pool gives the same model object,
    and any change of the pool (a KOL added, a photo removed) gives a new one that knows it."""
    pool = Pool(tmp_path / "pool")
    assert roster.current_pool_model(pool) is None
    a = pool.add("Ann", _staged(tmp_path, 3, seed=1))
    first = roster.current_pool_model(pool)
    assert roster.current_pool_model(pool) is first and list(first.classes) == [a]
    b = pool.add("Bo", _staged(tmp_path, 3, seed=5))
    second = roster.current_pool_model(pool)
    assert second is not first and sorted(second.classes) == sorted([a, b])
    pool.remove_chip(b, pool.kols()[b]["chips"][0])
    third = roster.current_pool_model(pool)
    assert third is not second and len(third.X) == 5


@needs_data
def test_real_faces_of_a_kol_under_another_name_are_flagged(tmp_path, celeb_faces):
    """Real dlib embeddings: Mindy Kaling's other photos match her pool KOL, not anyone else's."""
    pool_X, slugs = [], []
    for person, found in celeb_faces.items():
        for _, face in found[:6]:
            pool_X.append(face.embedding)
            slugs.append(person)
    for person, found in celeb_faces.items():
        new = np.array([f.embedding for _, f in found[6:12]])
        matches = matching_kols(new, roster.pool_model(np.array(pool_X), slugs))
        assert [m["slug"] for m in matches] == [person], (person, matches)
        others = [(e, s) for e, s in zip(pool_X, slugs) if s != person]
        assert matching_kols(new, roster.pool_model(np.array([e for e, _ in others]), [s for _, s in others])) == [], person


def _lfw_face(relpath):
    """The face nearest the centre of an lfw_dev photo (LFW photos are centred on their person)."""
    from shared.faces import engine, images

    rgb = images.load_image(LFW / relpath)
    found = engine.analyze(rgb)
    h, w = rgb.shape[:2]
    return min(found, key=lambda f: ((f.box[0] + f.box[2]) / 2 - h / 2) ** 2 + ((f.box[1] + f.box[3]) / 2 - w / 2) ** 2)


@needs_data
@pytest.mark.skipif(not LFW.is_dir(), reason=f"lfw_dev photos not found at {LFW}")
def test_the_duplicate_check_asks_with_the_models_own_answer(tmp_path, celeb_faces):
    """Issue 25 ("it asked whether Grandma is Madonna from one photo"): pool = the five_celebs KOLs,
    6 photos each. One real photo of Michelle Yeoh, and one of Rudolph Giuliani, from lfw_dev are not
    asked about (the old rule, nearest pool photo within 0.6, asked whether they were madonna and
    elton_john); three lfw_dev photos of Madonna under the name "Madonna Ciccone" are, with how sure."""
    pool, _ = build_pool(tmp_path / "pool", {p: [f for _, f in celeb_faces[p][:6]] for p in celeb_faces}, tmp_path / "s")
    job_chips = tmp_path / "job" / "chips"
    cases = [("Michelle Yeoh", ["Michelle_Yeoh/Michelle_Yeoh_0002.jpg"]),
             ("Rudy G", ["Rudolph_Giuliani/Rudolph_Giuliani_0007.jpg"]),
             ("Madonna Ciccone", [f"Madonna/Madonna_000{i}.jpg" for i in (1, 2, 3)])]
    kols = []
    for i, (name, files) in enumerate(cases):
        faces = [_lfw_face(f) for f in files]
        kols.append({"name": name, "kept": [{"crop": save_chip(job_chips / str(i), f.chip, f.embedding)} for f in faces]})
    warnings = roster.import_warnings(pool, kols, job_chips)
    assert set(warnings) == {2}, warnings
    [match] = warnings[2]["looks_like"]
    assert match["name"] == "madonna" and match["faces"] == 3 and match["photos"] == 3
    assert match["sure"] in ("almost certainly", "very likely") and match["confidence"] >= 0.9


def test_pick_faces_takes_the_kols_face_in_a_group_photo():
    rng = np.random.default_rng(1)
    me, other = rng.normal(0, 0.09, 128), rng.normal(0, 0.09, 128)
    known = me + rng.normal(0, 0.02, (3, 128))
    group = [{"crop": "o", "embedding": list(other)}, {"crop": "m", "embedding": list(me + 0.01)}]
    assert roster.pick_faces(group, known) == ([group[1]], None)
    assert roster.pick_faces(group[:1], known) == ([group[0]], None)  # one face: taken
    chosen, why = roster.pick_faces([group[0], group[0]], known)
    assert chosen == [] and "none looks like" in why
    assert roster.pick_faces([], known) == ([], "no face found")


# -- the KOL pages (Flask app, real pool on disk) ---------------------------------------------

HTML = {"Accept": "text/html"}
JSON = {"Accept": "application/json"}


@pytest.fixture
def roster_app(main_app, data_dir, tmp_path):
    pool = Pool(data_dir / "pool")
    slugs = {"mindy": pool.add("mindy_kaling", _staged(tmp_path, 3)),
             "mindy2": pool.add("Mindy K.", _staged(tmp_path, 2, seed=1)),
             "zoe": pool.add("Zoë Kravitz", _staged(tmp_path, 1, seed=2))}
    return signed_in(main_app.test_client(), "admin"), pool, slugs


def test_kol_list_search_and_page(roster_app):
    client, pool, slugs = roster_app
    body = client.get("/kols", headers=JSON).get_json()
    assert [k["name"] for k in body["kols"]] == ["Mindy K.", "mindy_kaling", "Zoë Kravitz"]
    assert all(k["added"] for k in body["kols"]) and body["needs_training"] is True
    assert [k["name"] for k in client.get("/kols?q=ZOE", headers=JSON).get_json()["kols"]] == ["Zoë Kravitz"]
    assert [k["name"] for k in client.get("/kols?q=mindy ka", headers=JSON).get_json()["kols"]] == ["mindy_kaling"]
    page = client.get("/kols").get_data(True)
    assert f'href="/kols/{slugs["zoe"]}"' in page and "Retrain now" in page and '<time datetime="' in page
    kol = client.get(f"/kols/{slugs['mindy']}", headers=JSON).get_json()
    assert kol["name"] == "mindy_kaling" and kol["count"] == 3 and len(kol["chips"]) == 3
    html = client.get(f"/kols/{slugs['mindy']}").get_data(True)
    for cid in kol["chips"]:
        assert f"/similar/photo/{slugs['mindy']}/{cid}.png" in html
    assert client.get("/kols/nobody-00000000").status_code == 404
    assert client.get("/kols/../etc").status_code == 404
    assert f'href="/kols/{slugs["mindy"]}"' in client.get("/").get_data(True)  # home thumbnails are links


def test_kol_actions_rename_remove_merge_delete(roster_app):
    client, pool, slugs = roster_app
    r = client.post(f"/kols/{slugs['mindy']}/rename", data={"name": "Mindy Kaling"})
    assert r.status_code == 303 and pool.names()[slugs["mindy"]] == "Mindy Kaling"
    r = client.post(f"/kols/{slugs['mindy2']}/rename", data={"name": "mindy kaling"}, headers=JSON)
    assert r.status_code == 409 and "merge" in r.get_json()["error"]
    cid = pool.kols()[slugs["mindy"]]["chips"][0]
    assert client.post(f"/kols/{slugs['mindy']}/photos/{cid}/remove").status_code == 303
    assert cid not in pool.kols()[slugs["mindy"]]["chips"]
    r = client.post(f"/kols/{slugs['mindy2']}/merge", data={"into": slugs["mindy"]}, headers=JSON)
    assert r.status_code == 200 and r.get_json()["count"] == 4 and slugs["mindy2"] not in pool.kols()
    assert slugs["mindy2"] not in pool.kols()
    r = client.post(f"/kols/{slugs['zoe']}/delete")
    assert r.status_code == 303 and "deleted=" in r.headers["Location"] and slugs["zoe"] not in pool.kols()
    assert client.post(f"/kols/{slugs['zoe']}/delete", headers=JSON).status_code == 404
    assert client.post(f"/kols/{slugs['mindy']}/merge", data={"into": "nobody-00000000"}).status_code == 404


def test_the_merge_form_chooses_nobody_and_shows_both_before_merging(roster_app):
    """Nothing is preselected; without a choice nothing merges (a sentence says why); the page before
    the merge names both KOLs with their photos, and only its POST merges."""
    client, pool, slugs = roster_app
    mindy, mindy2 = slugs["mindy"], slugs["mindy2"]
    html = client.get(f"/kols/{mindy2}").get_data(True)
    select = html[html.index('<select id="into"'):html.index("</select>", html.index('<select id="into"'))]
    assert '<option value="" selected>choose…</option>' in select and select.count("selected") == 1
    before = pool.kols()
    for r in (client.post(f"/kols/{mindy2}/merge", data={}, headers=JSON),
              client.post(f"/kols/{mindy2}/merge", data={"into": ""}, headers=JSON),
              client.get(f"/kols/{mindy2}/merge?into=", headers=JSON)):
        assert r.status_code == 400 and "Choose the KOL that is the same person as Mindy K." in r.get_json()["error"]
    assert client.post(f"/kols/{mindy2}/merge", data={"into": mindy2}, headers=JSON).status_code == 400
    page = client.get(f"/kols/{mindy2}/merge?into={mindy}")
    text = page.get_data(True)
    assert page.status_code == 200 and "Merge Mindy K. into mindy_kaling?" in text
    for slug in (mindy, mindy2):
        for cid in pool.kols()[slug]["chips"]:
            assert f"/similar/photo/{slug}/{cid}.png" in text
    assert pool.kols() == before  # showing the two changes nothing
    member = signed_in(client.application.test_client(), "member")
    assert member.get(f"/kols/{mindy2}/merge?into={mindy}", headers=JSON).status_code == 403


def test_merge_then_undo_from_the_kol_page(roster_app, data_dir):
    """The merge says what it did and the KOL it went into offers "Undo merge", which brings the KOL
    back, takes its photos out of the current model, and is audited like the merge."""
    from shared.recognition.store import ModelStore
    from shared.training.train import retrain

    client, pool, slugs = roster_app
    mindy, mindy2 = slugs["mindy"], slugs["mindy2"]
    browser = client.application.test_client()
    browser.environ_base["HTTP_AUTHORIZATION"] = client.environ_base["HTTP_AUTHORIZATION"]
    r = browser.post(f"/kols/{mindy2}/merge", data={"into": mindy}, follow_redirects=True)
    text = r.get_data(True)
    assert "Mindy K. was merged into mindy_kaling: 2 photos moved." in text and "Undo merge" in text
    store = ModelStore(data_dir / "models")
    retrain(pool, store)
    assert store.current().counts[store.current().classes.index(mindy)] == 5
    body = client.get(f"/kols/{mindy}", headers=JSON).get_json()
    (merge,) = body["merges"]
    assert merge["name"] == "Mindy K." and len(merge["chips"]) == 2
    assert client.post(f"/kols/{mindy}/unmerge", data={"merge": "000000000000"}, headers=JSON).status_code == 404
    r = browser.post(f"/kols/{mindy}/unmerge", data={"merge": merge["id"]}, follow_redirects=True)
    assert r.status_code == 200 and "Mindy K. is back with 2 photos" in r.get_data(True)
    assert pool.kols()[mindy2]["name"] == "Mindy K." and len(pool.kols()[mindy]["chips"]) == 3
    model = store.current()
    assert model.counts[model.classes.index(mindy)] == 3 and mindy2 not in model.classes
    assert client.get(f"/kols/{mindy2}", headers=JSON).get_json()["needs_training"] is True
    actions = [(row["action"], row["detail"]) for row in client.application.extensions["accounts"].audit(0, 10)[0]]
    assert any(a == "kol.unmerge" and merge["id"] in str(d) for a, d in actions), actions
    assert any(a == "kol.merge" for a, _ in actions)


def test_rename_and_photo_removal_say_so(roster_app):
    client, pool, slugs = roster_app
    browser = client.application.test_client()
    browser.environ_base["HTTP_AUTHORIZATION"] = client.environ_base["HTTP_AUTHORIZATION"]
    r = browser.post(f"/kols/{slugs['mindy']}/rename", data={"name": "Mindy <Kaling>"}, follow_redirects=True)
    assert "Renamed mindy_kaling to Mindy &lt;Kaling&gt;" in r.get_data(True)
    cid = pool.kols()[slugs["mindy"]]["chips"][0]
    r = browser.post(f"/kols/{slugs['mindy']}/photos/{cid}/remove", follow_redirects=True)
    assert "The photo was removed from Mindy &lt;Kaling&gt;: 2 photos left" in r.get_data(True)


def test_delete_from_the_kol_page_removes_them_from_every_model_version(roster_app, data_dir):
    """The KOL page's delete reaches the models: no stored version keeps the KOL's embeddings."""
    from shared.training.train import retrain
    from shared.recognition.store import ModelStore

    client, pool, slugs = roster_app
    store = ModelStore(data_dir / "models")
    retrain(pool, store)
    first = store.current_version()
    retrain(pool, store, full=True)
    assert len(store.versions()) == 2 and slugs["zoe"] in store.current().classes
    assert client.post(f"/kols/{slugs['zoe']}/delete").status_code == 303
    for version in (first, store.current_version()):
        model = store.load(version)
        assert slugs["zoe"] not in model.classes and len(model.X) == 5, version  # 3 + 2 photos left


def test_a_removed_photo_leaves_every_model_version_at_once(roster_app, data_dir):
    """Removing one photo on the KOL page takes its embedding out of every stored version and moves
    the KOL's centroid to the mean of the photos left, without a retraining."""
    import numpy as np

    from shared.training.train import retrain
    from shared.recognition.store import ModelStore

    client, pool, slugs = roster_app
    store = ModelStore(data_dir / "models")
    retrain(pool, store)
    first = store.current_version()
    retrain(pool, store, full=True)
    mindy = slugs["mindy"]
    cid, *rest = pool.kols()[mindy]["chips"]
    assert client.post(f"/kols/{mindy}/photos/{cid}/remove").status_code == 303
    _, left = pool.kol_embeddings(mindy)
    for version in (first, store.current_version()):
        model = store.load(version)
        k = model.classes.index(mindy)
        lo, hi = model.offsets[k], model.offsets[k + 1]
        assert list(np.asarray(model.chips, dtype=str)[lo:hi]) == rest and len(model.X) == 5, version
        assert np.allclose(model.centroids[k], left.mean(0), atol=1e-5)
        assert store.meta(version)["samples"] == 5
    # the other KOLs are untouched, and a photo the model never held changes nothing
    assert store.forget(slugs["zoe"], chips=["not-in-the-model"]) == []


@needs_data
def test_add_photos_to_an_existing_kol(main_app, data_dir, tmp_path, celeb_faces):
    """Photos and a zip of photos for one KOL, from their page: detected, aligned, embedded, added."""
    import io
    import zipfile

    madonna = [face for _, face in celeb_faces["madonna"][:3]]
    pool, [slug] = build_pool(data_dir / "pool", {"Madonna": madonna}, tmp_path / "c")
    client = signed_in(main_app.test_client(), "admin")
    photos = sorted((FIVE / "madonna").glob("val_*.jpg"))[:3]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("more/deeper/x.jpg", photos[2].read_bytes())
        zf.writestr("readme.txt", b"hi")
    upload = {"file": [(io.BytesIO(photos[0].read_bytes()), "a.jpg"), (io.BytesIO(photos[1].read_bytes()), "b.jpg"),
                       (io.BytesIO(buf.getvalue()), "more.zip")]}
    r = client.post(f"/kols/{slug}/photos", data=upload, headers=JSON, content_type="multipart/form-data")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["added"] == 3 and body["count"] == 6 and len(pool.kols()[slug]["chips"]) == 6
    assert [s["name"] for s in body["skipped"]] == ["readme.txt"]
    # a text file sent as a photo is refused and nothing changes
    r = client.post(f"/kols/{slug}/photos", data={"file": (io.BytesIO(b"x"), "notes.txt")}, headers=JSON)
    assert r.status_code == 415 and len(pool.kols()[slug]["chips"]) == 6
    assert not list((data_dir / "tmp").iterdir())  # scratch folders are cleaned up


@needs_data
def test_import_warnings_same_name_and_same_faces(tmp_path, celeb_faces):
    """Before an import: a near-identical name is the same KOL; a new name with an existing
    KOL's faces is flagged with both sets of chips; a genuinely new person is not flagged."""
    pool, _ = build_pool(tmp_path / "pool", {person: [f for _, f in celeb_faces[person][:6]]
                                             for person in ("mindy_kaling", "elton_john")}, tmp_path / "s")
    job_chips = tmp_path / "job" / "chips"
    kols = []
    for i, (name, person) in enumerate([("Mindy Kaling", "mindy_kaling"), ("E. John", "elton_john"),
                                        ("Madonna", "madonna")]):
        kept = [{"crop": save_chip(job_chips / str(i), f.chip, f.embedding)} for _, f in celeb_faces[person][6:10]]
        kols.append({"name": name, "kept": kept})
    warnings = roster.import_warnings(pool, kols, job_chips)
    assert set(warnings) == {0, 1}
    assert warnings[0]["same_name"] == pool.same_name("mindy_kaling") and warnings[0]["looks_like"] == []
    assert warnings[1]["same_name"] is None
    [match] = warnings[1]["looks_like"]
    assert match["name"] == "elton_john" and len(match["chips"]) == 6 and match["share"] >= 0.5
    assert match["faces"] == 4 and match["sure"] in ("almost certainly", "very likely")


def test_import_page_offers_merge_for_duplicates(process_app, data_dir, tmp_path):
    """The wizard's import page: a near-identical name is the same KOL (merge or replace); a new
    name with a pool KOL's faces is shown with both sets of photos and can be added to them."""
    from shared.training.jobs import JobStore

    from . import _synth

    job = _synth.aligned_job(data_dir, kols=("Mindy Kaling", "Zed"), per_kol=6)
    store = JobStore(data_dir / "jobs")
    pool = Pool(data_dir / "pool")
    mindy = pool.add("mindy_kaling", _staged(tmp_path, 2, seed=7))
    zed_chips = sorted((store.folder(job) / "chips" / "1").glob("*.png"))
    twin = pool.add("Zed Twin", zed_chips[:3])
    client = signed_in(process_app.test_client(), "admin")
    assert client.post("/clean", data={"job": job}).status_code == 303
    body = client.get(f"/import_clean?job={job}", headers=JSON).get_json()
    assert body["kols"]["Mindy Kaling"]["same_name"] == mindy
    assert [m["slug"] for m in body["kols"]["Zed"]["looks_like"]] == [twin]
    page = client.get(f"/import_clean?job={job}").get_data(True)
    assert "Same KOL as <strong>mindy_kaling</strong>" in page
    assert "<strong>Zed Twin</strong>, already in the pool" in page and f'name="into-1" value="{twin}"' in page
    assert page.count("/pool_chip?kol=" + twin) == 3 and page.count(f"/chip?job={job}&amp;kol=1&amp;crop=") >= 6
    r = client.post("/import_result", data={"job": job, "kol": ["Mindy Kaling", "Zed"], "into-1": twin})
    assert r.status_code == 303
    kols = pool.kols()
    assert set(kols) == {mindy, twin}  # no second Mindy, no new "Zed"
    assert kols[mindy]["name"] == "mindy_kaling" and len(kols[mindy]["chips"]) == 2 + 6
    assert len(kols[twin]["chips"]) == 6


def test_members_see_only_what_they_can_do(roster_app):
    """Issue 25: a member reads no admin wording on the roster pages (no "upload a training zip", no
    "Remove photos…" without a button, no "Manage the KOLs"); an admin still does."""
    client, pool, slugs = roster_app
    member = signed_in(client.application.test_client(), "member")
    admin_words = ("upload a training zip", "Remove photos that show someone else", "Manage the KOLs",
                   "Undo merge", "Merge into another KOL")
    pages = [member.get("/kols"), member.get(f"/kols/{slugs['mindy']}"), member.get("/")]
    assert all(r.status_code == 200 for r in pages)
    text = "".join(r.get_data(True) for r in pages)
    assert not [w for w in admin_words if w in text]
    assert "Open a KOL to see the photos" in text and "An admin can retrain it." in text
    admin = "".join(client.get(p).get_data(True) for p in ("/kols", f"/kols/{slugs['mindy']}", "/"))
    assert all(w in admin for w in admin_words[:3])
