"""``python -m palette_provision`` runs the CLI."""

import sys

from palette_provision.cli import main

sys.exit(main())
