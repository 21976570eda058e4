"""``python -m prodlens`` runs the ``prodlens`` command."""

import sys

from prodlens.cli import main

sys.exit(main())
