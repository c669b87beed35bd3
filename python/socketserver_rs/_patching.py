"""``patch()``: make ``import socketserver`` resolve to socketserver_rs."""

import sys

__all__ = ["patch"]

# Standard library modules that subclass socketserver's classes when imported.
_BUILT_ON_SOCKETSERVER = ("http.server", "xmlrpc.server", "wsgiref.simple_server")


def patch() -> None:
    """Make ``socketserver`` resolve to ``socketserver_rs``, so that servers
    built on the standard module (http.server, xmlrpc.server, wsgiref,
    logging.config.listen, third-party ones) run on the Rust core.

    Call it before those modules are imported: a module that imported the
    standard ``socketserver`` already keeps the classes it found then, and
    patch() warns (RuntimeWarning) naming the standard library's ones.
    """
    import socketserver_rs

    previous = sys.modules.get("socketserver")
    if previous is socketserver_rs:
        return
    sys.modules["socketserver"] = socketserver_rs
    if previous is None:
        return
    early = sorted(name for name in _BUILT_ON_SOCKETSERVER if name in sys.modules)
    if early:
        import warnings

        warnings.warn(
            "socketserver_rs.patch() came after these modules were imported; they keep "
            "the standard socketserver: " + ", ".join(early),
            RuntimeWarning,
            stacklevel=2,
        )
