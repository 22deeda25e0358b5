"""Security basics: no path from the request, files served only from data/, loopback by default,
secrets outside the repository, and no open redirects."""
import ast
import io
import os
import re
import subprocess
from pathlib import Path

import pytest

from . import _synth
from ._synth import JSON
from .conftest import FIVE, ROOT, VIDEO

VIEW_MODULES = sorted([*ROOT.glob("main_server/*.py"), *ROOT.glob("process_server/*.py"),
                       *ROOT.glob("video_server/*.py"), ROOT / "shared" / "web.py"])
#: Calls that turn a value into a file access; nothing from ``request`` may flow straight into them.
PATH_SINKS = {"open", "Path", "PurePath", "send_file", "send_from_directory", "data_path", "joinpath", "join",
              "unlink", "rmtree", "read_bytes", "read_text", "write_bytes", "listdir", "scandir", "exists"}


def _name(func):
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _mentions_request(node):
    return any(isinstance(n, ast.Name) and n.id == "request" for n in ast.walk(node))


@pytest.mark.parametrize("module", VIEW_MODULES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_view_reads_a_path_taken_from_the_request(module):
    tree = ast.parse(module.read_text(), str(module))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _name(node.func)
            if name == "send_file":
                bad.append(f"line {node.lineno}: send_file (use send_from_directory under DATA_DIR)")
            if name in PATH_SINKS and any(_mentions_request(a) for a in [*node.args, *[k.value for k in node.keywords]]):
                bad.append(f"line {node.lineno}: {name}(...request...)")
            if name in PATH_SINKS and isinstance(node.func, ast.Attribute) and _mentions_request(node.func.value):
                bad.append(f"line {node.lineno}: request...{name}()")
    assert bad == [], f"{module.name}: {bad}"


def _served_paths(response):
    return response.headers.get("X-Sendfile")


@pytest.fixture
def sendfile_apps(data_dir, redis_url, queue_workers):
    """The apps with Flask's X-Sendfile mode on: send_from_directory then names the file it serves
    in the ``X-Sendfile`` header instead of sending it, so the test can see every served path."""
    from main_server import create_app as main_app
    from process_server import create_app as process_app

    cfg = {"DATA_DIR": str(data_dir), "SECRET_KEY": "t", "USE_X_SENDFILE": True, "REDIS_URL": redis_url}
    return {"main": main_app(cfg).test_client(), "process": process_app(cfg).test_client(), "data_dir": data_dir}


def test_every_served_file_is_under_data_dir(sendfile_apps):
    c, data_dir = sendfile_apps, Path(sendfile_apps["data_dir"]).resolve()
    job = _synth.aligned_job(data_dir, kols=("Ann", "Bob"), per_kol=3)
    assert c["process"].post("/clean", data={"job": job}, headers=JSON).status_code == 200
    assert c["process"].post("/import_result", data={"job": job}, headers=JSON).status_code == 200
    _synth.synthetic_model(data_dir)
    from shared.jobs import JobStore
    from shared.pool import Pool

    align = JobStore(data_dir / "jobs").read(job, "align")
    crop = align["kols"][0]["sources"][0]["crops"][0]["crop"]
    slug, info = next(iter(Pool(data_dir / "pool").kols().items()))
    urls = [("process", f"/chip?job={job}&kol=0&crop={crop}"),
            ("process", f"/pool_chip?kol={slug}&crop={info['chips'][0]}"),
            ("main", f"/similar/photo/{slug}/{info['chips'][0]}.png")]
    if FIVE.is_dir():  # a prediction with a real face leaves an annotated photo and a CSV to serve
        photo = (FIVE / "ben_afflek" / "train_1.jpg").read_bytes()
        page = c["main"].post("/predictSingleImage", data={"file": (io.BytesIO(photo), "ben.jpg")},
                              content_type="multipart/form-data").get_data(as_text=True)
        urls += [("main", u) for u in re.findall(r'"(/predictions/[0-9a-f]{32}/annotated\.jpg)"', page)[:1]]
        page = c["main"].post("/predictBatchImage", data={"file": [(io.BytesIO(photo), "ben.jpg")]},
                              content_type="multipart/form-data").get_data(as_text=True)
        urls += [("main", u) for u in re.findall(r'"(/predictions/[0-9a-f]{32}/results\.csv)"', page)[:1]]
    served = []
    for server, url in urls:
        r = c[server].get(url)
        assert r.status_code == 200, (url, r.status_code)
        path = Path(_served_paths(r)).resolve()
        assert data_dir in path.parents and path.is_file(), (url, path)
        served.append(path)
    assert len(served) == len(urls) == (5 if FIVE.is_dir() else 3), urls


def test_servers_bind_to_loopback_by_default():
    procfile = (ROOT / "Procfile").read_text().splitlines()
    assert {line.split(":")[0] for line in procfile if line.strip()} == {"main", "process", "video", "redis", "worker"}
    # the job queue's Redis listens on loopback and its unix socket only; the workers listen on nothing
    redis_script = (ROOT / "bin" / "redis").read_text()
    assert "--bind 127.0.0.1 " in redis_script and "0.0.0.0" not in redis_script
    assert next(l for l in procfile if l.startswith("redis:")) == "redis: bin/redis"
    for line in procfile:
        if not line.strip() or line.split(":")[0] in ("redis", "worker"):
            continue
        binds = re.findall(r"--bind\s+(\S+)", line)
        assert binds and all(b.startswith("${HOST:-127.0.0.1}:") for b in binds), line  # configurable, loopback
        assert "0.0.0.0" not in line
    conf = (ROOT / "gunicorn.conf.py").read_text()
    assert not re.search(r"^\s*bind\s*=", conf, re.M), "gunicorn.conf.py must not override the Procfile's bind"
    # the default public URLs (used for cross-server links) are loopback too
    from shared.web import DEFAULTS

    assert all(DEFAULTS[k].startswith("http://127.0.0.1:") for k in ("MAIN_URL", "PROCESS_URL", "VIDEO_URL"))


def test_procfile_host_is_configurable(tmp_path):
    """HOST in the environment changes the bind address (shell expansion, as honcho runs the line)."""
    line = next(l for l in (ROOT / "Procfile").read_text().splitlines() if l.startswith("main:"))
    command = line.split(":", 1)[1].strip()
    out = subprocess.run(["bash", "-c", f'echo {command}'], capture_output=True, text=True,
                         env={"HOST": "10.1.2.3", "PATH": os.environ["PATH"]}).stdout
    assert "--bind 10.1.2.3:5000" in out
    out = subprocess.run(["bash", "-c", f'echo {command}'], capture_output=True, text=True,
                         env={"PATH": os.environ["PATH"]}).stdout
    assert "--bind 127.0.0.1:5000" in out


def test_secret_key_from_env_or_instance_file(tmp_path, monkeypatch):
    from main_server import create_app

    monkeypatch.setenv("SECRET_KEY", "from-the-environment")
    assert create_app({"DATA_DIR": str(tmp_path / "a")}).config["SECRET_KEY"] == "from-the-environment"
    assert not (tmp_path / "a" / "instance" / "secret_key").exists()
    monkeypatch.delenv("SECRET_KEY")
    key = create_app({"DATA_DIR": str(tmp_path / "b")}).config["SECRET_KEY"]
    path = tmp_path / "b" / "instance" / "secret_key"
    assert path.read_text() == key and len(key) >= 64 and (path.stat().st_mode & 0o077) == 0  # owner only
    # the generated file lives under data/, which git ignores
    out = subprocess.run(["git", "check-ignore", "data/instance/secret_key"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0
    # and no source file sets a literal secret key
    for path in [*ROOT.glob("*_server/*.py"), *ROOT.glob("shared/*.py"), ROOT / "gunicorn.conf.py"]:
        text = path.read_text()
        assert not re.search(r"SECRET_KEY['\"]?\s*[:=]\s*['\"][^'\"]+['\"]", text), path


@pytest.fixture
def all_clients(data_dir, redis_url, queue_workers):
    from main_server import create_app as main_app
    from process_server import create_app as process_app
    from video_server import create_app as video_app

    cfg = {"DATA_DIR": str(data_dir), "SECRET_KEY": "t", "MAIN_URL": "http://main.test:1",
           "PROCESS_URL": "http://process.test:2", "VIDEO_URL": "http://video.test:3", "REDIS_URL": redis_url}
    return {"main": main_app(cfg).test_client(), "process": process_app(cfg).test_client(),
            "video": video_app(cfg).test_client(), "data_dir": data_dir}


EVIL = {"next": "http://evil.example/", "url": "//evil.example", "redirect": "https://evil.example",
        "return_to": "/\\evil.example", "to": "http:evil.example", "target": "javascript:alert(1)"}
ALLOWED = ("http://main.test:1/", "http://process.test:2/", "http://video.test:3/")


def _location_ok(location):
    if location.startswith(ALLOWED):
        return True
    # a path on the same server: one slash, never "//host" or "/\\host"
    return location.startswith("/") and not location.startswith(("//", "/\\")) and "evil" not in location


def test_redirects_only_go_to_configured_servers(all_clients):
    c = all_clients
    data_dir = c["data_dir"]
    job = _synth.aligned_job(data_dir, kols=("Ann", "Bob"), per_kol=3)
    _synth.synthetic_model(data_dir)
    zip_bytes = _synth.build_zip({f"Ann/{i}.jpg": _synth.jpeg(64, 64, seed=i) for i in range(3)})
    spoof = {"Host": "evil.example", "X-Forwarded-Host": "evil.example", "Referer": "http://evil.example/"}
    requests_to_make = [
        ("main", "POST", "/trainByImage", {"zip": (io.BytesIO(zip_bytes), "k.zip")}),
        ("main", "GET", "/predictSingleImage", None),
        ("main", "GET", "/predictBatchImage", None),
        ("main", "GET", "/findSimilarKOLResult", None),
        ("process", "POST", "/clean", {"job": job}),
        ("process", "POST", "/import_result", {"job": job}),
        ("process", "POST", "/align", {"job": job}),
        ("process", "GET", "/align", None),
        ("process", "POST", "/import_result", {"delete": "kol-00000000"}),
    ]
    clip = VIDEO / "short_hamilton_clip.mp4"
    if clip.is_file():
        requests_to_make.append(("main", "POST", "/predictVideoResult", {"file": (io.BytesIO(clip.read_bytes()),
                                                                                    "clip.mp4")}))
    redirects = 0
    for server, method, path, data in requests_to_make:
        r = c[server].open(path, method=method, query_string=dict(EVIL, job=job), data=data, headers=spoof)
        assert r.status_code < 500, (path, r.status_code)
        if 300 <= r.status_code < 400:
            redirects += 1
            assert _location_ok(r.headers["Location"]), (path, r.headers["Location"])
    assert redirects >= 6
    # every GET route, with the hostile parameters and a spoofed Host: no redirect leaves the configured servers
    for name in ("main", "process", "video"):
        app = c[name].application
        for rule in app.url_map.iter_rules():
            if "GET" not in rule.methods or "<" in rule.rule:
                continue
            r = c[name].get(rule.rule, query_string=dict(EVIL, job=job), headers=spoof)
            assert r.status_code < 500, (name, rule.rule)
            if 300 <= r.status_code < 400:
                assert _location_ok(r.headers["Location"]), (name, rule.rule, r.headers["Location"])
    # the error page and headers never echo a script from the request
    r = c["process"].get("/align", query_string={"job": "<script>alert(1)</script>"})
    assert b"<script>alert(1)" not in r.data
