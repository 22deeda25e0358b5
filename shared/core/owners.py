"""Who made a result, and who may read it: the owner record of predictions and uploaded videos.

Every prediction result folder (``predictions/<run>/``: single photo, batch, similar KOLs) and
every uploaded video (``videos/<id>/``) holds ``owner.json``, written when it is made::

    {"actor": "alice" | "token:deploy-script", "role": "member" | "admin",
     "via": "session" | "token", "id": the user's or the token's id}

``actor`` is how the audit trail names the uploader (:attr:`shared.web.auth.Principal.actor`);
``role`` is the role the uploader had then. :func:`may_read` is the one rule for reading:

- an admin may read everything;
- anybody else only what they made: the same user (or the same API token, so a token
  sees what it made and nothing of another token with the same name);
- a folder without a record (made before owners were recorded) is for admins only.

The views answer a reader who may not read a result exactly as for an id that does not
exist (404), so ids cannot be probed.
"""
from pathlib import Path

from shared.core.storage import atomic_write_json, read_json

#: The owner record's file name inside a result or video folder.
OWNER_FILE = "owner.json"


def record(principal):
    """The owner record of ``principal`` (a :class:`shared.web.auth.Principal`), as written to ``owner.json``."""
    return {"actor": principal.actor, "role": principal.role, "via": principal.via,
            "id": principal.row.get("id")}


def write(folder, principal):
    """Record ``principal`` as the maker of ``folder`` (atomically; the folder must exist)."""
    atomic_write_json(Path(folder) / OWNER_FILE, record(principal))


def read(folder):
    """The owner record of ``folder``, or ``None`` when it has none (or it cannot be read)."""
    try:
        owner = read_json(Path(folder) / OWNER_FILE)
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def may_read(folder, reader):
    """True when the principal ``reader`` (``None``: nobody signed in) may read ``folder``: an admin
    always, anyone else only a folder whose owner record names them (module docstring)."""
    if reader is None:
        return False
    if reader.is_admin:
        return True
    owner = read(folder)
    if owner is None:
        return False
    mine = record(reader)
    return all(owner.get(k) == mine[k] for k in ("actor", "via", "id"))


class Recorded:
    """The maker named by an owner record, standing in for a :class:`shared.web.auth.Principal` where work
    is done later on their behalf (a queue worker keeping an analysed video in the library): ``actor``,
    ``role``, ``via``, ``row`` (``{"id"}``) and ``is_admin``, as :func:`record` and :func:`may_read` read them."""

    def __init__(self, owner):
        self.actor, self.role, self.via = owner["actor"], owner["role"], owner["via"]
        self.row = {"id": owner.get("id")}
        self.is_admin = self.role == "admin"

