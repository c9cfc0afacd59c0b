"""``python -m kernelviz`` runs the command-line interface."""

from kernelviz.cli import main

main()
