"""``python -m segshift`` runs the CLI."""

import sys

from segshift.cli.main import main

sys.exit(main())
