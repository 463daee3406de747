"""Supervision: the appliance watches its cameras' silence and its own health, and raises supervision events."""
