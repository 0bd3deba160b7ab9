"""``python -m deid_core.cli`` (and ``torchrun ... -m deid_core.cli train``)."""
import sys

from deid_core.cli.main import main

sys.exit(main())
