"""``python -m regtune.cli`` (what ``torchrun -m regtune.cli train ...`` runs)."""

import sys

from regtune.cli.main import main

sys.exit(main())
