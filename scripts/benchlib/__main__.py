"""``python scripts/benchlib``: what ``scripts/bench`` runs, once the venv and peers are set up."""

import sys
from pathlib import Path

if not __package__:  # run as a directory (``python scripts/benchlib``): import it as a package
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from benchlib.main import main

sys.exit(main())
