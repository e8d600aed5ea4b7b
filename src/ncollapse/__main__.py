"""``python -m ncollapse`` runs the CLI."""

from .cli import main

raise SystemExit(main())
