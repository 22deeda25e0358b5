"""First run and the account pages as a new staffer meets them (issue 25): after creating the first admin
one lands on training; the home page without a model leads with Train; the Users page offers no
Remove on one's own row (also right after making a token); adding a user says so."""
import re

from . import test_auth
from .conftest import signed_in
from .test_auth import MAIN_URL, PASSWORD, csrf_token, sign_in

three_apps = test_auth.three_apps  # the fixture: the three apps on one data folder, with the admin "boss"


def _users_rows(html):
    """``{user name: row html}`` of the Users table."""
    table = html[html.index('id="users"'):html.index("</table>", html.index('id="users"'))]
    return {re.search(r"<td>([^<]+)</td>", row).group(1): row for row in table.split("<tr>")[1:]}


def test_after_setup_one_lands_on_training(data_dir):
    from main_server import create_app

    main = create_app({"TESTING": True, "DATA_DIR": str(data_dir), "SECRET_KEY": "test",
                       "MAIN_URL": MAIN_URL}).test_client()
    token = csrf_token(main.get("/setup").get_data(as_text=True))
    r = main.post("/setup", data={"name": "root", "password": PASSWORD, "password2": PASSWORD, "csrf_token": token})
    assert r.status_code == 303 and r.headers["Location"].endswith("/trainModel"), r.headers["Location"]
    page = main.get(r.headers["Location"]).get_data(as_text=True)
    assert "Your admin account root is ready. Now teach the tool your first KOLs" in page


def test_home_without_a_model_leads_with_train(three_apps):
    admin = signed_in(three_apps["main"].test_client(), "admin")
    home = admin.get("/").get_data(as_text=True)
    cards = re.findall(r'<a class="mode card([^"]*)"', home)
    assert cards and "train" in cards[0], cards
    member = signed_in(three_apps["main"].test_client(), "member").get("/").get_data(as_text=True)
    assert "mode card train" not in member


def test_no_remove_on_ones_own_row_and_adding_a_user_says_so(three_apps):
    clients = sign_in(three_apps)
    main = clients["main"]
    page = main.get("/admin/users").get_data(as_text=True)
    token = csrf_token(page)
    r = main.post("/admin/users", data={"action": "create", "name": "mia", "password": PASSWORD, "role": "member",
                                        "csrf_token": token}, follow_redirects=True)
    page = r.get_data(as_text=True)
    assert "The user mia (member) was added" in page
    rows = _users_rows(page)
    assert 'value="delete"' not in rows["boss"] and 'value="delete"' in rows["mia"]
    r = main.post("/admin/tokens", data={"action": "create", "name": "ci", "role": "member", "csrf_token": token})
    rows = _users_rows(r.get_data(as_text=True))
    assert 'value="delete"' not in rows["boss"] and 'value="delete"' in rows["mia"]
