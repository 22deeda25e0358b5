"""The one exception type whose message is meant for the person using the tool."""


class UserError(Exception):
    """A problem the user can fix (bad upload, unknown id, no model yet...).

    ``message`` is a plain sentence shown on the error page or returned as
    ``{"error": message}``; ``status`` is the HTTP status (4xx) to answer with.
    """

    def __init__(self, message, status=400):
        super().__init__(message)
        self.message = message
        self.status = status
