"""Process server: the training wizard (align, clean, import, train) for one job at a time per page.

The wizard's work runs on the job queue (:mod:`shared.queue`): workers started with
``python -m process_server.worker`` (the Procfile starts one per core).
"""
import os

from shared.web import error_reply, make_app

#: Settings of the queue (each can be set from the environment with the same name).
QUEUE_DEFAULTS = {
    # The Redis the queue lives in; the Procfile starts one on 127.0.0.1:REDIS_PORT (6479).
    "REDIS_URL": f"redis://127.0.0.1:{os.environ.get('REDIS_PORT') or 6479}/0",
    # Seconds a POST /clean or /import_result waits for its queued work before answering
    # with the progress page instead (202 in JSON).
    "STEP_WAIT_S": 120,
    # Photos per align chunk (a job is split so that every worker takes a part at once).
    "ALIGN_CHUNK": 12,
}


def queue_settings():
    """The queue's settings: :data:`QUEUE_DEFAULTS` overridden by the environment."""
    out = dict(QUEUE_DEFAULTS)
    for key, value in QUEUE_DEFAULTS.items():
        if os.environ.get(key):
            out[key] = type(value)(os.environ[key])
    return out


def create_app(test_config=None):
    """Application factory (``gunicorn 'process_server:create_app()'``)."""
    app = make_app(__name__, "process", test_config, defaults=queue_settings())
    from shared import queue

    from . import views

    app.register_blueprint(views.bp)

    @app.errorhandler(queue.redis.exceptions.ConnectionError)
    @app.errorhandler(queue.redis.exceptions.TimeoutError)
    def queue_down(exc):
        app.logger.warning("job queue unreachable: %s", exc)
        return error_reply(queue.REDIS_DOWN, 503)

    return app
