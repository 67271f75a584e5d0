"""``python -m pathwatch``: the command line."""

from pathwatch.cli import main

main()
