"""``python -m gradprobe`` runs the ``gradprobe`` command line."""

from gradprobe.cli import main

raise SystemExit(main())
