"""Limits on guessing and the rules for names and passwords (shared/auth.py's limiter, shared/accounts.py).

- Failed sign-ins are counted per address and account together, per account and per address,
  in the real Redis of the job queue: one person's typos do not lock out an office behind one
  address, and guessing one account from many addresses still stops.
- User and token names follow the rule of KOL names (shared/names.py): no hidden characters,
  look-alikes are one name.
- Passwords: long enough, mixed when short, not the name, not a common one.
"""
import pytest

from ._synth import JSON
from .test_auth import PASSWORD

MAIN_URL = "http://main.test:5000"


def main_app(data_dir, redis_url, **settings):
    """The main server's app on ``data_dir``, counting sign-ins in ``redis_url``, with users ann and bob."""
    from main_server import create_app

    app = create_app({"TESTING": True, "DATA_DIR": str(data_dir), "SECRET_KEY": "test", "MAIN_URL": MAIN_URL,
                      "REDIS_URL": redis_url, **settings})
    for name in ("ann", "bob"):
        app.extensions["accounts"].create_user(name, PASSWORD, "member")
    return app


# -- names ------------------------------------------------------------------------------------------------
@pytest.fixture
def admin(data_dir, redis_url):
    """The main server's admin (an API token), with users ann and bob."""
    return main_app(data_dir, redis_url).test_client()


def create(admin, name, password=PASSWORD):
    return admin.post("/admin/users", data={"action": "create", "name": name, "password": password,
                                            "role": "member"}, headers=JSON)


@pytest.mark.parametrize("name, hidden", [
    ("ann\u202egnp.exe", "U+202E RIGHT-TO-LEFT OVERRIDE"),
    ("b\u200bob", "U+200B ZERO WIDTH SPACE"),
    ("carl\u00a0x", "U+00A0 NO-BREAK SPACE"),
    ("dan\tx", "U+0009 control"),
])
def test_user_and_token_names_with_hidden_characters_are_refused(admin, name, hidden):
    r = create(admin, name)
    assert r.status_code == 400 and hidden in r.get_json()["error"], r.get_data(as_text=True)
    r = admin.post("/admin/tokens", data={"action": "create", "name": name, "role": "member"}, headers=JSON)
    assert r.status_code == 400 and hidden in r.get_json()["error"], r.get_data(as_text=True)
    names = [u["name"] for u in admin.get("/admin/users", headers=JSON).get_json()["users"]]
    assert names == ["ann", "bob"]


@pytest.mark.parametrize("look_alike", ["ＡＮＮ", "Ánn", "a-n-n", "A n n"])
def test_a_user_name_that_looks_like_a_taken_one_is_refused(admin, look_alike):
    r = create(admin, look_alike)
    assert r.status_code == 409 and "already a user named 'ann'" in r.get_json()["error"], r.get_data(as_text=True)


def test_names_in_other_scripts_and_with_inner_spaces_are_kept(admin):
    for name, kept in (("José  Müller", "José Müller"), ("周杰伦", "周杰伦"), ("Ann Lee", "Ann Lee")):
        r = create(admin, name)
        assert r.status_code == 200, r.get_data(as_text=True)
        assert kept in [u["name"] for u in r.get_json()["users"]]


# -- passwords --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("password, sentence", [
    ("short1!", "at least 8 characters"),
    ("abcdefgh", "must mix letters with digits"),
    ("47110815", "must mix letters with digits"),
    ("Mallory2024!", "not be the user name"),
    ("Password123!", "most common ones"),
    ("qwerty123", "most common ones"),
    ("1q2w3e4r5t", "most common ones"),
])
def test_weak_passwords_are_refused_with_the_rule_they_break(admin, password, sentence):
    r = create(admin, "mallory", password)
    assert r.status_code == 400 and sentence in r.get_json()["error"], (password, r.get_data(as_text=True))
    assert "mallory" not in [u["name"] for u in admin.get("/admin/users", headers=JSON).get_json()["users"]]


@pytest.mark.parametrize("password", ["correct horse battery", "tr4in-the-model", "lettersonlybutlong"])
def test_good_passwords_are_accepted(admin, password):
    assert create(admin, "mallory", password).status_code == 200


def test_a_new_password_follows_the_rule_too(admin):
    ann = next(u for u in admin.get("/admin/users", headers=JSON).get_json()["users"] if u["name"] == "ann")
    r = admin.post("/admin/users", data={"action": "password", "user": str(ann["id"]), "password": "Ann-2024"},
                   headers=JSON)
    assert r.status_code == 400 and "not be the user name" in r.get_json()["error"]
