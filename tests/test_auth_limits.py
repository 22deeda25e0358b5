"""Limits on guessing and the rules for names and passwords (main_server/accounts.py's limiter, shared/web/accounts.py).

- Failed sign-ins are counted per address and account together, per account and per address,
  in the real Redis of the job queue: one person's typos do not lock out an office behind one
  address, and guessing one account from many addresses still stops.
- User and token names follow the rule of KOL names (shared/core/names.py): no hidden characters,
  look-alikes are one name.
- Passwords: long enough, mixed when short, not the name, not a common one.
"""
import pytest

from shared.core.errors import UserError

from ._synth import JSON
from .conftest import signed_in
from .test_auth import PASSWORD, csrf_token

MAIN_URL = "http://main.test:5000"


def main_app(data_dir, redis_url, **settings):
    """The main server's app on ``data_dir``, counting sign-ins in ``redis_url``, with users ann and bob."""
    from main_server import create_app

    app = create_app({"TESTING": True, "DATA_DIR": str(data_dir), "SECRET_KEY": "test", "MAIN_URL": MAIN_URL,
                      "REDIS_URL": redis_url, **settings})
    for name in ("ann", "bob"):
        app.extensions["accounts"].create_user(name, PASSWORD, "member")
    return app


def browser(app, address):
    """``(client, csrf token)``: a browser at ``address``, nobody signed in, with the sign-in form open."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client, csrf_token(client.get("/login").get_data(as_text=True))


def attempt(app, address, name, password):
    """One sign-in from ``address``: the response (JSON)."""
    client, token = browser(app, address)
    return client.post("/login", data={"name": name, "password": password, "csrf_token": token}, headers=JSON)


def test_one_persons_typos_do_not_lock_out_the_office_behind_the_same_address(data_dir, redis_url):
    app = main_app(data_dir, redis_url)
    codes = [attempt(app, "10.1.1.1", "ann", f"typo{i}").status_code for i in range(11)]
    assert codes == [401] * 10 + [429], codes
    # bob, at the next desk (the same address), signs in, and his own typo is only a typo
    r = attempt(app, "10.1.1.1", "bob", PASSWORD)
    assert r.status_code == 200 and r.get_json() == {"signed_in": "bob", "role": "member"}, r.get_data(as_text=True)
    assert attempt(app, "10.1.1.1", "bob", "typo").status_code == 401
    r = attempt(app, "10.1.1.1", "ann", PASSWORD)  # ann herself waits
    assert r.status_code == 429 and "for this account from this address" in r.get_json()["error"]


def test_guessing_one_account_from_many_addresses_stops_at_the_account_limit(data_dir, redis_url):
    app = main_app(data_dir, redis_url)  # the defaults: 10 a minute per address and account, 30 an hour per account
    codes = [attempt(app, f"10.2.0.{i // 10}", "ANN ", f"guess{i}").status_code for i in range(30)]
    assert codes == [401] * 30, codes
    r = attempt(app, "10.2.0.9", "ann", PASSWORD)  # a fresh address, the right password: refused for now
    assert r.status_code == 429 and "for this account (at most 30 per hour)" in r.get_json()["error"]
    assert attempt(app, "10.2.0.9", "bob", PASSWORD).status_code == 200  # other accounts are not touched


def test_one_address_trying_many_accounts_stops_at_the_address_limit(data_dir, redis_url):
    app = main_app(data_dir, redis_url, LOGIN_ADDRESS_LIMIT="5 per minute")
    codes = [attempt(app, "10.3.0.1", f"user{i}", "guess").status_code for i in range(6)]
    assert codes == [401] * 5 + [429], codes
    assert "from this address" in attempt(app, "10.3.0.1", "bob", PASSWORD).get_json()["error"]
    assert attempt(app, "10.3.0.2", "bob", PASSWORD).status_code == 200  # another address is not touched


def test_each_app_counts_in_its_own_storage_whatever_another_app_met(data_dir, redis_url, tmp_path):
    """Two apps in one process (as in these tests) do not share a limiter: one whose storage is down
    (it falls back to memory) leaves the next app counting in its own Redis, not in that memory."""
    import redis

    down = main_app(tmp_path / "other", redis_url, RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/0")  # nobody there
    for _ in range(2):  # the first marks its storage dead, the second tries it again
        assert attempt(down, "10.9.9.9", "ann", "typo").status_code == 401
    app = main_app(data_dir, redis_url)
    assert attempt(app, "10.9.9.9", "ann", "typo").status_code == 401
    assert redis.Redis.from_url(redis_url).keys("*kol-sign-in*"), "the failed sign-in was not counted in Redis"


# -- names ------------------------------------------------------------------------------------------------
@pytest.fixture
def admin(data_dir, redis_url):
    """The main server's admin (an API token), with users ann and bob."""
    return signed_in(main_app(data_dir, redis_url).test_client(), "admin")


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
    with pytest.raises(UserError) as refused:  # tokens are made by signed-in admins or the command line
        admin.application.extensions["accounts"].create_token(name, "member")
    assert refused.value.status == 400 and hidden in refused.value.message
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
