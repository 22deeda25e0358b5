"""The kept model versions (process server ``/models``): the list with its plain comparisons, and the
switch back to an earlier model, which every server's next prediction then uses."""
import io
import re
from pathlib import Path

import numpy as np

from . import _synth
from ._synth import JSON
from .conftest import signed_in
from .test_auth import PASSWORD, audit_rows, csrf_token


def two_versions(data_dir):
    """Two real models on made-up embeddings: ``old`` knows kol-0..kol-2, ``new`` (current) only kol-0, kol-1
    with fewer photos each. Returns ``(old, new, embeddings)``."""
    from shared.recognition.model import train
    from shared.recognition.store import ModelStore

    E = _synth._embeddings(3, 6, seed=0)
    store = ModelStore(Path(data_dir) / "models")
    names = {f"kol-{k}": f"KOL {k}" for k in range(3)}
    X = np.array([e for kol in E for e in kol])
    old = store.save(train(X, [f"kol-{k}" for k in range(3) for _ in range(6)], names))
    X2 = np.array([e for kol in E[:2] for e in kol[:4]])
    new = store.save(train(X2, [f"kol-{k}" for k in range(2) for _ in range(4)], names))
    assert old < new and store.current_version() == new
    return old, new, E


def test_list_compares_each_version_with_the_one_before(process_app, data_dir):
    old, new, _ = two_versions(data_dir)
    proc = signed_in(process_app.test_client(), "admin")
    r = proc.get("/models", headers=JSON)
    assert r.status_code == 200
    body = r.get_json()
    assert body["current"] == new
    assert [v["version"] for v in body["versions"]] == [new, old]  # newest first
    newest, oldest = body["versions"]
    assert newest["current"] and not oldest["current"]
    assert (newest["identities"], newest["samples"], oldest["identities"], oldest["samples"]) == (2, 8, 3, 18)
    assert oldest["comparison"] is None
    cmp = newest["comparison"]
    assert cmp["previous"] == old and cmp["added"] == [] and cmp["removed"] == ["kol-2"]
    a0, a1 = cmp["accuracy_before"], cmp["accuracy_after"]
    assert a0 == oldest["cv_accuracy"] and a1 == newest["cv_accuracy"]
    expected = ("not comparable" if a0 is None or a1 is None else
                "better" if a1 > a0 else "worse" if a1 < a0 else "same")
    assert cmp["accuracy"] == expected
    assert cmp["summary"].startswith("1 KOL removed (KOL 2)")
    # the page: local times, the sentence, which one is in use, a confirmed switch form for the other
    page = proc.get("/models").get_data(as_text=True)
    assert f'<time datetime="{newest["created"]}">' in page
    assert "1 KOL removed (KOL 2)" in page and "the oldest kept model" in page
    forms = re.findall(r'<form method="post" action="/models/switch"\s+data-confirm="[^"]+">(.*?)</form>', page, re.S)
    assert len(forms) == 1 and f'name="version" value="{old}"' in forms[0] and "csrf" in forms[0]
    # linked from the jobs page
    assert 'href="/models"' in proc.get("/").get_data(as_text=True)


def test_switch_back_and_predictions_use_that_model(process_app, main_app, data_dir):
    old, new, E = two_versions(data_dir)
    main_store = main_app.extensions["models"]
    probe = np.array([E[2][0]])  # a photo of kol-2, whom only the old model knows
    assert main_store.current().version == new and main_store.current().predict(probe)[0].slug != "kol-2"
    proc = signed_in(process_app.test_client(), "admin")
    r = proc.post("/models/switch", data={"version": old})
    assert r.status_code == 303 and r.headers["Location"].endswith(f"/models?switched={old}")
    assert "is in use now" in proc.get(r.headers["Location"]).get_data(as_text=True)
    # another server's store (already holding the new model) reloads and answers with the old one
    assert main_store.current().version == old
    assert main_store.current().predict(probe)[0].slug == "kol-2"
    r = signed_in(main_app.test_client(), "admin").post(
        "/predictBatchImage", data={"file": [(io.BytesIO(_synth.jpeg()), "p.jpg")]},
        content_type="multipart/form-data", headers=JSON)
    assert r.status_code == 200 and r.get_json()["model_version"] == old
    # and forward again, as JSON; the audit trail names the version
    r = proc.post("/models/switch", data={"version": new}, headers=JSON)
    assert r.status_code == 200 and r.get_json() == {"current": new, "previous": old}
    assert main_store.current().version == new
    switches = [row for row in audit_rows(process_app) if row["action"] == "model.switch"]
    assert [row["detail"]["version"] for row in switches] == [new, old]  # newest first


def test_refusals(process_app, main_app, data_dir):
    old, new, _ = two_versions(data_dir)
    store = process_app.extensions["models"]
    proc = signed_in(process_app.test_client(), "admin")
    for bad in ("20990101-000000-abcdef", "../current", "x" * 30):
        r = proc.post("/models/switch", data={"version": bad}, headers=JSON)
        assert r.status_code == 404 and "No such model version" in r.get_json()["error"], bad
    r = proc.post("/models/switch", data={}, headers=JSON)
    assert r.status_code == 400 and "version" in r.get_json()["error"]
    # a member may neither see nor switch
    member = signed_in(process_app.test_client(), "member")
    assert member.get("/models", headers=JSON).status_code == 403
    r = member.post("/models/switch", data={"version": old}, headers=JSON)
    assert r.status_code == 403 and "only an admin may do this" in r.get_json()["error"]
    # a signed-in browser session without the CSRF token: 400; with it: the switch happens
    main_app.extensions["accounts"].create_user("boss", PASSWORD, "admin")
    main = main_app.test_client()  # signs in on the main server, as a browser does (see test_auth)
    r = main.post("/login", data={"name": "boss", "password": PASSWORD,
                                  "csrf_token": csrf_token(main.get("/login").get_data(as_text=True))})
    assert r.status_code == 303
    session = process_app.test_client()
    session.set_cookie("session", main.get_cookie("session").value)
    r = session.post("/models/switch", data={"version": old}, headers=JSON)
    assert r.status_code == 400 and "CSRF token" in r.get_json()["error"]
    assert store.current_version() == new  # nothing changed by any refusal
    token = csrf_token(session.get("/models").get_data(as_text=True))
    r = session.post("/models/switch", data={"version": old, "csrf_token": token})
    assert r.status_code == 303 and store.current_version() == old


def test_accuracy_words_follow_the_numbers(data_dir):
    """The comparison's accuracy words come from the two versions' cross-validated accuracies."""
    from shared.recognition.report import version_history
    from shared.recognition.store import ModelStore
    from shared.core.storage import atomic_write_json

    old, new, _ = two_versions(data_dir)
    store = ModelStore(Path(data_dir) / "models")

    def set_accuracy(version, value):
        meta = store.meta(version)
        meta["metrics"]["cv_accuracy"] = value
        atomic_write_json(store.root / version / "meta.json", meta)

    for before, after, word, words in [(0.9, 0.95, "better", "accuracy better (90.0 % before, 95.0 % now)"),
                                       (0.95, 0.9, "worse", "accuracy worse (95.0 % before, 90.0 % now)"),
                                       (0.9, 0.9, "same", "accuracy unchanged (90.0 %)"),
                                       (None, 0.9, "not comparable", "accuracy cannot be compared")]:
        set_accuracy(old, before)
        set_accuracy(new, after)
        cmp = version_history(store, {"kol-2": "Zoe"})[0]["comparison"]
        assert cmp["accuracy"] == word and words in cmp["summary"], (before, after, cmp)
        assert cmp["summary"].startswith("1 KOL removed (Zoe); ")  # the pool's display name first


def test_a_merge_reads_as_a_merge_and_the_report_names_who_left(process_app_no_worker, data_dir, tmp_path):
    """Issue 25: after merging "Naomi" into "Naomi_Watts" the models page says so (not "1 KOL removed
    (Naomi_Watts)"), a deleted KOL is named by its own name, and the retrain report names both."""
    from shared.recognition.store import ModelStore
    from shared.training.jobs import JobStore
    from shared.training.pool import Pool
    from shared.training.train import retrain

    from .test_roster import _staged

    pool, store = Pool(data_dir / "pool"), ModelStore(data_dir / "models")
    watts = pool.add("Naomi_Watts", _staged(tmp_path, 3))
    naomi = pool.add("Naomi", _staged(tmp_path, 2, seed=1))
    zoe = pool.add("Zoë", _staged(tmp_path, 2, seed=2))
    pool.add("Ben", _staged(tmp_path, 2, seed=3))
    retrain(pool, store)
    pool.merge(naomi, watts)
    pool.remove(zoe)
    summary = retrain(pool, store)
    proc = signed_in(process_app_no_worker.test_client(), "admin")
    newest = proc.get("/models", headers=JSON).get_json()["versions"][0]["comparison"]
    assert newest["summary"].startswith("Naomi merged into Naomi_Watts; 1 KOL removed (Zoë)"), newest["summary"]
    assert newest["merged"] == [{"slug": naomi, "into": watts}] and sorted(newest["removed"]) == sorted([naomi, zoe])
    page = proc.get("/models").get_data(as_text=True)
    assert "Naomi merged into Naomi_Watts" in page
    assert f'/kols/{watts}#merges">undo it on the page of Naomi_Watts</a>' in page  # the way to undo it
    jobs = JobStore(data_dir / "jobs")
    job = jobs.create_pool_training()
    jobs.update(job, lambda s: s["steps"].__setitem__("train", {"state": "done", "summary": summary}))
    report = proc.get(f"/train_model?job={job}").get_data(as_text=True)
    assert "2 removed (Naomi, merged into Naomi_Watts, Zoë)" in report, report[report.find("Compared"):][:400]
