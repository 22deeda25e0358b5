"""The review queue (issue 23, item 4): unsure answers queued, the three answers, "not X" negatives.

Unit tests of the veto rule and the queue's files run on synthetic embeddings; the app tests train
a model in the test on real five_celebs faces (three ``train_`` photos per person, so that
``elton_john/val_2.jpg`` is named below "sure") and go through the real main app: real dlib, real
files, the real accounts SQLite for the audit trail, the real process pool for batches.
"""
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from shared.core.errors import UserError
from shared.recognition import review
from shared.recognition.model import train
from shared.training.pool import Pool

from .builders import build_pool, one_face_each, save_model
from .conftest import FIVE, five_celebs_photos, needs_data, signed_in

JSON = {"Accept": "application/json"}
UNSURE = ("elton_john", "val_2.jpg")  # named elton_john below 0.9 by the model of FACES_PER_KOL photos
FACES_PER_KOL = 3


# -- the veto rule (numpy only) ---------------------------------------------------------------------
def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def toy():
    """A model of two KOLs, 'a' and 'b', with three photos each on a sphere of radius 1 (distances like dlib's)."""
    rng = np.random.default_rng(3)
    a, b = _unit(rng.normal(size=128)), _unit(rng.normal(size=128))
    photos = [_unit(a + 0.04 * rng.normal(size=128)) for _ in range(3)] + \
             [_unit(b + 0.04 * rng.normal(size=128)) for _ in range(3)]
    return train(np.array(photos), ["a"] * 3 + ["b"] * 3, {"a": "A", "b": "B"}), a, b, rng


def _negatives(rows, slugs):
    return review.Negatives(np.asarray(rows, np.float32).reshape(-1, 128), np.array(slugs, dtype=str),
                            np.array(["0" * 16] * len(slugs), dtype=str))


def test_the_reviewed_face_itself_is_no_longer_named_x_even_when_sure(toy):
    model, a, _b, rng = toy
    face = _unit(a + 0.35 * _unit(rng.normal(size=128)))
    before = model.predict(face[None, :])[0]
    assert before.slug == "a" and before.confidence >= review.SURE
    after = model.predict(face[None, :], negatives=_negatives([face], ["a"]))[0]
    assert after.slug is None and not after.known and after.confidence >= 0.5  # "unknown", the more likely answer


def _one_face(d_photo, d_not, p_right):
    """One face (at the origin's unit vector) with one candidate, KOL 0: ``dn`` = ``d_photo``, one "not 0" face
    ``d_not`` away, the rule's ``P`` = ``p_right`` and ``S`` = 0.2."""
    e = np.zeros(128)
    e[0] = 1.0
    neg = np.zeros(128)
    neg[0], neg[1] = 1.0, d_not
    args = (e[None, :], np.array([[0, 1]]), np.array([[p_right, 0.1]]), np.array([[0.2, 0.2]]),
            np.array([[d_photo, 0.9]]), ["a", "b"], _negatives([neg], ["a"]))
    return review.veto(*args)


def test_an_unsure_candidate_nearer_to_a_not_x_face_than_to_x_is_dropped():
    P, S = _one_face(d_photo=0.45, d_not=0.35, p_right=0.7)
    assert P[0].tolist() == [0.0, 0.1] and S[0, 0] == pytest.approx(0.9)  # unknown: 1 - the best P left


def test_a_veto_alone_never_makes_an_unknown_sure(toy):
    """The stranger side is raised to the odds of the candidates left, but not past SURE: a face whose only
    plausible KOL was vetoed is "unknown" and not shown as sure (before: S = 0.99, shown 0.98)."""
    P, S = review.veto(np.eye(128)[:1], np.array([[0, 1]]), np.array([[0.7, 0.01]]), np.array([[0.2, 0.2]]),
                       np.array([[0.45, 0.9]]), ["a", "b"],
                       _negatives([np.eye(128)[0] + 0.35 * np.eye(128)[1]], ["a"]))
    assert P[0].tolist() == [0.0, 0.01] and S[0, 0] == pytest.approx(review.SURE)
    model, a, _b, rng = toy
    face = _unit(a + 0.35 * _unit(rng.normal(size=128)))
    after = model.predict(face[None, :], negatives=_negatives([face], ["a"]))[0]
    assert not after.known and 0.5 <= after.confidence < review.SURE


def test_a_candidate_nearer_to_its_own_photo_stays():
    P, S = _one_face(d_photo=0.35, d_not=0.45, p_right=0.7)
    assert P[0].tolist() == [0.7, 0.1] and S[0].tolist() == [0.2, 0.2]


def test_a_sure_candidate_stays_unless_it_is_the_reviewed_face_itself():
    P, _ = _one_face(d_photo=0.45, d_not=0.35, p_right=0.95)
    assert P[0, 0] == 0.95
    P, _ = _one_face(d_photo=0.45, d_not=review.SAME_FACE / 2, p_right=0.95)
    assert P[0, 0] == 0.0


def test_a_not_x_face_does_not_hide_x_itself(toy):
    model, a, _b, rng = toy
    lookalike = _unit(a + 0.35 * _unit(rng.normal(size=128)))
    real = _unit(a + 0.03 * rng.normal(size=128))  # nearer to a's photos than to the lookalike
    answer = model.predict(real[None, :], negatives=_negatives([lookalike], ["a"]))[0]
    assert answer.slug == "a" and answer.confidence == model.predict(real[None, :])[0].confidence


def test_negatives_of_another_kol_or_none_change_nothing(toy):
    model, a, _b, rng = toy
    face = _unit(a + 0.3 * _unit(rng.normal(size=128)))
    plain = model.predict(face[None, :])[0]
    assert model.predict(face[None, :], negatives=None)[0] == plain
    assert model.predict(face[None, :], negatives=_negatives([face], ["b"]))[0] == plain
    assert model.predict(face[None, :], negatives=_negatives([face], ["gone-kol"]))[0] == plain


# -- the queue's files (synthetic faces) ---------------------------------------------------------------
class FakeFace:
    """A face as :func:`shared.faces.engine.analyze` gives one: a box, a 150x150 chip, an embedding."""

    def __init__(self, seed):
        rng = np.random.default_rng(seed)
        self.box = (10, 60, 60, 10)
        self.chip = rng.integers(0, 255, (150, 150, 3), dtype=np.uint8)
        self.embedding = _unit(rng.normal(size=128))


def _obj(conf=0.6, identity="A", known=True):
    return {"number": 1, "box": {}, "identity": identity, "confidence": conf, "known": known}


def _add(queue, face, conf=0.6):
    rgb = np.zeros((80, 80, 3), np.uint8)
    cands = [{"slug": "a", "name": "A", "distance": 0.5, "similarity": 0.4},
             {"slug": "b", "name": "B", "distance": 0.6, "similarity": 0.3}]
    return queue.add(rgb, face, _obj(conf), cands, {"kind": "single", "run": "r", "photo": "p.jpg", "face": 1})


def _state(root):
    """Every file under ``root`` with its content's hash: what "nothing changed" compares."""
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file() and p.name != ".lock"}


def test_the_same_face_is_queued_once_and_an_answered_face_never_again(tmp_path):
    queue, face = review.Queue(tmp_path / "review"), FakeFace(1)
    assert _add(queue, face) and not _add(queue, face)
    assert queue.count() == 1 and [i["id"] for i in queue.pending()] == [review.face_id(face.embedding)]
    queue.answer(review.face_id(face.embedding), "nobody", None, by="t", kols={"a": {}, "b": {}})
    assert queue.count() == 0 and not _add(queue, face)


def test_answers_refused_with_a_sentence_and_nothing_changed(tmp_path):
    queue, face = review.Queue(tmp_path / "review"), FakeFace(2)
    _add(queue, face)
    rid, kols = review.face_id(face.embedding), {"a": {}, "b": {}}
    before = _state(queue.root)
    cases = [("0123456789abcdef", "not", "a", kols, 404, "no such face"),   # forged id
             ("../../etc/passwd", "not", "a", kols, 404, "no such face"),
             (rid, "maybe", "a", kols, 400, "answer with"),
             (rid, "not", None, kols, 400, "which kol"),
             (rid, "not", "a", {"b": {}}, 404, "deleted meanwhile")]     # the KOL was deleted meanwhile
    for case_id, kind, kol, pool_kols, status, words in cases:
        with pytest.raises(UserError) as err:
            queue.answer(case_id, kind, kol, by="t", kols=pool_kols)
        assert err.value.status == status and words in err.value.message.lower()
        assert _state(queue.root) == before
    queue.answer(rid, "not", "a", by="t", kols=kols)
    after = _state(queue.root)
    with pytest.raises(UserError) as err:
        queue.answer(rid, "is", "b", by="t2", kols=kols)  # already reviewed
    assert err.value.status == 409 and "already reviewed (this is not a)" in err.value.message
    assert _state(queue.root) == after


def test_not_and_nobody_answers_become_negatives_read_again_after_each_change(tmp_path):
    queue, one, two = review.Queue(tmp_path / "review"), FakeFace(3), FakeFace(4)
    _add(queue, one), _add(queue, two)
    assert len(queue.negatives()) == 0
    queue.answer(review.face_id(one.embedding), "not", "a", by="t", kols={"a": {}, "b": {}})
    assert queue.negatives().slugs.tolist() == ["a"]
    queue.answer(review.face_id(two.embedding), "nobody", None, by="t", kols={"a": {}})  # b left the pool
    neg = queue.negatives()
    assert neg.slugs.tolist() == ["a", "a"] and np.allclose(neg.E[1], two.embedding, atol=1e-6)
    assert queue.forget_kol("a") == [] and len(queue.negatives()) == 0


def test_deleting_a_kol_deletes_the_faces_said_to_be_them(tmp_path):
    queue, face, other = review.Queue(tmp_path / "review"), FakeFace(5), FakeFace(6)
    _add(queue, face), _add(queue, other)
    rid = review.face_id(face.embedding)
    queue.answer(rid, "is", "a", by="t", kols={"a": {}}, add=lambda chip, emb: "f" * 16)
    assert queue.find(rid)[0]["answer"]["added"] == "f" * 16
    assert queue.forget_kol("a") == [rid]
    with pytest.raises(UserError):
        queue.find(rid)
    assert [c["slug"] for c in queue.pending()[0]["candidates"]] == ["b"]  # it left the waiting face's candidates


def test_removing_the_pool_photo_a_review_added_deletes_that_review(tmp_path):
    queue, face = review.Queue(tmp_path / "review"), FakeFace(7)
    _add(queue, face)
    rid = review.face_id(face.embedding)
    queue.answer(rid, "is", "a", by="t", kols={"a": {}}, add=lambda chip, emb: "e" * 16)
    assert queue.forget_photo("a", "d" * 16) == [] and queue.forget_photo("a", "e" * 16) == [rid]


def test_a_failed_add_to_the_pool_leaves_the_face_waiting(tmp_path):
    queue, face = review.Queue(tmp_path / "review"), FakeFace(8)
    _add(queue, face)
    before = _state(queue.root)

    def full_disk(chip, embedding):
        raise UserError("The disk is full.", 507)

    with pytest.raises(UserError):
        queue.answer(review.face_id(face.embedding), "is", "a", by="t", kols={"a": {}}, add=full_disk)
    assert _state(queue.root) == before and queue.count() == 1


# -- the app, on real faces ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_faces():
    if not FIVE.is_dir():
        pytest.skip("real photos not found (set KOL_SHARED_DATA)")
    return {p.replace("_", " ").title(): one_face_each(paths[:FACES_PER_KOL])
            for p, paths in five_celebs_photos().items()}


@pytest.fixture
def app(main_app, data_dir, tmp_path, real_faces):
    pool, _ = build_pool(data_dir / "pool", real_faces, tmp_path / "staging")
    save_model(data_dir, pool)
    return main_app


def _photo(person=UNSURE[0], name=UNSURE[1]):
    return {"file": (open(FIVE / person / name, "rb"), name)}


def _predict(client):
    response = client.post("/predictSingleImage", data=_photo(), headers=JSON, content_type="multipart/form-data")
    assert response.status_code == 200, response.text[:300]
    return response.json["faces"][0]


def _waiting(client):
    response = client.get("/review", headers=JSON)
    assert response.status_code == 200, response.text[:300]
    return response.json


def _answer(client, rid, **form):
    return client.post(f"/review/{rid}/answer", data=form, headers=JSON)


def _slug(data_dir, name):
    return Pool(data_dir / "pool").slug_for(name)


@needs_data
def test_an_unsure_answer_is_queued_once_with_its_candidates_and_photos(app):
    client = signed_in(app.test_client(), "member")
    face = _predict(client)
    assert face["identity"] == "Elton John" and face["confidence"] < review.SURE
    _predict(client)  # the same photo again: the same face, not a second item
    listed = _waiting(client)
    assert listed["count"] == 1
    item = listed["items"][0]
    assert item["shown"] == {k: face[k] for k in ("identity", "confidence", "known")}
    assert item["source"]["kind"] == "single" and item["source"]["photo"] == UNSURE[1]
    assert item["candidates"][0]["name"] == "Elton John" and len(item["candidates"]) == review.CANDIDATES
    assert [c["photo"] for c in item["candidates"]] == [None] * review.CANDIDATES  # the list reads no photos
    one = client.get(f"/review/{item['id']}", headers=JSON).json
    assert one["id"] == item["id"] and one["waiting"] is True
    for url in [item["face_url"]] + [c["photo"] for c in one["candidates"]]:
        shown = client.get(url)
        assert shown.status_code == 200 and shown.data[:4] == b"\x89PNG"
    page = client.get(f"/review/{item['id']}", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "Not Elton John" in page.text and "add to photos" not in page.text
    assert 'id="menu-review"' in page.text and '<span class="count">1</span>' in page.text


@needs_data
def test_not_x_changes_the_next_prediction_without_a_retrain(app, data_dir):
    client = signed_in(app.test_client(), "member")
    _predict(client)
    rid = _waiting(client)["items"][0]["id"]
    models_before = _state(data_dir / "models")
    done = _answer(client, rid, answer="not", kol=_slug(data_dir, "Elton John"))
    assert done.status_code == 200 and done.json["answer"]["kind"] == "not" and not done.json["waiting"]
    again = _predict(client)
    assert again["known"] is False and again["identity"] is None and again["confidence"] >= 0.5
    assert _state(data_dir / "models") == models_before  # no retrain, no model rewritten
    assert _waiting(client)["count"] == 0  # answered faces leave the queue and are not queued again


@needs_data
def test_a_batch_queues_its_unsure_faces_and_uses_the_negatives(app, data_dir):
    client = signed_in(app.test_client(), "member")
    files = [("file", (open(FIVE / "elton_john" / "val_2.jpg", "rb"), "val_2.jpg")),
             ("file", (open(FIVE / "ben_afflek" / "val_1.jpg", "rb"), "val_1.jpg"))]
    result = client.post("/predictBatchImage", data={"file": [f[1] for f in files]}, headers=JSON,
                         content_type="multipart/form-data")
    assert result.status_code == 200, result.text[:300]
    items = _waiting(client)["items"]
    assert [i["source"]["photo"] for i in items] == ["val_2.jpg"] and items[0]["source"]["kind"] == "batch"
    assert _answer(client, items[0]["id"], answer="not", kol=_slug(data_dir, "Elton John")).status_code == 200
    again = client.post("/predictBatchImage", data={"file": [(open(FIVE / "elton_john" / "val_2.jpg", "rb"),
                                                              "val_2.jpg"),
                                                             (open(FIVE / "ben_afflek" / "val_1.jpg", "rb"),
                                                              "val_1.jpg")]},
                        headers=JSON, content_type="multipart/form-data").json["results"]
    assert [r["faces"][0]["identity"] for r in again] == [None, "Ben Afflek"]


@needs_data
def test_this_is_x_adds_the_face_for_admins_only_and_is_audited(app, data_dir):
    member, admin = signed_in(app.test_client(), "member"), signed_in(app.test_client(), "admin")
    _predict(member)
    rid, slug = _waiting(member)["items"][0]["id"], _slug(data_dir, "Elton John")
    pool = Pool(data_dir / "pool")
    before = (_state(data_dir / "pool"), _state(data_dir / "review"))
    page = admin.get(f"/review/{rid}", headers={"Accept": "text/html"}).text
    assert "This is Elton John: add to photos" in page and 'name="add" value="1"' in page
    refused = _answer(member, rid, answer="is", kol=slug, add="1")
    assert refused.status_code == 403 and "only an admin" in refused.json["error"].lower()
    assert (_state(data_dir / "pool"), _state(data_dir / "review")) == before
    done = _answer(admin, rid, answer="is", kol=slug, add="1")
    assert done.status_code == 200, done.text[:300]
    cid = done.json["answer"]["added"]
    assert cid in pool.kols()[slug]["chips"] and len(pool.kols()[slug]["chips"]) == FACES_PER_KOL + 1
    rows, _ = app.extensions["accounts"].audit()
    assert rows[0]["action"] == "review.add_photo" and rows[0]["detail"]["chip"] == cid
    assert rows[0]["detail"]["item"] == rid and "tests-admin" in rows[0]["actor"]
    # the photo removed from the pool takes the review it came from with it
    assert admin.post(f"/kols/{slug}/photos/{cid}/remove", headers=JSON).status_code == 200
    assert admin.get(f"/review/{rid}", headers=JSON).status_code == 404


@needs_data
def test_an_admin_adds_a_face_a_member_said_is_x(app, data_dir):
    member, admin = signed_in(app.test_client(), "member"), signed_in(app.test_client(), "admin")
    _predict(member)
    rid, slug = _waiting(member)["items"][0]["id"], _slug(data_dir, "Elton John")
    assert _answer(member, rid, answer="is", kol=slug).json["answer"]["added"] is None
    assert "to_add" not in _waiting(member)
    assert [i["id"] for i in _waiting(admin)["to_add"]] == [rid]
    before = (_state(data_dir / "pool"), _state(data_dir / "review"))
    refused = member.post(f"/review/{rid}/add", headers=JSON)
    assert refused.status_code == 403 and (_state(data_dir / "pool"), _state(data_dir / "review")) == before
    done = admin.post(f"/review/{rid}/add", headers=JSON)
    assert done.status_code == 200, done.text[:300]
    assert done.json["answer"]["added"] in Pool(data_dir / "pool").kols()[slug]["chips"]
    assert _waiting(admin)["to_add"] == []
    before = (_state(data_dir / "pool"), _state(data_dir / "review"))
    again = admin.post(f"/review/{rid}/add", headers=JSON)
    assert again.status_code == 409 and "added to the kol's photos already" in again.json["error"].lower()
    assert admin.post("/review/0123456789abcdef/add", headers=JSON).status_code == 404
    assert (_state(data_dir / "pool"), _state(data_dir / "review")) == before


@needs_data
def test_bad_answers_over_http_change_nothing(app, data_dir):
    client = signed_in(app.test_client(), "member")
    _predict(client)
    rid, slug = _waiting(client)["items"][0]["id"], _slug(data_dir, "Elton John")
    state = lambda: (_state(data_dir / "pool"), _state(data_dir / "review"))  # noqa: E731
    before = state()
    for url, form, status in [("/review/0123456789abcdef/answer", {"answer": "nobody"}, 404),   # forged id
                              ("/review/NOT-AN-ID/answer", {"answer": "nobody"}, 404),
                              (f"/review/{rid}/answer", {"answer": "not", "kol": "no-such-kol"}, 404),
                              (f"/review/{rid}/answer", {"answer": "perhaps"}, 400)]:
        response = client.post(url, data=form, headers=JSON)
        assert response.status_code == status and len(response.json["error"]) > 20, (url, response.text)
        assert state() == before
    assert client.get("/review/0123456789abcdef/face.png").status_code == 404
    admin = signed_in(app.test_client(), "admin")
    assert admin.post(f"/kols/{slug}/delete", headers=JSON).status_code == 200  # deleted meanwhile
    before = state()
    gone = _answer(client, rid, answer="is", kol=slug)
    assert gone.status_code == 404 and "deleted meanwhile" in gone.json["error"] and state() == before
    assert _answer(client, rid, answer="nobody").status_code == 200
    before = state()
    twice = _answer(client, rid, answer="nobody")
    assert twice.status_code == 409 and "already reviewed" in twice.json["error"] and state() == before


@needs_data
def test_a_browser_answer_goes_on_to_the_next_face_or_the_list(app, data_dir):
    client = signed_in(app.test_client(), "member")
    _predict(client)
    rid = _waiting(client)["items"][0]["id"]
    done = client.post(f"/review/{rid}/answer", data={"answer": "nobody"}, headers={"Accept": "text/html"})
    assert done.status_code == 303 and done.headers["Location"].endswith("/review")
    listed = client.get("/review", headers={"Accept": "text/html"})
    assert "Nothing to review" in listed.text and '<span class="count">' not in listed.text
    assert "Answered: nobody we know." in listed.text  # the flash


@needs_data
def test_deleting_a_kol_deletes_its_negatives(app, data_dir):
    client = signed_in(app.test_client(), "admin")
    _predict(client)
    rid, slug = _waiting(client)["items"][0]["id"], _slug(data_dir, "Elton John")
    _answer(client, rid, answer="not", kol=slug)
    queue = review.Queue(data_dir / "review")
    assert queue.negatives().slugs.tolist() == [slug]
    assert client.post(f"/kols/{slug}/delete", headers=JSON).status_code == 200
    assert len(queue.negatives()) == 0


@needs_data
def test_members_review_only_while_the_setting_is_on(data_dir, tmp_path, real_faces):
    from main_server import create_app

    pool, _ = build_pool(data_dir / "pool", real_faces, tmp_path / "staging")
    save_model(data_dir, pool)
    app = create_app({"TESTING": True, "DATA_DIR": str(data_dir), "SECRET_KEY": "t", "REVIEW_MEMBERS": False})
    member, admin = signed_in(app.test_client(), "member"), signed_in(app.test_client(), "admin")
    _predict(member)
    assert member.get("/review", headers=JSON).status_code == 403
    rid = _waiting(admin)["items"][0]["id"]
    assert _answer(member, rid, answer="nobody").status_code == 403 and _waiting(admin)["count"] == 1


def test_the_menu_marks_to_review_and_nothing_else_on_its_page(admin_client):
    page = admin_client.get("/review").text
    active = re.findall(r'<a [^>]*class="active"[^>]*>([^<]*)', page)
    assert [a.strip() for a in active] == ["To review"], active
