"""What every response of the three servers carries for the browser's safety: cookie flags, CSRF, headers.

:func:`init_app` (called by :func:`shared.web.auth.init_app`) sets the session cookie's flags,
installs Flask-WTF's ``CSRFProtect`` (checked by the gate, :func:`shared.web.access.gate`, not on
its own: bearer-token requests need no CSRF token), ProxyFix when ``PROXY_FIX`` proxies are trusted,
and the template globals ``csrf_field()``, ``csrf_token()`` and ``csp_nonce()``;
:func:`add_headers` sets the Content-Security-Policy and the other security headers on a response.

Pages and forms (for every template)
------------------------------------
- ``{{ csrf_field() }}`` inside every ``<form method="post">``; ``fetch()`` POSTs send the form's
  ``FormData`` (which carries the field) or the header ``X-CSRFToken: {{ csrf_token() }}``.
- No inline event handlers (``onclick=``) or ``javascript:`` links: the Content-Security-Policy
  forbids them. Scripts go in ``static/`` or in ``<script nonce="{{ csp_nonce() }}">``; style
  attributes (``style="width: 40%"``) are allowed, ``<style>`` elements are not (use style.css).

Settings: ``PROXY_FIX`` (0): number of proxies in front whose ``X-Forwarded-For/Proto/Host`` are
trusted. ``SESSION_COOKIE_SECURE`` (Flask's own; on anyway when ``MAIN_URL`` is https).
"""
import secrets

from flask import current_app, g, request
from flask_login import current_user
from flask_wtf.csrf import CSRFError, CSRFProtect, generate_csrf
from markupsafe import Markup
from werkzeug.middleware.proxy_fix import ProxyFix

from shared.web.replies import error_reply

CSRF_SENTENCE = ("This form could not be accepted: it has expired or did not come from this site "
                 "(missing or wrong CSRF token). Reload the page and send it again.")

csrf = CSRFProtect()


def csrf_field():
    """The hidden CSRF input for a POST form (the template global ``csrf_field()``)."""
    return Markup('<input type="hidden" name="csrf_token" value="%s">') % generate_csrf()


def csp_nonce():
    """This response's script nonce (the template global ``csp_nonce()``)."""
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    return g.csp_nonce


def init_app(app):
    """Cookie flags, CSRF set-up and its error page, ProxyFix and the templates' CSRF and nonce globals."""
    app.config["SESSION_COOKIE_SECURE"] = (bool(app.config.get("SESSION_COOKIE_SECURE"))
                                           or app.config["MAIN_URL"].startswith("https://"))
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
        # The gate calls csrf.protect() itself: bearer-token requests need no CSRF token.
        WTF_CSRF_CHECK_DEFAULT=False,
        # A token lives as long as the sign-in (not one hour), so a long form session is not lost.
        WTF_CSRF_TIME_LIMIT=None,
        # The three servers post to each other (other ports = other origins), which the strict
        # HTTPS Referer check refuses; the token plus SameSite=Lax cookies guard cross-site posts.
        WTF_CSRF_SSL_STRICT=False,
    )
    if app.config["PROXY_FIX"]:
        n = int(app.config["PROXY_FIX"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n)
    csrf.init_app(app)

    @app.errorhandler(CSRFError)
    def csrf_error(exc):
        return error_reply(CSRF_SENTENCE, 400)

    app.jinja_env.globals.update(csrf_field=csrf_field, csp_nonce=csp_nonce, csrf_token=generate_csrf)


def add_headers(response):
    """``response`` with the Content-Security-Policy (this response's script nonce, the three servers'
    images and forms), nosniff, no framing, the referrer policy, HSTS over HTTPS and, for a
    signed-in user, no shared caching (each header only where the view did not set it)."""
    servers = " ".join(sorted({current_app.config[k] for k in ("MAIN_URL", "PROCESS_URL", "VIDEO_URL")}))
    nonce = g.get("csp_nonce")
    scripts = f"'self' 'nonce-{nonce}'" if nonce else "'self'"
    response.headers.setdefault("Content-Security-Policy", "; ".join([
        "default-src 'self'", f"script-src {scripts}", "style-src 'self'", "style-src-attr 'unsafe-inline'",
        f"img-src 'self' data: {servers}", "connect-src 'self'", "object-src 'none'", "base-uri 'self'",
        f"form-action 'self' {servers}", "frame-ancestors 'none'"]))
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if current_user.is_authenticated:  # what a signed-in user sees is theirs: no shared cache may keep it
        if response.cache_control.public:
            response.cache_control.public = False
        if not response.cache_control.no_store:
            response.cache_control.private = True
    return response
