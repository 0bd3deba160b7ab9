"""The ``deid`` command line (``deid = deid_core.cli:main``; ``python -m deid_core.cli``).

One small module per command group, parsing only: :mod:`~deid_core.cli.image`,
:mod:`~deid_core.cli.video`, :mod:`~deid_core.cli.audit`, :mod:`~deid_core.cli.train`,
:mod:`~deid_core.cli.eval`, :mod:`~deid_core.cli.info`; :mod:`~deid_core.cli.main` builds the parser.
"""
from deid_core.cli.common import DEFAULT_DETECTOR, DETECTORS  # noqa: F401
from deid_core.cli.main import Terminated, build_parser, main  # noqa: F401
