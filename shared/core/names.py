"""Names and sizes as people see them: the one rule for names people type (KOL names,
:mod:`shared.training.pool`; user and token names, :mod:`shared.web.accounts`), uploaded files'
own names, byte counts in words.

- :func:`clean_name`: Unicode NFC; control, format and separator characters (right-to-left
  overrides, zero-width spaces, no-break spaces, line breaks) dropped or made a plain space;
  whitespace collapsed. :func:`hidden_characters` lists the characters that this drops or changes.
- :func:`name_key`: the comparison key: two names with the same key are the same name, so
  names that only look alike (case, accents, full-width letters, ligatures, spaces, dashes,
  dots) cannot stand for two different things.

- :func:`upload_name`: an uploaded file's own name, for display; :func:`human_size`: ``"512 MiB"``.

Imports only :mod:`shared.core.errors`, so any module may use it.
"""
import re
import unicodedata

from shared.core.errors import UserError


def _name_char(ch):
    """Spaces and tabs become a space; control, format and separator characters vanish."""
    category = unicodedata.category(ch)
    if ch in "\t\n\r" or category == "Zs":
        return " "
    return "" if category[0] in "CZ" else ch


def clean_name(raw, max_length):
    """``raw`` as a display name: NFC, hidden characters dropped, whitespace collapsed,
    at most ``max_length`` characters, outer spaces stripped ('' when nothing is left)."""
    text = unicodedata.normalize("NFC", str(raw))
    text = "".join(map(_name_char, text))
    return " ".join(text.split())[:max_length].strip()


def hidden_characters(raw):
    """The characters of ``raw`` that :func:`clean_name` drops or turns into a plain space
    (everything but the plain space U+0020 of categories C and Z), in order of appearance."""
    return [ch for ch in str(raw) if ch != " " and _name_char(ch) != ch]


def name_key(name):
    """The comparison key of a name (already cleaned): two names with the same key are the same.

    Case, accents, compatibility forms (full-width letters, ligatures), spaces, underscores,
    dashes and dots are ignored: ``name_key("Mindy Kaling") == name_key("mindy_kaling")``,
    ``name_key("Beyoncé") == name_key("beyonce")``, ``name_key("ｂｏｓｓ") == name_key("boss")``.
    Other scripts are kept as they are.
    """
    text = unicodedata.normalize("NFKD", str(name))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return re.sub(r"[\s_\-.·]+", "", text.casefold())


def upload_name(raw, fallback):
    """An uploaded file's own name, for display only (never a path).

    Its last path component (``/`` or ``\\``), control and format characters dropped,
    at most 120 characters; ``fallback`` when nothing is left. Unlike ``secure_filename``
    it keeps names such as "周杰伦.zip" readable.
    """
    text = "".join(ch for ch in str(raw or "") if unicodedata.category(ch)[0] != "C")
    parts = [p.strip() for p in re.split(r"[/\\]", text) if p.strip()]
    return parts[-1][:120].strip() if parts else fallback


def human_size(n):
    """``n`` bytes as a short text: ``"512 MiB"``, ``"97 KiB"``, ``"800 bytes"``."""
    n = int(n or 0)
    for unit, size in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value >= 10 or value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


#: A KOL's display name is at most this many characters.
MAX_NAME_LENGTH = 80


def display_name(raw):
    """Clean a KOL name as typed or as a zip folder name, for display.

    :func:`clean_name`: Unicode NFC, control and format characters dropped,
    whitespace collapsed, at most :data:`MAX_NAME_LENGTH` characters. Slashes and dots are kept as text
    (a name is never used as a path). Raises :class:`UserError` when nothing is left.
    """
    text = clean_name(raw, MAX_NAME_LENGTH)
    if not text or set(text) <= {".", "/", "\\", " "}:
        raise UserError(f"{raw!r} is not usable as a KOL name.")
    return text
