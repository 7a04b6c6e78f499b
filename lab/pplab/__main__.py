"""``python -m pplab``: see :mod:`pplab.cli`."""

from pplab.cli import main

raise SystemExit(main())
