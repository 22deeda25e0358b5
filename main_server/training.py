"""Main server views: see the module docstring of main_server."""
from flask import Blueprint

bp = Blueprint("training", __name__)
