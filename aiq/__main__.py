"""``python -m aiq``: the same as the ``aiq`` command."""

from aiq.cli import app

app(prog_name="aiq")
