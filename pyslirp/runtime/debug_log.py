"""``serve --debug``: every PPP control packet each way logged decoded, one line each, as pppd's
``debug`` option logs them: ``sent [LCP ConfReq id=0x1 <asyncmap 0x0> <magic 0x5eed1234>]``.

A frame tap on the ``pyslirp.debug`` logger at DEBUG; the server attaches it to each gateway only
with ``--debug``, so without it nothing is decoded. The text comes from
:func:`pyslirp.ppp.describe.describe_frame`, which never shows a secret and never raises. Data
frames (IP, VJ) are not logged. Unlike pppd at ``debug`` level 1, LCP Echo packets are logged too.
"""

from __future__ import annotations

import logging

from pyslirp.ppp.describe import describe_frame
from pyslirp.runtime.observers import Direction

log = logging.getLogger("pyslirp.debug")


class PacketDebugLog:
    """Logs each control frame it is shown, with pppd's ``rcvd``/``sent``."""

    def frame(self, direction: Direction, frame: bytes, now: float) -> None:
        text = describe_frame(frame)
        if text is not None:
            log.debug("%s %s", "rcvd" if direction is Direction.RECEIVED else "sent", text)
