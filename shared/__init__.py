"""The face engine and everything the three servers share: plain functions and small classes, no views.

Each module's own docstring says what it holds; the README's "The tree" section lists them all
(kept in one place only, so this file never goes stale).
"""
