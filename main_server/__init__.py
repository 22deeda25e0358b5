"""Main server: choose a mode, upload photos, videos or training sets, see predictions.

Views live in blueprints by concern: ``home`` (R1, the home page), ``training`` (R2-R5),
``predict`` (R8-R13), ``video`` (R6-R7), ``analysis`` (videos analysed on the queue, screen time),
``kols`` (the roster), ``review`` (the review queue), ``unknowns`` (the inbox of unknown people),
``library`` (kept media and search), ``accounts`` (sign-in, users, tokens, audit trail); ``cli`` adds
the account commands.
"""
from shared.web import housekeeping
from shared.web.factory import make_app, warm_up


def create_app(test_config=None):
    """Application factory (``gunicorn 'main_server:create_app()'``)."""
    app = make_app(__name__, "main", test_config)
    from . import accounts, analysis, cli, home, kols, library, predict, review, training, unknowns, video

    for module in (accounts, home, training, predict, video, analysis, kols, review, unknowns, library):
        app.register_blueprint(module.bp)
    accounts.init_limiter(app)
    cli.init_app(app)
    warm_up(app)
    housekeeping.start_schedule(app)  # the same rules as `flask housekeeping`, every hour by default
    return app
