"""The ground floor: errors, atomic storage and locks, names, CSV safety, owner records.

Imports nothing else of ``shared``.
"""
