"""vmond: the daemon of an on-prem video alarm appliance."""

from vmond.util.version import VERSION as __version__

__all__ = ["__version__"]
