"""Process server: the training wizard (align, clean, import, train) for one job at a time per page.

The wizard's work runs on the job queue (:mod:`shared.training.jobqueue`): workers started with
``python -m process_server.worker`` (the Procfile starts one per core).
"""
from shared.web.factory import make_app
from shared.web.replies import error_reply


def create_app(test_config=None):
    """Application factory (``gunicorn 'process_server:create_app()'``)."""
    app = make_app(__name__, "process", test_config)
    from shared.training import jobqueue

    from . import models, views

    app.register_blueprint(views.bp)
    app.register_blueprint(models.bp)

    @app.errorhandler(jobqueue.redis.exceptions.ConnectionError)
    @app.errorhandler(jobqueue.redis.exceptions.TimeoutError)
    def queue_down(exc):
        app.logger.warning("job queue unreachable: %s", exc)
        return error_reply(jobqueue.REDIS_DOWN, 503)

    return app
