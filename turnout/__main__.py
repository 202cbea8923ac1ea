"""``python -m turnout`` runs the CLI."""

from .cli import main

main()
