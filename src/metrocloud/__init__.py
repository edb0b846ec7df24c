"""metrocloud: a secure cloud for measuring instruments under legal control."""

__version__ = "0.1.0"
