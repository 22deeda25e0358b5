"""The rules for what people type to make an account: user and token names, passwords, roles, token days.

Each check returns the cleaned value or raises a :class:`shared.core.errors.UserError` (400) with the
sentence saying which rule is broken; :mod:`shared.web.accounts` applies them before it stores anything.
"""
import unicodedata

from shared.core import config
from shared.core.errors import UserError
from shared.core.names import clean_name, hidden_characters

ROLES = ("admin", "member")
NAME_MAX = 64
PASSWORD_MIN = 8
#: A password this long (characters) may use one kind of character only (letters, say);
#: a shorter one must mix letters with digits or other characters.
PASSWORD_ONE_KIND_MIN = 12
#: The password rule in a few words, for the forms that ask for one (:func:`check_password` decides).
PASSWORD_HINT = (f"at least {PASSWORD_MIN} characters; under {PASSWORD_ONE_KIND_MIN}, mix letters with digits "
                 "or symbols; not the user name or a common password")
#: Passwords (case-folded) that are tried first by anyone guessing, from the published lists of the
#: most used ones; a password whose letters alone are one of these (``Password2024!``) counts too.
COMMON_PASSWORDS = frozenset("""
    password passwort motdepasse contrasena senha qwerty qwertz azerty qwertyuiop asdfgh asdfghjkl
    zxcvbn zxcvbnm qazwsx qwaszx abc abcd abcde abcdef abcdefg abcdefgh letmein welcome iloveyou
    admin administrator root user guest login secret master monkey dragon sunshine princess
    football baseball soccer hockey batman superman shadow michael jennifer jordan hunter killer
    trustno changeme default test tester hello hellothere freedom whatever starwars pokemon
    computer internet qwer asdf zxcv pass passw passwd
    12345678 123456789 1234567890 12345678910 123456789012 1234567890123 87654321 987654321
    0987654321 11111111 111111111 1111111111 00000000 000000000 0000000000 12341234 11223344
    12121212 123123123 1q2w3e4r 1q2w3e4r5t 1q2w3e4r5t6y 1qaz2wsx zaq12wsx q1w2e3r4 q1w2e3r4t5
    qwerty123 qwerty1234 qwer1234 asdf1234 zxcv1234 1234qwer abc12345 abcd1234 a1234567 a12345678
    aa123456 password1 password12 password123 password1234 passw0rd p@ssw0rd p@ssword pa$$word
    admin123 admin1234 welcome1 welcome123 letmein1 iloveyou1 trustno1 monkey123 dragon123
    changeme1 changeme123 test1234 test12345 hello123 qwertyuiop123 1qazxsw2 123qweasd 123qweasdzxc
""".split())
#: Days a new API token lasts when its maker does not say (the app's ``TOKEN_DAYS`` setting).
TOKEN_DAYS = config.DEFAULTS["TOKEN_DAYS"]


def check_role(role):
    if role not in ROLES:
        raise UserError(f"The role must be one of {', '.join(ROLES)} (got '{str(role)[:20]}').", 400)
    return role


def check_token_days(days, max_days):
    """``days`` (a number or its text) as a whole number of days from 1 to ``max_days``, or a 400."""
    text = str(days).strip()
    if not text.isdigit() or not 1 <= int(text) <= max_days:
        raise UserError(f"A token lasts 1 to {max_days} days: give a whole number of days (got '{text[:20]}').",
                        400)
    return int(text)


def acts_as(role, maker_role):
    """The role a token acts with: its own, but never more than its maker's now (``None``: no user maker)."""
    return "member" if maker_role == "member" else role


def check_name(name, what="name"):
    """``name`` (a user or token name as typed) checked and cleaned, or a :class:`UserError` (400).

    The rule of KOL names (:mod:`shared.core.names`): no hidden characters (control and format
    characters such as right-to-left overrides or zero-width spaces, spaces other than the plain
    one); outer spaces stripped, inner ones collapsed, Unicode NFC; 1 to :data:`NAME_MAX` characters.
    """
    raw = str(name or "").strip()
    hidden = hidden_characters(raw)
    if hidden:
        ch = hidden[0]
        raise UserError(f"The {what} holds a hidden character (U+{ord(ch):04X} {unicodedata.name(ch, 'control')}): "
                        "use visible characters and plain spaces only.", 400)
    cleaned = clean_name(raw, NAME_MAX + 1)
    if not cleaned or len(cleaned) > NAME_MAX:
        raise UserError(f"Give a {what} of 1 to {NAME_MAX} characters, without control characters.", 400)
    return cleaned


def _kinds(text):
    """How many kinds of character ``text`` uses, of letters, digits and others (0 to 3)."""
    return sum(any(test(c) for c in text) for test in (str.isalpha, str.isdigit, lambda c: not c.isalnum()))


def _letters(text):
    """The letters of ``text``, case-folded (``"Boss-2024!"`` -> ``"boss"``)."""
    return "".join(c for c in text.casefold() if c.isalpha())


def check_password(password, name=None):
    """``password`` if it is good enough for the user ``name``, else a :class:`UserError` (400)
    saying which rule it breaks: at least :data:`PASSWORD_MIN` characters; under
    :data:`PASSWORD_ONE_KIND_MIN`, letters mixed with digits or other characters; not the user
    name and not one of :data:`COMMON_PASSWORDS`, also with only digits or symbols added."""
    password = password or ""
    if len(password) < PASSWORD_MIN:
        raise UserError(f"The password must have at least {PASSWORD_MIN} characters.", 400)
    if len(password) < PASSWORD_ONE_KIND_MIN and _kinds(password) < 2:
        raise UserError(f"A password of fewer than {PASSWORD_ONE_KIND_MIN} characters must mix letters with digits "
                        "or other characters (a longer one may be letters only).", 400)
    letters = _letters(password)
    if name and (password.casefold() == str(name).casefold() or (letters and letters == _letters(str(name)))):
        raise UserError("The password must not be the user name, not even with digits or symbols added.", 400)
    if password.casefold() in COMMON_PASSWORDS or letters in COMMON_PASSWORDS:
        raise UserError("This password is one of the most common ones (or one with only digits or symbols added), "
                        "which are guessed first: choose another.", 400)
    return password
