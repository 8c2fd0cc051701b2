"""``python -m geopatra.labeling``: the same as ``geopatra label``."""

import sys

from geopatra.labeling.driver import main

sys.exit(main())
