"""Forwards an Asana organization's audit log to SIEMs, with per-sink checkpoints."""

__version__ = "0.1.0"
