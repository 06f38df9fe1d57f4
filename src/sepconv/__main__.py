"""``python -m sepconv`` is the ``sepconv`` command."""

import sys

from sepconv.cli.main import main

sys.exit(main())
