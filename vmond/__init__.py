"""vmond: the daemon of an on-prem video alarm appliance."""

__version__ = "0.1.0"
