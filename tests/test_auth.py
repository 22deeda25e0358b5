"""Sign-in, roles, API tokens, CSRF and the audit trail (shared/web/auth.py, access.py, security.py,
shared/web/accounts.py; the pages main_server/accounts.py).

The route table walks EVERY rule of the three apps' ``url_map``, so a route added later is
covered without editing this file: anonymous -> redirect to the sign-in page (pages) or 401
(JSON); member on an admin route -> 403 with a sentence; form POST without a CSRF token -> 400.
"""
import io
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from fnmatch import fnmatchcase
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import sqlalchemy as sa

from . import _synth
from ._synth import JSON
from .conftest import ROOT, LiveServers, screenshot, signed_in

HTML = {"Accept": "text/html"}
SECTIONS = ("main", "process", "video")
MAIN_URL = "http://main.test:5000"
PROCESS_URL = "http://main.test:5001"
VIDEO_URL = "http://main.test:5002"
PASSWORD = "correct horse battery"

#: What a member may use, written down here independently of shared/web/access.py's table (the spec of
#: issue 11): predictions, videos, the pool summary. (server, endpoint pattern, method or None, test).
MEMBER_SPEC = [
    ("main", "home.index", None), ("main", "predict.*", None), ("main", "video.upload_video_page", None),
    ("main", "video.predict_video_result", None), ("main", "auth.logout", None), ("main", "auth.account", None),
    ("main", "auth.change_password", None),  # one's own password
    ("video", "*", None), ("process", "wizard.pool_chip", None),
    ("process", "wizard.import_result", "GET"),  # without ?job: the pool summary
    ("main", "kols.index", "GET"), ("main", "kols.kol", "GET"),  # the roster, read-only
    ("main", "review.index", None), ("main", "review.item", None), ("main", "review.face", None),
    ("main", "review.answer", None),  # the review queue (issue 23) while REVIEW_MEMBERS is on, its default
    ("main", "unknowns.index", "GET"), ("main", "unknowns.group", "GET"),  # the inbox of unknown people, read-only
    ("main", "unknowns.chip", "GET"),
    ("main", "analysis.*", None),  # videos analysed on the queue and their screen time (issue 24), one's own
    ("main", "library.*", None),  # the library: see, search, keep (deleting media checks who kept it, in the view)
]
OPEN_SPEC = [("*", "healthz"), ("*", "static"), ("main", "auth.login"), ("main", "auth.setup")]


def member_may(section, endpoint, method):
    return any(section == s and fnmatchcase(endpoint, e) and (m is None or m == method)
               for s, e, m in MEMBER_SPEC)


def is_open(section, endpoint):
    return any(fnmatchcase(section, s) and endpoint == e for s, e in OPEN_SPEC)


@pytest.fixture
def apps(three_apps, queue_workers):
    """:func:`three_apps` with the job queue's real worker."""
    return three_apps


@pytest.fixture
def three_apps(data_dir, redis_url):
    """The three apps on one data folder (sharing one accounts database), with the admin ``boss``
    (so it is not the first run); no queue worker."""
    from main_server import create_app as main_app
    from process_server import create_app as process_app
    from video_server import create_app as video_app

    cfg = {"TESTING": True, "DATA_DIR": str(data_dir), "SECRET_KEY": "test", "MAIN_URL": MAIN_URL,
           "PROCESS_URL": PROCESS_URL, "VIDEO_URL": VIDEO_URL, "REDIS_URL": redis_url}
    out = {"main": main_app(cfg), "process": process_app(cfg), "video": video_app(cfg)}
    out["main"].extensions["accounts"].create_user("boss", PASSWORD, "admin")
    return out


def routes(app):
    """``(rule, method, url)`` for every rule of ``app`` (path arguments filled with a harmless word, ``0``
    where the route takes a number)."""
    for rule in app.url_map.iter_rules():
        url = re.sub(r"<(?:([^:>]+):)?([^>]+)>", lambda m: "0" if m.group(1) == "int" else "x0", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            yield rule, method, url


def all_routes(apps):
    return [(s, rule.endpoint, method, url) for s in SECTIONS for rule, method, url in routes(apps[s])]


def csrf_token(html):
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def sign_in(apps, name="boss", password=PASSWORD):
    """Test clients of the three apps sharing one signed-in session cookie (as a browser on one host)."""
    main = apps["main"].test_client()
    token = csrf_token(main.get("/login").get_data(as_text=True))
    r = main.post("/login", data={"name": name, "password": password, "csrf_token": token})
    assert r.status_code == 303, r.get_data(as_text=True)[:500]
    cookie = main.get_cookie("session")
    clients = {"main": main}
    for s in ("process", "video"):
        clients[s] = apps[s].test_client()
        clients[s].set_cookie("session", cookie.value)
    return clients


def audit_rows(app):
    rows, _ = app.extensions["accounts"].audit(0, 1000)
    return rows


# -- the route table --------------------------------------------------------------------------------
def test_route_table_anonymous_member_and_csrf(apps):
    """Every route of the three servers, anonymous, as a member (token) and with a session but no CSRF token."""
    table = all_routes(apps)
    assert len(table) > 30  # the three servers' routes are really there
    anon = {s: apps[s].test_client() for s in SECTIONS}
    member = {s: signed_in(apps[s].test_client(), "member") for s in SECTIONS}
    session = sign_in(apps)
    seen_403 = seen_redirect = seen_csrf = 0
    for section, endpoint, method, url in table:
        where = f"{section} {method} {url} ({endpoint})"
        if is_open(section, endpoint):
            continue
        # anonymous: a page goes to the sign-in page and comes back; JSON gets 401 {"error"}
        r = anon[section].open(url, method=method, headers=HTML)
        assert r.status_code in (302, 303), where
        location = urlsplit(r.headers["Location"])
        assert f"{location.scheme}://{location.netloc}{location.path}" == MAIN_URL + "/login", where
        if method == "GET":
            assert parse_qs(location.query)["next"] == [f"{apps[section].config[section.upper() + '_URL']}{url}"], where
        seen_redirect += 1
        r = anon[section].open(url, method=method, headers=JSON)
        assert r.status_code == 401 and set(r.get_json()) == {"error"} and "Sign in" in r.get_json()["error"], where
        # a member: 403 with a sentence exactly where the spec says admin only
        r = member[section].open(url, method=method, headers=JSON)
        if member_may(section, endpoint, method):
            assert r.status_code not in (401, 403), (where, r.get_json())
        else:
            assert r.status_code == 403, (where, r.status_code)
            assert "only an admin may do this" in r.get_json()["error"], where
            page = member[section].open(url, method=method, headers=HTML)
            assert page.status_code == 403 and "only an admin may do this" in page.get_data(as_text=True), where
            seen_403 += 1
        # a signed-in browser session without the CSRF token: 400 with a sentence, for every form POST
        if method == "POST":
            r = session[section].post(url, data={"job": "0" * 16}, headers=JSON)
            assert r.status_code == 400 and "CSRF token" in r.get_json()["error"], where
            seen_csrf += 1
    assert seen_403 >= 10 and seen_redirect >= 20 and seen_csrf >= 8, (seen_403, seen_redirect, seen_csrf)


def test_member_rules_match_the_spec(apps):
    """shared/web/access.py's table says "member" exactly where this file's spec does (no more, no less)."""
    from shared.web import access

    for section, endpoint, method, url in all_routes(apps):
        with apps[section].test_request_context(url, method=method):
            got = access.rule(section, endpoint)
        want = "open" if is_open(section, endpoint) else "member" if member_may(section, endpoint, method) else "admin"
        assert got == want, (section, endpoint, method)
    with apps["process"].test_request_context("/import_result?job=abc", method="GET"):
        assert access.rule("process", "wizard.import_result") == "admin"  # a job's import page is the wizard's


def test_open_routes_need_nothing(apps):
    anon = {s: apps[s].test_client() for s in SECTIONS}
    for s in SECTIONS:
        assert anon[s].get("/healthz").status_code == 200
        assert anon[s].get("/static/style.css").status_code == 200
    assert anon["main"].get("/login").status_code == 200
    assert anon["main"].get("/setup").status_code == 404  # there is a user already


def test_member_pages_hide_admin_actions(apps, data_dir):
    job = _synth.aligned_job(data_dir)
    admin = signed_in(apps["process"].test_client(), "admin")
    assert admin.post("/clean", data={"job": job}, headers=JSON).status_code == 200
    assert admin.post("/import_result", data={"job": job}, headers=JSON).status_code == 200
    # the pool summary page: a member sees it but not the delete buttons; an admin sees both
    r = signed_in(apps["process"].test_client(), "member").get("/import_result")
    assert r.status_code == 200 and "Ann" in r.get_data(as_text=True)
    assert 'name="delete"' not in r.get_data(as_text=True)
    assert 'name="delete"' in admin.get("/import_result").get_data(as_text=True)
    home = signed_in(apps["main"].test_client(), "member").get("/").get_data(as_text=True)
    assert "/trainModel\"" not in home.split("<main>")[0]  # no Train link in the header
    assert "mode card train" not in home and "/admin/users" not in home
    admin_home = signed_in(apps["main"].test_client(), "admin").get("/").get_data(as_text=True)
    assert "mode card train" in admin_home and "/admin/users" in admin_home


# -- tokens -------------------------------------------------------------------------------------------
def test_tokens_with_each_role_and_revoked(apps):
    acc = apps["main"].extensions["accounts"]
    admin_token, admin_row = acc.create_token("deploy", "admin")
    member_token, member_row = acc.create_token("reader", "member")
    assert admin_token.startswith("kol_") and len(admin_token) > 40
    stored = acc._all(sa.select(acc.tokens_table.c.token_hash))
    assert admin_token not in str(stored) and member_token not in str(stored)  # only hashes are kept

    def call(section, path, token, method="GET", **kw):
        client = apps[section].test_client()
        return client.open(path, method=method, headers={"Authorization": f"Bearer {token}", **JSON}, **kw)

    for section in SECTIONS:  # a token works on all three servers
        path = {"main": "/trainModel", "process": "/", "video": "/"}[section]
        assert call(section, path, admin_token).status_code == 200, section
    assert call("main", "/trainModel", member_token).status_code == 403
    assert call("main", "/", member_token).status_code == 200
    assert call("video", "/", member_token).status_code == 200
    assert call("process", "/import_result", member_token).status_code == 200
    # bearer requests need no CSRF token: the member's empty upload gets the view's own 400
    r = call("main", "/predictSingleImage", member_token, method="POST", data={})
    assert r.status_code == 400 and "Choose a photo" in r.get_json()["error"]
    acc.revoke_token(member_row["id"])
    for section in SECTIONS:
        r = call(section, "/", member_token)
        assert r.status_code == 401 and "not valid" in r.get_json()["error"], section
    assert call("main", "/", "kol_made-up").status_code == 401
    # another scheme (a proxy's Basic auth) is not a token: the browser is sent to sign in
    r = apps["main"].test_client().get("/", headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    assert call("main", "/", admin_token).status_code == 200


def test_admin_pages_make_and_revoke_tokens_and_users(apps):
    clients = sign_in(apps)
    main = clients["main"]
    page = main.get("/admin/users").get_data(as_text=True)
    token = csrf_token(page)
    r = main.post("/admin/tokens", data={"action": "create", "name": "ci", "role": "member", "csrf_token": token})
    assert r.status_code == 200
    shown = re.search(r'<code class="token">([^<]+)</code>', r.get_data(as_text=True)).group(1)
    assert apps["video"].test_client().get("/", headers={"Authorization": f"Bearer {shown}", **JSON}).status_code == 200
    token_id = apps["main"].extensions["accounts"].tokens()[0]["id"]
    r = main.post("/admin/tokens", data={"action": "revoke", "token": str(token_id), "csrf_token": token})
    assert r.status_code == 303
    assert apps["video"].test_client().get("/", headers={"Authorization": f"Bearer {shown}"}).status_code == 401
    r = main.post("/admin/users", data={"action": "create", "name": "mia", "password": "short", "role": "member",
                                        "csrf_token": token}, headers=JSON)
    assert r.status_code == 400 and "at least 8" in r.get_json()["error"]
    r = main.post("/admin/users", data={"action": "create", "name": "mia", "password": PASSWORD, "role": "member",
                                        "csrf_token": token})
    assert r.status_code == 303
    mia = sign_in(apps, "mia")
    assert mia["main"].get("/trainModel", headers=JSON).status_code == 403
    assert mia["process"].get("/import_result", headers=JSON).status_code == 200
    # making mia admin ends her session (a new session key); she signs in again as admin
    mia_id = next(u["id"] for u in apps["main"].extensions["accounts"].users() if u["name"] == "mia")
    r = main.post("/admin/users", data={"action": "role", "user": str(mia_id), "role": "admin", "csrf_token": token})
    assert r.status_code == 303
    assert mia["main"].get("/", headers=JSON).status_code == 401
    assert sign_in(apps, "mia")["main"].get("/trainModel").status_code == 200
    boss_id = next(u["id"] for u in apps["main"].extensions["accounts"].users() if u["name"] == "boss")
    main.post("/admin/users", data={"action": "delete", "user": str(mia_id), "csrf_token": token})
    r = main.post("/admin/users", data={"action": "delete", "user": str(boss_id), "csrf_token": token}, headers=JSON)
    assert r.status_code == 409 and "last admin" in r.get_json()["error"]
    actions = [row["action"] for row in audit_rows(apps["main"])]
    for action in ("sign-in", "token.create", "token.revoke", "user.create", "user.role", "user.delete"):
        assert action in actions, (action, actions)


# -- sign-in, sign-out, first run, rate limit -----------------------------------------------------------
def test_sign_in_comes_back_and_sign_out_covers_all_three(apps):
    anon = apps["process"].test_client()
    r = anon.get("/import_result?x=1")
    assert r.status_code == 302
    nxt = parse_qs(urlsplit(r.headers["Location"]).query)["next"][0]
    assert nxt == PROCESS_URL + "/import_result?x=1"
    main = apps["main"].test_client()
    token = csrf_token(main.get("/login?next=" + nxt).get_data(as_text=True))
    r = main.post("/login", data={"name": "boss", "password": PASSWORD, "csrf_token": token, "next": nxt})
    assert r.status_code == 303 and r.headers["Location"] == nxt
    cookie = main.get_cookie("session")
    assert cookie.http_only and cookie.same_site == "Lax" and not cookie.secure
    # an outside "next" is not followed
    for evil in ("http://evil.example/", "//evil.example/x", "https://main.test:5000.evil.example/", "javascript:x"):
        main2 = apps["main"].test_client()
        token2 = csrf_token(main2.get("/login").get_data(as_text=True))
        r = main2.post("/login", data={"name": "boss", "password": PASSWORD, "csrf_token": token2, "next": evil})
        assert r.headers["Location"] == MAIN_URL + "/", evil
    proc = apps["process"].test_client()
    proc.set_cookie("session", cookie.value)
    assert proc.get("/", headers=JSON).status_code == 200
    token = csrf_token(main.get("/").get_data(as_text=True))
    assert main.post("/logout", data={"csrf_token": token}).status_code == 303
    proc.set_cookie("session", main.get_cookie("session").value if main.get_cookie("session") else "")
    assert proc.get("/", headers=JSON).status_code == 401
    assert main.get("/", headers=JSON).status_code == 401
    actions = [row["action"] for row in audit_rows(apps["main"])]
    assert "sign-in" in actions and "sign-out" in actions


def test_failed_sign_ins_are_recorded_and_limited(apps):
    main = apps["main"].test_client()
    token = csrf_token(main.get("/login").get_data(as_text=True))
    codes = [main.post("/login", data={"name": "boss", "password": f"wrong{i}", "csrf_token": token}).status_code
             for i in range(11)]
    assert codes == [401] * 10 + [429], codes
    # the right password from the same address is refused too for the next minute
    r = main.post("/login", data={"name": "boss", "password": PASSWORD, "csrf_token": token}, headers=JSON)
    assert r.status_code == 429 and "Too many failed sign-ins" in r.get_json()["error"]
    # another address, same account: counted apart (the slower per-account limit: tests/test_auth_limits.py)
    other = apps["main"].test_client()
    other.environ_base["REMOTE_ADDR"] = "10.0.0.9"
    token = csrf_token(other.get("/login").get_data(as_text=True))
    assert other.post("/login", data={"name": "boss", "password": "x", "csrf_token": token}).status_code == 401
    rows = [r for r in audit_rows(apps["main"]) if r["action"] == "sign-in.failed"]
    assert len(rows) == 11 and rows[0]["detail"] == {"name": "boss"} and rows[0]["remote"] == "10.0.0.9"


def test_a_member_changes_their_own_password(apps):
    acc = apps["main"].extensions["accounts"]
    acc.create_user("mia", PASSWORD, "member")
    mia, elsewhere = sign_in(apps, "mia"), sign_in(apps, "mia")
    main = mia["main"]
    page = main.get("/account").get_data(as_text=True)
    assert "Change your password" in page
    token = csrf_token(page)

    def change(current, new, again=None, **kw):
        return main.post("/account", data={"password": current, "new_password": new,
                                           "new_password2": new if again is None else again, "csrf_token": token}, **kw)

    r = change("wrong password", "a new long password")
    assert r.status_code == 401 and "current password is wrong" in r.get_data(as_text=True)
    r = change(PASSWORD, "a new long password", "another one", headers=JSON)
    assert r.status_code == 400 and "differ" in r.get_json()["error"]
    r = change(PASSWORD, "short", headers=JSON)
    assert r.status_code == 400 and "at least 8" in r.get_json()["error"]
    assert acc.authenticate("mia", PASSWORD) is not None  # nothing changed so far
    r = change(PASSWORD, "a new long password")
    assert r.status_code == 303
    assert "password was changed" in main.get("/account").get_data(as_text=True)  # still signed in here
    assert elsewhere["main"].get("/", headers=JSON).status_code == 401  # the other session ended
    assert acc.authenticate("mia", PASSWORD) is None and acc.authenticate("mia", "a new long password")
    actions = [(row["actor"], row["action"]) for row in audit_rows(apps["main"])]
    assert ("mia", "password.change") in actions and ("mia", "password.failed") in actions
    # ...and mia sees her own rows on her account page, newest first, and nobody else's
    acc.record("someone-else", "kol.delete", {"kol": "x"})
    mine = main.get("/account", headers=JSON).get_json()
    assert [r["action"] for r in mine["activity"]][:2] == ["password.change", "password.failed"]
    assert mine["activity_total"] == sum(actor == "mia" for actor, _ in actions) >= 2
    assert "kol.delete" not in {r["action"] for r in mine["activity"]}
    assert 'id="activity"' in main.get("/account").get_data(as_text=True)
    # an API token has no password to change
    member_token, _ = acc.create_token("reader", "member")
    r = apps["main"].test_client().post("/account", data={"password": "x"},
                                                  headers={"Authorization": f"Bearer {member_token}", **JSON})
    assert r.status_code == 400 and "API token has no password" in r.get_json()["error"]


def test_guessing_the_current_password_is_limited(apps):
    main = sign_in(apps)["main"]
    token = csrf_token(main.get("/account").get_data(as_text=True))
    codes = [main.post("/account", data={"password": f"guess{i}", "new_password": "x" * 10, "new_password2": "x" * 10,
                                         "csrf_token": token}).status_code for i in range(11)]
    assert codes == [401] * 10 + [429], codes


def test_two_server_processes_share_one_count_of_failed_sign_ins(apps, data_dir, redis_url):
    """Two main-server processes (gunicorn workers) on one install count failures together in Redis."""
    from main_server import create_app

    other = create_app({"TESTING": True, "DATA_DIR": str(data_dir), "SECRET_KEY": "test", "MAIN_URL": MAIN_URL,
                        "REDIS_URL": redis_url})
    codes = []
    for i in range(11):
        client = (apps["main"] if i % 2 else other).test_client()
        token = csrf_token(client.get("/login").get_data(as_text=True))
        codes.append(client.post("/login", data={"name": "boss", "password": f"no{i}", "csrf_token": token}).status_code)
    assert codes == [401] * 10 + [429], codes


def test_sign_in_limit_holds_while_redis_is_down(data_dir):
    """With the queue's Redis unreachable, each process still limits failed sign-ins (in its memory)."""
    from main_server import create_app

    app = create_app({"TESTING": True, "DATA_DIR": str(data_dir), "SECRET_KEY": "test", "MAIN_URL": MAIN_URL,
                      "REDIS_URL": "redis://127.0.0.1:9/0", "LOGIN_LIMIT": "3 per minute"})
    app.extensions["accounts"].create_user("boss", PASSWORD, "admin")
    client = app.test_client()
    token = csrf_token(client.get("/login").get_data(as_text=True))
    codes = [client.post("/login", data={"name": "boss", "password": f"no{i}", "csrf_token": token}).status_code
             for i in range(4)]
    assert codes == [401, 401, 401, 429], codes


def test_first_run_offers_only_the_first_admin(data_dir):
    from main_server import create_app as main_app
    from process_server import create_app as process_app

    cfg = {"TESTING": True, "DATA_DIR": str(data_dir), "SECRET_KEY": "test", "MAIN_URL": MAIN_URL,
           "PROCESS_URL": PROCESS_URL, "VIDEO_URL": VIDEO_URL}
    main, proc = main_app(cfg).test_client(), process_app(cfg).test_client()
    for client, path in ((main, "/"), (main, "/predictSinglePage"), (main, "/login"), (proc, "/")):
        r = client.get(path)
        assert r.status_code == 302 and r.headers["Location"] in (MAIN_URL + "/setup", "/setup"), path
    assert main.get("/", headers=JSON).status_code == 401
    page = main.get("/setup").get_data(as_text=True)
    assert "Create the first admin" in page
    token = csrf_token(page)
    r = main.post("/setup", data={"name": "root", "password": PASSWORD, "password2": "different!",
                                  "csrf_token": token})
    assert r.status_code == 400
    r = main.post("/setup", data={"name": "root", "password": PASSWORD, "password2": PASSWORD, "csrf_token": token})
    assert r.status_code == 303
    users_page = main.get("/admin/users")
    assert users_page.status_code == 200  # signed in as the new admin
    token = csrf_token(users_page.get_data(as_text=True))
    assert main.get("/setup").status_code == 404
    assert main.post("/setup", data={"name": "x", "password": PASSWORD, "password2": PASSWORD,
                                     "csrf_token": token}).status_code == 404
    assert main.get("/trainModel").status_code == 200


# -- the audit trail --------------------------------------------------------------------------------------
def test_each_audited_action_writes_its_row(apps, data_dir):
    job = _synth.aligned_job(data_dir)
    proc = signed_in(apps["process"].test_client(), "admin")
    main = signed_in(apps["main"].test_client(), "admin")
    zip_bytes = _synth.build_zip({"Ann/a.png": _synth.png(), "Ann/b.png": _synth.png(seed=1)})
    r = main.post("/trainByImage", data={"zip": (io.BytesIO(zip_bytes), "kols.zip")},
                  content_type="multipart/form-data")
    assert r.status_code == 303
    assert proc.post("/clean", data={"job": job}, headers=JSON).status_code == 200
    assert proc.post("/import_result", data={"job": job, "kol": ["Ann", "Bob"]}, headers=JSON).status_code == 200
    slug = sorted(apps["process"].extensions["pool"].kols())[0]
    assert proc.post("/import_result", data={"delete": slug}, headers=JSON).status_code == 200
    assert proc.post("/train_model", data={"job": job}, headers=JSON).status_code in (200, 202)
    # a refused action is not recorded as done
    assert proc.post("/import_result", data={"delete": "nobody-here"}, headers=JSON).status_code == 404
    rows = audit_rows(apps["main"])
    by_action = {}
    for row in rows:
        by_action.setdefault(row["action"], []).append(row)
    assert [r["detail"]["result"].startswith(PROCESS_URL + "/?job=") for r in by_action["job.upload"]] == [True]
    assert by_action["job.clean"][0]["detail"] == {"job": job}
    assert by_action["pool.import"][0]["detail"] == {"job": job, "kol": ["Ann", "Bob"]}
    assert by_action["kol.delete"][0]["detail"] == {"delete": slug}
    assert by_action["model.train"][0]["detail"] == {"job": job}
    assert len(by_action["kol.delete"]) == 1
    for row in rows:
        assert re.fullmatch(r"token:\d+:tests-admin", row["actor"])  # the token's id and name
        assert row["role"] == "admin" and row["via"] == "token"
        assert row["remote"] == "127.0.0.1" and row["at"].endswith("+00:00")
    assert {r["server"] for r in rows} == {"main", "process"}


def test_predictions_are_counted_not_logged(apps, data_dir):
    _synth.synthetic_model(data_dir)
    main = signed_in(apps["main"].test_client(), "member")
    r = main.post("/predictSingleImage", data={"file": (io.BytesIO(_synth.jpeg()), "p.jpg")},
                  content_type="multipart/form-data", headers=JSON)
    assert r.status_code == 422  # no face in random pixels: refused, so not counted
    for i in range(2):  # one photo per batch: runs in this process (no worker pool to start)
        r = main.post("/predictBatchImage", data={"file": [(io.BytesIO(_synth.jpeg(seed=i)), f"{i}.jpg")]},
                      content_type="multipart/form-data", headers=JSON)
        assert r.status_code == 200
    counts = apps["main"].extensions["accounts"].prediction_counts()
    member_id = apps["main"].extensions["accounts"].check_token(main.environ_base["HTTP_AUTHORIZATION"][7:])["id"]
    assert counts == [{"actor": f"token:{member_id}:tests-member", "kind": "batch", "count": 2,
                       "last_day": counts[0]["last_day"]}]
    assert audit_rows(apps["main"]) == []  # predictions never enter the trail


def test_audit_page_pages_and_csv(apps):
    acc = apps["main"].extensions["accounts"]
    for i in range(120):
        acc.record("boss", "kol.delete", {"delete": f"=cmd{i}"}, role="admin", via="session", remote="10.0.0.1")
    admin = signed_in(apps["main"].test_client(), "admin")
    page1 = admin.get("/admin/audit").get_data(as_text=True)
    assert "120 records" in page1 and "=cmd119" in page1 and "=cmd69" not in page1 and "page=2" in page1
    page3 = admin.get("/admin/audit?page=3", headers=JSON).get_json()
    assert page3["page"] == 3 and page3["pages"] == 3 and len(page3["rows"]) == 20
    assert page3["rows"][-1]["detail"] == {"delete": "=cmd0"}
    r = admin.get("/admin/audit.csv")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    lines = r.get_data(as_text=True).lstrip("\ufeff").splitlines()
    assert len(lines) == 121 and lines[0].startswith("id,at,actor") and "delete==cmd0" in lines[1]
    assert signed_in(apps["main"].test_client(), "member").get("/admin/audit.csv").status_code == 403


# -- sessions end server-side; tokens expire and follow their maker (issue 20) ------------------------
def ago(minutes):
    """The UTC time ``minutes`` ago, as the accounts database writes times."""
    return (datetime.now(timezone.utc) - timedelta(minutes=minutes)).replace(microsecond=0).isoformat()


def bearer(token):
    return {"Authorization": f"Bearer {token}", **JSON}


#: A page of each server that a member may open.
MEMBER_PAGE = {"main": "/", "process": "/import_result", "video": "/"}


def session_id(app, client):
    """The server-side session id in ``client``'s signed session cookie (read as Flask reads it)."""
    cookie = client.get_cookie("session").value
    return app.session_interface.get_signing_serializer(app).loads(cookie)["_user_id"].partition(":")[2]


def test_a_copied_cookie_is_refused_on_all_three_after_sign_out(three_apps):
    apps = three_apps
    mine, other = sign_in(apps), sign_in(apps)  # the same user in two browsers
    copied = mine["main"].get_cookie("session").value
    token = csrf_token(mine["main"].get("/account").get_data(as_text=True))
    assert mine["main"].post("/logout", data={"csrf_token": token}).status_code == 303
    for s in SECTIONS:
        thief = apps[s].test_client()
        thief.set_cookie("session", copied)
        assert thief.get("/", headers=JSON).status_code == 401, s
        r = thief.get("/", headers=HTML)
        assert r.status_code == 302 and urlsplit(r.headers["Location"]).path == "/login", s
        assert other[s].get("/", headers=JSON).status_code == 200, s  # signing out ends only that sign-in


def test_a_session_ends_when_idle_and_after_its_absolute_lifetime(three_apps):
    apps = three_apps
    acc, config = apps["main"].extensions["accounts"], apps["main"].config
    idle, hours = config["SESSION_IDLE_MINUTES"], config["SESSION_HOURS"]
    clients = sign_in(apps)
    assert clients["video"].get("/", headers=JSON).status_code == 200
    sessions = acc.sessions_table
    acc._run(sessions.update().values(last_seen_at=ago(idle + 1)))  # unused for longer than the idle limit
    for s in SECTIONS:
        assert clients[s].get("/", headers=JSON).status_code == 401, s
    clients = sign_in(apps)
    key = session_id(apps["main"], clients["main"])
    acc._run(sessions.update().where(sessions.c.id == key).values(last_seen_at=ago(idle - 2)))
    assert clients["process"].get("/", headers=JSON).status_code == 200  # used in time: it goes on
    assert acc._one(sa.select(sessions.c.last_seen_at).where(sessions.c.id == key))["last_seen_at"] >= ago(1)
    # used all along, but signed in longer ago than SESSION_HOURS: over
    acc._run(sessions.update().where(sessions.c.id == key).values(created_at=ago(hours * 60 + 1)))
    for s in SECTIONS:
        assert clients[s].get("/", headers=JSON).status_code == 401, s


def test_tokens_expire_after_the_days_they_were_given(three_apps, data_dir):
    apps = three_apps
    acc, config = apps["main"].extensions["accounts"], apps["main"].config
    main = sign_in(apps)["main"]
    token = csrf_token(main.get("/admin/users").get_data(as_text=True))

    def make(**fields):
        return main.post("/admin/tokens", data={"action": "create", "name": "ci", "role": "member",
                                                "csrf_token": token, **fields}, headers=JSON)

    for bad in (str(config["TOKEN_MAX_DAYS"] + 1), "0", "soon"):
        r = make(days=bad)
        assert r.status_code == 400 and f"1 to {config['TOKEN_MAX_DAYS']} days" in r.get_json()["error"], bad
    for days, fields in ((config["TOKEN_DAYS"], {}), (2, {"days": "2"})):
        made = make(**fields).get_json()
        row = acc.token(made["id"])
        lasts = datetime.fromisoformat(made["expires_at"]) - datetime.fromisoformat(row["created_at"])
        assert lasts == timedelta(days=days) and row["expires_at"] == made["expires_at"]
    listed = main.get("/admin/users", headers=JSON).get_json()["tokens"]
    assert listed[0]["expires_at"] == made["expires_at"]
    assert made["expires_at"][:10] in main.get("/admin/users").get_data(as_text=True)
    for s in SECTIONS:
        assert apps[s].test_client().get(MEMBER_PAGE[s], headers=bearer(made["token"])).status_code == 200, s
    acc._run(acc.tokens_table.update().where(acc.tokens_table.c.id == made["id"]).values(expires_at=ago(1)))
    for s in SECTIONS:
        r = apps[s].test_client().get(MEMBER_PAGE[s], headers=bearer(made["token"]))
        assert r.status_code == 401 and "expired" in r.get_json()["error"], s
    # the command line: --days, within the same limit
    out = flask_cli(data_dir, "create-token", "nightly", "--days", "3")
    assert out.returncode == 0, out.stderr
    row = next(t for t in acc.tokens() if t["name"] == "nightly")
    assert datetime.fromisoformat(row["expires_at"]) - datetime.fromisoformat(row["created_at"]) == timedelta(days=3)
    out = flask_cli(data_dir, "create-token", "forever", "--days", "100000")
    assert out.returncode != 0 and "1 to 365 days" in out.stderr


def test_a_token_never_has_more_rights_than_its_maker(three_apps):
    apps = three_apps
    acc = apps["main"].extensions["accounts"]
    acc.create_user("ann", PASSWORD, "admin")
    ann = sign_in(apps, "ann")["main"]
    token = csrf_token(ann.get("/admin/users").get_data(as_text=True))
    made = ann.post("/admin/tokens", data={"action": "create", "name": "ann-script", "role": "admin",
                                           "csrf_token": token}, headers=JSON).get_json()

    def make_admin(name):
        return apps["main"].test_client().post(
            "/admin/users", data={"action": "create", "name": name, "password": PASSWORD, "role": "admin"},
            headers=bearer(made["token"]))

    assert make_admin("by-script").status_code == 200  # ann is an admin: so is her token
    boss = sign_in(apps)["main"]
    token = csrf_token(boss.get("/admin/users").get_data(as_text=True))
    ann_id = next(u["id"] for u in acc.users() if u["name"] == "ann")
    assert boss.post("/admin/users", data={"action": "role", "user": str(ann_id), "role": "member",
                                           "csrf_token": token}).status_code == 303
    r = make_admin("by-script-2")
    assert r.status_code == 403 and "only an admin may do this" in r.get_json()["error"]
    assert apps["video"].test_client().get("/", headers=bearer(made["token"])).status_code == 200
    assert boss.post("/admin/users", data={"action": "delete", "user": str(ann_id),
                                           "csrf_token": token}).status_code == 303
    for s in SECTIONS:
        assert apps[s].test_client().get("/", headers=bearer(made["token"])).status_code == 401, s
    assert acc.token(made["id"])["revoked_at"]  # revoked with her account, as the Users page shows
    # a token cannot make tokens (its own maker's rights could not be followed); the command line's can be used
    r = signed_in(apps["main"].test_client(), "admin").post(
        "/admin/tokens", data={"action": "create", "name": "x", "role": "admin"}, headers=JSON)
    assert r.status_code == 403 and "cannot make tokens" in r.get_json()["error"]
    assert signed_in(apps["main"].test_client(), "admin").get("/admin/users", headers=JSON).status_code == 200


def test_tokens_of_an_older_database_get_an_expiry_and_their_maker(tmp_path):
    """A database made before tokens expired: its tokens last TOKEN_DAYS from the upgrade, and one
    made on the Users page follows the user its created_by names."""
    import sqlite3

    from shared.web.account_rules import TOKEN_DAYS
    from shared.web.accounts import Accounts

    path = tmp_path / "accounts.sqlite3"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE COLLATE NOCASE,
            password_hash TEXT NOT NULL, role TEXT NOT NULL, session_key TEXT NOT NULL, created_at TEXT NOT NULL,
            created_by TEXT);
        CREATE TABLE tokens (id INTEGER PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL, created_by TEXT, last_used_at TEXT,
            revoked_at TEXT);
        INSERT INTO users VALUES (1, 'ann', 'x', 'member', 'k', '2026-01-01T00:00:00+00:00', NULL);
        INSERT INTO tokens VALUES (1, 'by-ann', 'admin', 'h1', '2026-01-01T00:00:00+00:00', 'ann', NULL, NULL);
        INSERT INTO tokens VALUES (2, 'by-cli', 'admin', 'h2', '2026-01-01T00:00:00+00:00', 'command line', NULL, NULL);
    """)
    old.close()
    before = ago(-TOKEN_DAYS * 24 * 60)
    tokens = {t["name"]: t for t in Accounts(path).tokens()}
    assert before <= tokens["by-ann"]["expires_at"] <= ago(-TOKEN_DAYS * 24 * 60 - 1)
    assert (tokens["by-ann"]["maker_id"], tokens["by-ann"]["acts_as"]) == (1, "member")  # ann is a member now
    assert (tokens["by-cli"]["maker_id"], tokens["by-cli"]["acts_as"]) == (None, "admin")
    assert Accounts(path).tokens() == list(tokens.values())  # opened again: nothing changes


def test_two_tokens_of_one_name_are_told_apart_in_the_audit_trail(three_apps):
    apps = three_apps
    acc = apps["main"].extensions["accounts"]
    made = [acc.create_token("deploy", "admin", created_by="tests") for _ in range(2)]
    for i, (tok, _) in enumerate(made):
        r = apps["main"].test_client().post(
            "/admin/users", data={"action": "create", "name": f"u{i}", "password": PASSWORD, "role": "member"},
            headers=bearer(tok))
        assert r.status_code == 200
    actors = [row["actor"] for row in audit_rows(apps["main"]) if row["action"] == "user.create"]
    assert actors == [f"token:{row['id']}:deploy" for _, row in reversed(made)]


def test_the_audit_and_account_pages_show_every_kind_of_detail(data_dir):
    """After /setup (detail first_run: true) and a token made on the page (token_id: a number)."""
    from main_server import create_app

    app = create_app({"TESTING": True, "DATA_DIR": str(data_dir), "SECRET_KEY": "test", "MAIN_URL": MAIN_URL})
    main = app.test_client()
    token = csrf_token(main.get("/setup").get_data(as_text=True))
    assert main.post("/setup", data={"name": "root", "password": PASSWORD, "password2": PASSWORD,
                                     "csrf_token": token}).status_code == 303
    token = csrf_token(main.get("/admin/users").get_data(as_text=True))  # the signed-in session's own
    assert main.post("/admin/tokens", data={"action": "create", "name": "ci", "role": "member",
                                            "csrf_token": token}).status_code == 200
    r = main.get("/account", headers=HTML)
    assert r.status_code == 200 and "first_run" in r.get_data(as_text=True)
    app.extensions["accounts"].record("root", "test.values", {"none": None, "list": ["a", 2], "map": {"k": 1.5}})
    r = main.get("/admin/audit", headers=HTML)
    page = r.get_data(as_text=True)
    assert r.status_code == 200, page[:300]
    assert re.search(r"first_run</span> true", page) and re.search(r"token_id</span> \d+", page)
    assert "a, 2" in page and "k=1.5" in page and "none</span> null" in page


def test_setup_is_closed_once_a_token_exists(data_dir):
    """An install made with ``create-token`` alone: nobody may make themselves the first admin."""
    from main_server import create_app as main_app
    from process_server import create_app as process_app

    cfg = {"TESTING": True, "DATA_DIR": str(data_dir), "SECRET_KEY": "test", "MAIN_URL": MAIN_URL,
           "PROCESS_URL": PROCESS_URL, "VIDEO_URL": VIDEO_URL}
    app = main_app(cfg)
    app.extensions["accounts"].create_token("script", "admin", created_by="command line")
    main, proc = app.test_client(), process_app(cfg).test_client()
    login = main.get("/login")
    assert login.status_code == 200 and "Sign in" in login.get_data(as_text=True)
    assert "/setup" not in login.get_data(as_text=True) and "create-user" in login.get_data(as_text=True)
    assert main.get("/setup").status_code == 404
    token = csrf_token(login.get_data(as_text=True))
    assert main.post("/setup", data={"name": "me", "password": PASSWORD, "password2": PASSWORD,
                                     "csrf_token": token}).status_code == 404
    assert app.extensions["accounts"].users() == []
    for client in (main, proc):
        r = client.get("/")
        assert r.status_code == 302 and urlsplit(r.headers["Location"]).path == "/login"
        r = client.get("/", headers=JSON)
        assert r.status_code == 401 and "setup" not in r.get_json()["error"] and "Sign in" in r.get_json()["error"]


# -- headers ------------------------------------------------------------------------------------------------
def test_security_headers_and_https_cookie(data_dir, apps):
    r = signed_in(apps["main"].test_client(), "admin").get("/")
    csp = r.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline' " not in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["X-Frame-Options"] == "DENY"
    assert "private" in r.headers["Cache-Control"]  # a signed-in page is kept by no shared cache
    from main_server import create_app

    app = create_app({"TESTING": True, "DATA_DIR": str(data_dir), "SECRET_KEY": "test", "PROXY_FIX": 1,
                      "MAIN_URL": "https://kol.example", "SESSION_HOURS": 2})
    client = app.test_client()
    r = client.get("/login", headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "kol.example"})
    assert r.headers["Strict-Transport-Security"].startswith("max-age=")
    token = csrf_token(r.get_data(as_text=True))
    r = client.post("/login", data={"name": "boss", "password": PASSWORD, "csrf_token": token},
                    headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "kol.example"})
    assert r.status_code == 303
    cookie = r.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert app.permanent_session_lifetime.total_seconds() == 7200


def test_inline_scripts_carry_the_nonce():
    """The CSP allows no inline script without the response's nonce: every <script> in a template
    is either a static file or carries ``nonce="{{ csp_nonce() }}"``; no inline handlers or javascript: links."""
    bad = []
    for path in (ROOT / "templates").rglob("*.html"):
        text = path.read_text()
        for tag in re.findall(r"<script\b[^>]*>", text):
            if "src=" not in tag and 'nonce="{{ csp_nonce() }}"' not in tag:
                bad.append(f"{path.name}: {tag}")
        bad += [f"{path.name}: {m}" for m in re.findall(r"\son[a-z]+=\"", text)]
        bad += [f"{path.name}: javascript:" for _ in re.findall(r"javascript:", text)]
        bad += [f"{path.name}: <style>" for _ in re.findall(r"<style\b", text)]
    assert bad == []


def test_every_post_form_has_the_csrf_field():
    bad = []
    for path in (ROOT / "templates").rglob("*.html"):
        for form in re.findall(r"<form\b[^>]*method=\"post\"[^>]*>(.{0,60})", path.read_text(), re.I | re.S):
            if "csrf_field()" not in form:
                bad.append(f"{path.relative_to(ROOT)}: {form[:40]}")
    assert bad == []


# -- over real HTTP, with the real command line -------------------------------------------------------------
def flask_cli(data_dir, *args, stdin=None):
    env = {"DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "flask", "--app", "main_server", *args], cwd=ROOT, env=env,
                          input=stdin, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def fresh_stack(tmp_path_factory):
    """Live servers of their own (no user and no token yet: the first run)."""
    base = tmp_path_factory.mktemp("live-auth")
    stack = LiveServers(base / "data", base)
    stack.accounts._run(stack.accounts.tokens_table.delete())  # LiveServers' own token would end the first run
    yield stack
    stack.stop()


@pytest.mark.live
@pytest.mark.browser
def test_first_run_in_a_browser_then_a_member_sees_no_admin_actions(fresh_stack, browser):
    main, process = fresh_stack.urls["main"], fresh_stack.urls["process"]
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    errors = []
    pg.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    pg.goto(process + "/")  # any page of any server leads to the first-run page
    assert pg.url == main + "/setup"
    screenshot(pg, "auth-01-first-run")
    pg.fill("#name", "Ada")
    pg.fill("#password", PASSWORD)
    pg.fill("#password2", PASSWORD)
    with pg.expect_navigation():
        pg.click("button[type=submit]")
    assert pg.url == main + "/trainModel"  # issue 25: a new install is led to training
    assert "Now teach the tool your first KOLs" in pg.inner_text("main")
    pg.goto(main + "/admin/users")
    pg.fill("#new-name", "Mo")
    pg.fill("#new-password", PASSWORD)
    pg.select_option("#new-role", "member")
    with pg.expect_navigation():
        pg.click("#add-user button[type=submit]")
    assert "Mo" in pg.locator("#users").inner_text()
    screenshot(pg, "auth-02-users")
    assert pg.goto(main + "/setup").status == 404  # gone after the first admin
    with pg.expect_navigation():
        pg.click("form.signout button")
    assert pg.url.startswith(main + "/login")
    context.close()
    # the member signs in on the way to the video server and comes back there
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    pg.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    pg.goto(fresh_stack.urls["video"] + "/")
    assert pg.url.startswith(main + "/login?next=")
    pg.fill("#name", "Mo")
    pg.fill("#password", PASSWORD)
    with pg.expect_navigation():
        pg.click("form.upload button[type=submit]")
    assert pg.url == fresh_stack.urls["video"] + "/"
    pg.goto(main + "/")
    header = pg.locator("header").inner_text()
    assert "Mo" in header and "member" in header
    for hidden in ("Train", "Training jobs", "Users", "Audit"):
        assert pg.locator("header nav a", has_text=hidden).count() == 0, hidden
    assert pg.locator("a.mode.train").count() == 0
    screenshot(pg, "auth-03-member-home")
    pg.goto(process + "/import_result")  # the pool summary: no delete buttons
    assert pg.locator("input[name=delete]").count() == 0
    response = pg.goto(main + "/trainModel")
    assert response.status == 403 and "only an admin may do this" in pg.inner_text("main")
    screenshot(pg, "auth-04-member-403")
    context.close()
    # no CSP violation or script error on any page (the 404 and the 403 above are expected answers)
    assert [e for e in errors if not e.startswith("Failed to load resource")] == []
    assert len(errors) == 2, errors


@pytest.mark.live
def test_contract_access_scripts(fresh_stack):
    """docs/api.md "Access": the command line makes tokens and users; tokens work on all three servers."""
    data = fresh_stack.data_dir
    out = flask_cli(data, "create-token", "script", "--role", "member")
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"kol_[A-Za-z0-9_-]{40,}", token)
    auth = {"Authorization": f"Bearer {token}", **JSON}
    for name, url in fresh_stack.urls.items():
        assert requests.get(url + "/", headers={"Accept": "application/json"}, timeout=10).status_code == 401, name
    assert requests.get(fresh_stack.urls["main"] + "/", headers=auth, timeout=10).status_code == 200
    assert requests.get(fresh_stack.urls["video"] + "/", headers=auth, timeout=10).status_code == 200
    r = requests.get(fresh_stack.urls["process"] + "/", headers=auth, timeout=10)
    assert r.status_code == 403 and "only an admin" in r.json()["error"]
    out = flask_cli(data, "create-user", "cli-admin", "--role", "admin", stdin=PASSWORD + "\n")
    assert out.returncode == 0, out.stderr
    out = flask_cli(data, "create-user", "weak", "--role", "admin", stdin="short\n")
    assert out.returncode != 0 and "at least 8" in out.stderr
    # a browser-like session signed in with that password works on the other servers too
    s = requests.Session()
    page = s.get(fresh_stack.urls["main"] + "/login", timeout=10).text
    r = s.post(fresh_stack.urls["main"] + "/login", data={"name": "cli-admin", "password": PASSWORD,
                                                          "csrf_token": csrf_token(page)},
               allow_redirects=False, timeout=10)
    assert r.status_code == 303
    assert s.get(fresh_stack.urls["process"] + "/", headers=JSON, timeout=10).status_code == 200
    r = s.post(fresh_stack.urls["process"] + "/import_result", data={"delete": "nobody"}, headers=JSON, timeout=10)
    assert r.status_code == 400 and "CSRF" in r.json()["error"]  # a cross-site form post without the token
    actions = [(row["actor"], row["action"]) for row in fresh_stack.accounts.audit(0, 100)[0]]
    assert ("command line", "token.create") in actions and ("command line", "user.create") in actions
    assert ("cli-admin", "sign-in") in actions
