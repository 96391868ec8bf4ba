"""The server process without OpenSSL.

pyslirp speaks no TLS: its lines, services, forwards, SOCKS5 upstreams and monitoring endpoint are
plain TCP and UDP. Yet asyncio and uvloop import :mod:`ssl` as they load, and ``ssl`` maps
OpenSSL's libssl and libcrypto: about 4.5 MB of a server's resident memory, a sixth of it on a
small board. ``pyslirp serve`` therefore installs a stand-in as ``ssl`` before it imports its
event loop (:func:`install`), unless the configuration it starts with names an operator's
admission check (``security.admission``), which may speak TLS itself; a check that a reload
brings in later finds no TLS until the server restarts, and its error says so.

The stand-in has every name a library reads from ``ssl`` while it loads (uvloop's error classes
and constants, prometheus-client's defaults): each is a class of its own that raises
:class:`TLSUnavailable` when anything makes one, so a TLS context, socket or object can never be
made by mistake and fail later, away from its cause.
"""

from __future__ import annotations

import sys
import types
from typing import Any, NoReturn

__all__ = ["TLSUnavailable", "install"]

#: the error classes of the real module, which libraries catch or subclass at import
#: (uvloop's ``ssl_SSLAgainErrors``): real exception classes here, under SSLError as there
_ERRORS = (
    "SSLZeroReturnError", "SSLWantReadError", "SSLWantWriteError", "SSLSyscallError", "SSLEOFError",
    "SSLCertVerificationError",
)
#: the SSL_ERROR_* codes uvloop copies into C ints at import (OpenSSL's values, as ``ssl`` has them)
_ERROR_CODES = {"SSL_ERROR_WANT_READ": 2, "SSL_ERROR_WANT_WRITE": 3, "SSL_ERROR_SYSCALL": 5}


class TLSUnavailable(RuntimeError):
    """Something in the server tried to use TLS, which it never loads."""


def _unavailable(name: str) -> type:
    """The stand-in for ``ssl.<name>``: a class (usable where a type or a default is expected at
    import) that refuses to be called."""

    def refuse(cls: type, *args: Any, **kwargs: Any) -> NoReturn:
        raise TLSUnavailable(f"ssl.{name}: pyslirp's server runs without TLS (OpenSSL is not loaded); a "
                             "server started with security.admission set loads it, for the operator's check")

    return type(name, (), {"__new__": refuse, "__module__": "ssl"})


def _stand_in() -> types.ModuleType:
    module = types.ModuleType("ssl", __doc__)
    ssl_error = type("SSLError", (OSError,), {"__module__": "ssl"})
    module.SSLError = ssl_error  # type: ignore[attr-defined]
    for name in _ERRORS:
        setattr(module, name, type(name, (ssl_error,), {"__module__": "ssl"}))
    module.CertificateError = module.SSLCertVerificationError  # type: ignore[attr-defined]
    for name, code in _ERROR_CODES.items():
        setattr(module, name, code)

    def __getattr__(name: str) -> type:
        if name.startswith("__"):  # module protocol probes (__path__, __file__): not ssl's names
            raise AttributeError(name)
        stand_in = _unavailable(name)
        setattr(module, name, stand_in)
        return stand_in

    module.__getattr__ = __getattr__  # type: ignore[attr-defined]
    return module


def install() -> bool:
    """Make ``import ssl`` give the stand-in from now on in this process; False (and nothing
    changed) where ``ssl`` is already loaded, by a site hook or an earlier import."""
    if "ssl" in sys.modules:
        return False
    sys.modules["ssl"] = _stand_in()
    return True
