"""The inbox of unknown people over HTTP (main_server/unknowns.py; issue 24, item 5).

The faces are real (lfw_dev photos through real dlib, tests/test_unknowns.py's :func:`real_faces`), added with
:meth:`Inbox.add_faces` as the library will add them. The app tests use the real main app and its real
accounts database; "name it" runs over real HTTP between the main server and the process server (gunicorn,
a real queue worker) and ends with the KOL in the pool; the last test looks at the inbox in Chromium.
"""
import re

import pytest

from shared.core.storage import file_identity, read_json
from shared.library.unknowns import Inbox

from ._synth import JSON
from .conftest import screenshot, signed_in
from .test_unknowns import BARS, PEOPLE, PHOTOS, faces_of, needs_lfw

pytestmark = needs_lfw


def fill(data_dir):
    """Two media: Bulent and Diana in m1 (groups 1, 2), then Carlos (group 3) and more of Diana in m2."""
    box = Inbox(data_dir, **BARS)
    bulent, diana, carlos = PEOPLE
    box.add_faces(faces_of(bulent, "m1") + faces_of(diana, "m1", range(3)))
    box.add_faces(faces_of(carlos, "m2", range(2)) + faces_of(diana, "m2", range(3, 5)))
    return box


@pytest.fixture
def box(main_app):
    return fill(main_app.config["DATA_DIR"])


def test_the_inbox_lists_people_newest_active_first_and_members_may_only_look(main_app, box):
    member = signed_in(main_app.test_client(), "member")
    page = member.get("/unknowns")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert [int(n) for n in re.findall(r'id="unknown-(\d+)"', html)] == [3, 2, 1]
    assert "5 appearances in 2 media" in html and "m2.mp4 at 4.5 s, 6.0 s" in html
    assert re.search(r'id="menu-unknowns"[^>]*>Unknown people <span class="count">3</span>', html)
    listed = member.get("/unknowns", headers=JSON).get_json()
    assert [g["number"] for g in listed["groups"]] == [3, 2, 1] and listed["groups"][2]["label"] == "unknown #1"
    chip = member.get(listed["groups"][0]["faces"][0]["chip_url"])
    assert chip.status_code == 200 and chip.mimetype == "image/jpeg" and chip.data[:3] == b"\xff\xd8\xff"
    one = member.get("/unknowns/2").get_data(as_text=True)
    assert one.count('class="thumb kept"') == 5 and 'name="face"' not in one  # no split boxes for members
    stored = file_identity(box.path)
    for path, form in (("/unknowns/2/merge", {"into": "1"}), ("/unknowns/2/dismiss", {}),
                       ("/unknowns/2/name", {"name": "Diana"})):
        denied = member.post(path, data=form, headers=JSON)
        assert denied.status_code == 403, path
    assert file_identity(box.path) == stored


def test_admins_merge_split_dismiss_and_bad_input_changes_nothing(main_app, box):
    admin = signed_in(main_app.test_client(), "admin")
    stored = file_identity(box.path)
    for path, form, status, words in (
            ("/unknowns/9/merge", {"into": "1"}, 404, "no such unknown person"),
            ("/unknowns/2/merge", {"into": "2"}, 400, "cannot be merged with itself"),
            ("/unknowns/2/merge", {"into": ""}, 404, "no such unknown person"),
            ("/unknowns/2/split", {"face": "m1-Bulent-0"}, 400, "is not a face of unknown #2"),
            ("/unknowns/2/split", {"face": "../../etc"}, 400, "is not a face of unknown #2"),
            ("/unknowns/2/name", {"name": "  "}, 400, "not usable as a KOL name"),
            ("/unknowns/x/dismiss", {}, 404, "no such unknown person")):
        answer = admin.post(path, data=form, headers=JSON)
        assert answer.status_code == status, (path, form, answer.get_json())
        assert words in answer.get_json()["error"], answer.get_json()
    assert admin.get("/unknowns/1/faces/m1-Diana_-0").status_code == 404  # a face of another group
    assert file_identity(box.path) == stored and not (box.root.parent.parent / "jobs").exists()

    split = admin.post("/unknowns/2/split", data={"face": ["m2-Diana_-3", "m2-Diana_-4"]})
    assert split.status_code == 303 and split.location.endswith("/unknowns/4")
    merged = admin.post("/unknowns/4/merge", data={"into": "2"}, headers=JSON).get_json()
    assert merged["number"] == 2 and merged["appearances"] == 5
    assert admin.post("/unknowns/3/dismiss").status_code == 303
    assert [g["number"] for g in admin.get("/unknowns", headers=JSON).get_json()["groups"]] == [2, 1]
    named = admin.post("/unknowns/1/name", data={"name": " Bulent  Ecevit "}, headers=JSON)
    assert named.status_code == 201 and named.get_json()["state"] == "naming", named.get_json()
    job = named.get_json()["job"]
    assert named.get_json()["clean"].endswith(f"/clean?job={job}") and named.get_json()["name"] == "Bulent Ecevit"
    state = read_json(box.root.parent.parent / "jobs" / job / "state.json")
    assert {k: v["state"] for k, v in state["steps"].items()} == {"align": "done", "clean": "done"}
    assert state["kols"][0]["name"] == "Bulent Ecevit" and len(state["kols"][0]["files"]) == PHOTOS
    actions = [row["action"] for row in main_app.extensions["accounts"].audit(limit=10)[0]]
    assert {"unknown.split", "unknown.merge", "unknown.dismiss", "unknown.name"} <= set(actions), actions


@pytest.mark.live
def test_naming_an_unknown_goes_through_cleaning_into_the_pool(live_servers):
    box = fill(live_servers.data_dir)
    main, process, http = live_servers.urls["main"], live_servers.urls["process"], live_servers.http
    named = http.post(f"{main}/unknowns/1/name", data={"name": "Bulent Ecevit"}, allow_redirects=False)
    assert named.status_code == 303, named.text
    job = re.fullmatch(re.escape(process) + r"/clean\?job=([0-9a-f]{16})", named.headers["Location"]).group(1)
    cleaning = http.get(named.headers["Location"])  # the process server's cleaning page, as the admin lands on it
    assert cleaning.status_code == 200 and "Bulent Ecevit" in cleaning.text
    aligned = read_json(live_servers.data_dir / "jobs" / job / "align.json")
    crops = [c["crop"] for src in aligned["kols"][0]["sources"] for c in src["crops"]]
    assert len(crops) == PHOTOS and all(f"crop={c}" in cleaning.text for c in crops), "the group's faces, each shown"
    view = http.get(f"{process}/clean", params={"job": job}, headers=JSON).json()["kols"]["Bulent Ecevit"]
    kept = view["kept"]
    assert kept + len(view["removed"]) == PHOTOS
    assert kept >= 4, view  # five sharp photos of one person: cleaning keeps them (or all but one)
    assert http.get(f"{main}/unknowns", headers=JSON).json()["groups"][-1]["state"] == "naming"
    imported = http.post(f"{process}/import_result", data={"job": job}, headers=JSON)
    assert imported.status_code == 200, imported.text
    assert imported.json()["pool"] == {"Bulent Ecevit": kept}
    listed = http.get(f"{main}/unknowns", headers=JSON).json()
    assert [g["number"] for g in listed["groups"]] == [3, 2], "named: the group left the inbox"
    assert box.group(1)["state"] == "named" and box.group(1)["name"] == "Bulent Ecevit"


@pytest.mark.live
@pytest.mark.browser
def test_the_inbox_in_a_browser(live_servers, page):
    if not Inbox(live_servers.data_dir).count():
        fill(live_servers.data_dir)
    page.goto(live_servers.urls["main"] + "/unknowns")
    assert page.locator("li.unknown").count() >= 2
    assert page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    assert "Unknown people" in page.locator("#menu-unknowns").inner_text()
    screenshot(page, "unknowns-inbox")
    page.locator("li.unknown h2 a").first.click()
    page.wait_for_url(re.compile(r".*/unknowns/\d+$"))
    screenshot(page, "unknowns-group")
    faces = page.locator("#faces img").count()
    page.fill("#kol-name", "Someone From The Inbox")
    with page.expect_navigation():
        page.locator("button", has_text="Make a KOL of these faces").click()
    assert page.url.startswith(live_servers.urls["process"] + "/clean?job="), page.url
    assert "Someone From The Inbox" in page.inner_text("main")
    assert page.evaluate("[...document.images].filter(i => i.complete && i.naturalWidth > 0).length") >= faces
    screenshot(page, "unknowns-named-cleaning")
    assert page.errors == []
