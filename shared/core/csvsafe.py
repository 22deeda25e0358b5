"""CSV that a spreadsheet opens as text: the one rule for every CSV the servers write.

A text cell starting with ``=``, ``+``, ``-``, ``@`` (or a tab or carriage return) is read
by Excel, LibreOffice and Google Sheets as a formula, which can run commands or leak data
("CSV injection"). :func:`cell` puts a ``'`` in front of such a cell, which spreadsheets
show as plain text; numbers are written as they are. The CSV writers (the batch results,
``/appearances.csv``, the audit trail) all write through :func:`writer`.
"""
import csv

#: The first characters that make a spreadsheet read a text cell as a formula.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value):
    """``value`` as a CSV cell a spreadsheet will not read as a formula (text gets a leading ``'``)."""
    if isinstance(value, str) and value[:1] in FORMULA_START:
        return "'" + value
    return value


class _Writer:
    """A ``csv.writer`` whose rows go through :func:`cell`."""

    def __init__(self, out, **kwargs):
        self._writer = csv.writer(out, **kwargs)

    def writerow(self, row):
        """Write one row (a sequence of cells)."""
        return self._writer.writerow([cell(v) for v in row])


def writer(out, **kwargs):
    """A CSV writer on the text stream ``out`` (``kwargs`` as for ``csv.writer``) that escapes formulas."""
    return _Writer(out, **kwargs)
