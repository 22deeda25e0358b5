"""The three app factories, /healthz, / and the shared error handling."""
import pytest

from .conftest import ROOT

APPS = ["main_app", "process_app", "video_app"]


@pytest.mark.parametrize("name", APPS)
def test_healthz_and_home(name, request):
    app = request.getfixturevalue(name)
    client = app.test_client()
    r = client.get("/healthz")
    assert r.status_code == 200 and r.get_json()["status"] == "ok"
    r = client.get("/")
    assert r.status_code == 200 and b"KOL" in r.data and b"<html" in r.data


@pytest.mark.parametrize("name", APPS)
def test_unknown_route_is_a_404_page_or_json(name, request):
    client = request.getfixturevalue(name).test_client()
    r = client.get("/no/such/page")
    assert r.status_code == 404 and b"There is no page at this address" in r.data
    r = client.get("/no/such/page", headers={"Accept": "application/json"})
    assert r.status_code == 404 and r.get_json() == {"error": "There is no page at this address."}


def test_home_json_reports_pool_and_no_model(client):
    r = client.get("/", headers={"Accept": "application/json"})
    assert r.get_json() == {"pool": {"kols": 0, "chips": 0}, "model": None}
    assert b"No model is trained yet" in client.get("/").data


def test_config_layers_and_secret_key(tmp_path, monkeypatch):
    from main_server import create_app

    monkeypatch.setenv("PROCESS_URL", "http://proc.example:9/")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    app = create_app({"DATA_DIR": str(tmp_path / "d")})
    assert app.config["PROCESS_URL"] == "http://proc.example:9"
    key_file = tmp_path / "d" / "instance" / "secret_key"
    assert key_file.read_text() == app.config["SECRET_KEY"] and len(app.config["SECRET_KEY"]) == 64
    assert create_app({"DATA_DIR": str(tmp_path / "d")}).config["SECRET_KEY"] == app.config["SECRET_KEY"]
    assert "proc.example:9/trainModel" not in app.test_client().get("/").get_data(as_text=True)
    assert create_app({"DATA_DIR": str(tmp_path / "d"), "PROCESS_URL": "http://x"}).config["PROCESS_URL"] == "http://x"


def test_no_secret_in_repository():
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert not [f for f in tracked if "secret" in f.lower() or f.startswith("data/") and f != "data/.gitkeep"]


def test_live_servers_answer_over_http(live_servers):
    for name, url in live_servers.urls.items():
        assert live_servers.http.get(url + "/healthz", timeout=5).json() == {"status": "ok", "server": name}
        page = live_servers.http.get(url + "/", timeout=5)
        assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    # cross-server links come from config, not a hard-coded localhost:5000
    home = live_servers.http.get(live_servers.urls["process"] + "/", timeout=5).text
    assert live_servers.urls["main"] + "/trainModel" in home


def test_too_many_parts_says_so_not_too_large(tmp_path):
    import io

    from main_server import create_app

    app = create_app({"TESTING": True, "DATA_DIR": str(tmp_path), "MAX_FORM_PARTS": 10})
    data = {"file": [(io.BytesIO(b"x"), f"{i}.jpg") for i in range(20)]}
    r = app.test_client().post("/predictBatchImage", data=data, content_type="multipart/form-data",
                               headers={"Accept": "application/json"})
    assert r.status_code == 413
    assert "too many files" in r.get_json()["error"] and "10 at most" in r.get_json()["error"]
