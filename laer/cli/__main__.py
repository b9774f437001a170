"""`python -m laer.cli`: how `laer up` and the tests start a command."""

from laer.cli import app

app()
