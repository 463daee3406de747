"""``python -m vmond``: the same as the ``vmond`` command."""

from vmond.cli import main

raise SystemExit(main())
