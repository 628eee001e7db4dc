"""``python -m hifi_tse ...`` (used under ``torchrun``)."""

import sys

from hifi_tse.cli import main

sys.exit(main())
