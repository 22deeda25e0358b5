"""Security basics: no path from the request, files served only from data/, loopback by default,
secrets outside the repository, and no open redirects."""
import ast
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from . import _synth
from ._synth import JSON
from .conftest import FIVE, ROOT, VIDEO, signed_in

VIEW_MODULES = sorted([*ROOT.glob("main_server/*.py"), *ROOT.glob("process_server/*.py"),
                       *ROOT.glob("video_server/*.py"), *ROOT.glob("shared/web/*.py")])
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
    return {"main": signed_in(main_app(cfg).test_client(), "admin"),
            "process": signed_in(process_app(cfg).test_client(), "admin"), "data_dir": data_dir}


def test_every_served_file_is_under_data_dir(sendfile_apps):
    c, data_dir = sendfile_apps, Path(sendfile_apps["data_dir"]).resolve()
    job = _synth.aligned_job(data_dir, kols=("Ann", "Bob"), per_kol=3)
    assert c["process"].post("/clean", data={"job": job}, headers=JSON).status_code == 200
    assert c["process"].post("/import_result", data={"job": job}, headers=JSON).status_code == 200
    _synth.synthetic_model(data_dir)
    from shared.training.jobs import JobStore
    from shared.training.pool import Pool

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
    from shared.core.config import DEFAULTS

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
    return {"main": signed_in(main_app(cfg).test_client(), "admin"),
            "process": signed_in(process_app(cfg).test_client(), "admin"),
            "video": signed_in(video_app(cfg).test_client(), "admin"), "data_dir": data_dir}


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


# -- behaviour: no request value reaches a file outside DATA_DIR, however it travels -----------------
_audit = {"on": False, "events": []}
#: Audit events (sys.addaudithook) that name a file or folder about to be touched: args[0] (and args[1]).
_PATH_EVENTS = {"open", "os.listdir", "os.scandir", "os.remove", "os.rmdir", "os.mkdir", "os.rename", "os.replace",
                "shutil.rmtree", "shutil.copyfile", "shutil.move", "os.truncate", "os.chmod", "os.utime"}


def _hook(event, args):
    if _audit["on"] and event in _PATH_EVENTS:
        for arg in args[:2] if event in ("os.rename", "os.replace", "shutil.copyfile", "shutil.move") else args[:1]:
            if isinstance(arg, (str, bytes, os.PathLike)):
                _audit["events"].append((event, os.fsdecode(arg)))


def _request_fields():
    """Every name a view reads from the request (``request.args/form/values/files.get[list]("x")``)."""
    names = set()
    for module in VIEW_MODULES:
        for node in ast.walk(ast.parse(module.read_text())):
            if (isinstance(node, ast.Call) and _name(node.func) in ("get", "getlist") and node.args
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
                    and _mentions_request(node.func)):
                names.add(node.args[0].value)
    return names


CANARY_SUFFIXES = ("", ".png", ".jpg", ".jpeg", ".json", ".csv", ".npz", ".mp4", ".zip")


def test_no_request_value_reaches_a_file_outside_the_data_dir(clients_for_paths):
    """Every field any view reads, and every path segment, set to paths that climb to canary files next to
    DATA_DIR (the others holding valid ids so the checks further in are reached): no file outside DATA_DIR
    is opened, listed, written or deleted (Python audit events), no canary is served, none disappears."""
    c = clients_for_paths
    base, data_dir = c["base"], c["data_dir"]
    canaries = sorted(p for p in (base / "canary").rglob("*") if p.is_file())
    payloads = [str(base / "canary" / "secret"), "/etc/passwd", "..", "..\\..\\canary\\secret"]
    for depth in range(1, 5):
        payloads += ["../" * depth + "canary/secret", "../" * depth + "canary"]
    fields = _request_fields()
    assert {"job", "video", "kol", "crop", "delete", "k", "pace"} <= fields, fields  # the scan finds the fields
    valid = {"job": c["job"], "video": c["video_id"], "kol": "0", "crop": c["crop"]}
    if not _audit.get("installed"):  # audit hooks cannot be removed: one per test process
        sys.addaudithook(_hook)
        _audit["installed"] = True
    served = []
    requests_made = 0
    for server in ("main", "process", "video"):
        client = c[server]
        for rule in client.application.url_map.iter_rules():
            if rule.endpoint == "static":
                continue
            for method in sorted(rule.methods & {"GET", "POST"}):
                # first every field that is not an id, then each id in turn (the others valid), then each path part
                for field in [None, *sorted(valid), *[f"<{a}>" for a in sorted(rule.arguments)]]:
                    for payload in payloads:
                        values = {f: valid.get(f, payload) for f in fields} | ({field: payload} if field in valid
                                                                                else {})
                        args = {a: (payload if f"<{a}>" == field else "x") for a in rule.arguments}
                        try:
                            url = rule.build(args, append_unknown=False)[1] if args else rule.rule
                        except Exception:  # a value the converter refuses: no such URL
                            continue
                        _audit["events"].clear()
                        _audit["on"] = True
                        try:
                            if method == "GET":
                                r = client.get(url, query_string=values, headers=JSON)
                            else:
                                r = client.post(url, data=values, headers=JSON)
                        finally:
                            _audit["on"] = False
                        requests_made += 1
                        assert r.status_code < 500, (server, method, url, field, payload, r.status_code)
                        if b"CANARY" in r.get_data():
                            served.append((server, method, url, field, payload))
                        for event, path in _audit["events"]:
                            resolved = Path(path).resolve()
                            if "canary" in path or path == "/etc/passwd" or (
                                    base in resolved.parents and data_dir != resolved and data_dir not in resolved.parents):
                                served.append((server, method, url, field, payload, event, path))
    assert requests_made > 1000
    assert served == []
    assert sorted(p for p in (base / "canary").rglob("*") if p.is_file()) == canaries
    assert all(p.read_text() == "CANARY-SECRET" for p in canaries)


@pytest.fixture
def clients_for_paths(tmp_path, redis_url, queue_workers):
    """The three apps on ``tmp_path/data`` (with the job queue and a real worker) with a cleaned job, a trained
    model, a pool and a video, and canary files in ``tmp_path/canary`` (and one level deeper) that no request
    may reach."""
    from main_server import create_app as main_app
    from process_server import create_app as process_app
    from video_server import create_app as video_app

    data_dir = tmp_path / "data"
    for folder in (tmp_path / "canary", tmp_path / "canary" / "canary"):
        folder.mkdir(parents=True)
        for suffix in CANARY_SUFFIXES:
            (folder / f"secret{suffix}").write_text("CANARY-SECRET")
    assert queue_workers.data_dir == data_dir  # the worker serves this data folder
    cfg = {"DATA_DIR": str(data_dir), "SECRET_KEY": "t", "TESTING": False, "PROPAGATE_EXCEPTIONS": False,
           "REDIS_URL": redis_url}
    out = {"main": signed_in(main_app(cfg).test_client(), "admin"),
           "process": signed_in(process_app(cfg).test_client(), "admin"),
           "video": signed_in(video_app(cfg).test_client(), "admin"), "base": tmp_path, "data_dir": data_dir.resolve()}
    job = _synth.aligned_job(data_dir, kols=("Ann", "Bob"), per_kol=3)
    assert out["process"].post("/clean", data={"job": job}, headers=JSON).status_code == 200
    _synth.synthetic_model(data_dir)
    from shared.training.jobs import JobStore

    out["job"] = job
    out["crop"] = JobStore(data_dir / "jobs").read(job, "align")["kols"][0]["sources"][0]["crops"][0]["crop"]
    import cv2
    import numpy as np

    clip = tmp_path / "tiny.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    for i in range(3):
        writer.write(np.full((48, 64, 3), 60 * i, np.uint8))
    writer.release()
    r = out["main"].post("/predictVideoResult", data={"file": (io.BytesIO(clip.read_bytes()), "tiny.mp4")},
                         content_type="multipart/form-data")
    assert r.status_code == 303, r.get_data(as_text=True)[:300]
    out["video_id"] = r.headers["Location"].rsplit("=", 1)[1]
    clip.unlink()
    return out
