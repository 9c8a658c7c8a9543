"""The package version, in a module of its own so any floor of the house can read it."""

__version__ = "0.1.0"
