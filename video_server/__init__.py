"""Video server: an MJPEG stream of recognised frames for an uploaded video."""
import logging
import sys
import threading
import time

from shared.web.factory import make_app, warm_up

#: How often the server checks for a new model to load before anyone asks for it (seconds).
MODEL_CHECK_S = 2.0


def create_app(test_config=None):
    """Application factory (``gunicorn 'video_server:create_app()'``)."""
    app = make_app(__name__, "video", test_config)
    from . import views

    app.register_blueprint(views.bp)
    warm_up(app)
    if not app.testing and app.config["WARM_UP"]:
        threading.Thread(target=_keep_warm, args=(app,), name="video-warm", daemon=True).start()
    return app


def _keep_warm(app):
    """Start the worker processes with dlib loaded in each, then load each new model as soon as it is saved.

    So the first frame after a start, or after a training, does not wait for dlib
    (~2 s per worker) or for the model to be read and fitted.
    """
    from shared.faces import parallel
    from shared.video import streaming

    log = logging.getLogger(app.import_name)
    try:
        seconds = streaming.warm(parallel.executor(), parallel.workers())
        print(f"video server warm: {parallel.workers()} workers ready in {seconds:.1f} s", file=sys.stderr, flush=True)
    except Exception:  # noqa: BLE001 - the first stream then warms them itself
        log.exception("warming the video workers failed")
    store = app.extensions["models"]
    while True:
        try:
            store.current()  # loads a new version once; a file read otherwise
        except Exception:  # noqa: BLE001 - a broken model shows on the page that needs it
            pass
        time.sleep(MODEL_CHECK_S)
