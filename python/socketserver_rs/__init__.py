"""Python's socketserver module on a Rust core."""

from socketserver_rs._core import __version__

__all__ = ["__version__"]
