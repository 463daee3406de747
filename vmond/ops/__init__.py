"""The installer's and operator's tools behind the CLI: backup, send-test, info."""
