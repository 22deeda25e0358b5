"""Video server: an MJPEG stream of recognised frames for an uploaded video."""
from shared.web import make_app, warm_up


def create_app(test_config=None):
    """Application factory (``gunicorn 'video_server:create_app()'``)."""
    app = make_app(__name__, "video", test_config)
    from . import views

    app.register_blueprint(views.bp)
    warm_up(app)
    return app
