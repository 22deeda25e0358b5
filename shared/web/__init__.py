"""What the three Flask apps share: the app factory and replies, sign-in and roles, accounts,
housekeeping.

Imports every other package of ``shared``; only the servers import it.
"""
