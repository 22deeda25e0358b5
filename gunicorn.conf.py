# Settings shared by the three servers; gunicorn reads this file from the working directory
# (the Procfile and the tests start gunicorn from the repository root).
control_socket_disable = True  # gunicorn 27 would otherwise write ~/.gunicorn/gunicorn.ctl, shared by all three
worker_class = "gthread"       # threads: long MJPEG streams and progress polls do not block each other
timeout = 300
graceful_timeout = 10
