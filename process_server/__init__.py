"""Process server: the training wizard (align, clean, import, train) for one job at a time per page.

The wizard's work runs on the job queue (:mod:`shared.training.jobqueue`): workers started with
``python -m process_server.worker`` (the Procfile starts one per core).
"""
from shared.training.jobqueue.connection import DOWN_ERRORS, REDIS_DOWN
from shared.web.factory import make_app
from shared.web.replies import error_reply


def create_app(test_config=None):
    """Application factory (``gunicorn 'process_server:create_app()'``)."""
    app = make_app(__name__, "process", test_config)
    # here, not at the top: `python -m process_server.worker` imports this package and needs no views
    from process_server import models, views

    app.register_blueprint(views.bp)
    app.register_blueprint(models.bp)

    def queue_down(exc):
        app.logger.warning("job queue unreachable: %s", exc)
        return error_reply(REDIS_DOWN, 503)

    for error in DOWN_ERRORS:  # Redis stopped or not answering: 503 with a sentence
        app.register_error_handler(error, queue_down)
    return app
