"""Connections to the job queue's Redis: one client per URL and process, the RQ queues, and what "Redis is down" is.

Redis unreachable: every call of the job queue raises one of :data:`DOWN_ERRORS` within
:data:`SOCKET_TIMEOUT_S`; the process server answers 503 with :data:`REDIS_DOWN`.
"""
import redis
from rq import Queue

#: Seconds a web request waits for Redis to connect or answer before giving up (503).
SOCKET_TIMEOUT_S = 3
#: The errors a Redis client raises when the server is stopped or not answering.
DOWN_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

REDIS_DOWN = ("The job queue is not answering (its Redis server is stopped or unreachable), so this "
              "cannot be shown or started right now. Nothing was lost: work resumes when the queue is "
              "back; try again in a minute.")

_connections = {}


def connect(url, timeout=SOCKET_TIMEOUT_S):
    """A Redis client for ``url`` (one connection pool per URL and process) that gives up after ``timeout`` s."""
    key = (url, timeout)
    if key not in _connections:
        _connections[key] = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout,
                                                 health_check_interval=30)
    return _connections[key]


def worker_connection(url):
    """A Redis client of its own for a worker (no answer timeout: a worker blocks while it waits for work)."""
    return redis.Redis.from_url(url, socket_connect_timeout=SOCKET_TIMEOUT_S)


def is_down(exc):
    """True for the errors a Redis client raises when the server is stopped or not answering."""
    return isinstance(exc, DOWN_ERRORS)


def queue(conn, name):
    """The RQ queue ``name`` (one of :data:`shared.training.jobqueue.steps.QUEUES`)."""
    return Queue(name, connection=conn)
