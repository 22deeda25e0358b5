"""Process server: the training wizard (align, clean, import, train) for one job at a time per page."""
from shared.web import make_app


def create_app(test_config=None):
    """Application factory (``gunicorn 'process_server:create_app()'``)."""
    app = make_app(__name__, "process", test_config)
    from . import views

    app.register_blueprint(views.bp)
    return app
