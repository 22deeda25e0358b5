"""The one rule for names people type: KOL names (:mod:`shared.training.pool`), user and token names
(:mod:`shared.web.accounts`).

- :func:`clean_name`: Unicode NFC; control, format and separator characters (right-to-left
  overrides, zero-width spaces, no-break spaces, line breaks) dropped or made a plain space;
  whitespace collapsed. :func:`hidden_characters` lists the characters that this drops or changes.
- :func:`name_key`: the comparison key: two names with the same key are the same name, so
  names that only look alike (case, accents, full-width letters, ligatures, spaces, dashes,
  dots) cannot stand for two different things.

No imports from the rest of the package, so any module may use it.
"""
import re
import unicodedata


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
