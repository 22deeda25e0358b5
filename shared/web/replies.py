"""One view, two audiences: HTML for browsers, JSON for scripts, from the same payload.

:func:`reply` renders a template or answers JSON by the request's ``Accept`` header
(:func:`wants_json`); :func:`error_reply` is the 4xx/5xx answer (the error page, or
``{"error": sentence}``). Used by every view and by sign-in (:mod:`shared.web.auth`).
"""
from flask import jsonify, render_template, request


def wants_json():
    """True when the client asked for JSON (``Accept: application/json`` preferred over HTML)."""
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]


def reply(template, payload, status=200, **context):
    """Answer ``payload`` as JSON for scripts, or render ``template`` with it for browsers.

    The template receives ``payload``'s keys plus ``context`` (page-only extras).
    """
    if wants_json():
        return jsonify(payload), status
    return render_template(template, **payload, **context), status


def error_reply(message, status):
    """The 4xx/5xx answer: ``{"error": message}`` or the error page."""
    if wants_json():
        return jsonify({"error": message}), status
    return render_template("error.html", message=message, status=status), status
