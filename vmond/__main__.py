"""``python -m vmond``: the same as the ``vmond`` command."""

from vmond.cli import main

if __name__ == "__main__":  # worker processes import this module too; only the real start runs main
    raise SystemExit(main())
