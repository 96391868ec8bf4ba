"""What the two ends of a connection agreed in their SYNs -- the segment size (RFC 9293
§3.7.1), window scaling and timestamps (RFC 7323), SACK (RFC 2018) -- and the timestamp state
the segments after them carry: our clock and TS.Recent (RFC 7323 §4.3), checked by PAWS (§5)."""

from __future__ import annotations

import struct
from typing import Optional

from pyslirp.net.tcp_segment import TCPSegment, build_options
from pyslirp.net.tcp_types import HALF, MASK, TCPConfig

_OPT_TS = struct.Struct("!BBBBII")       # NOP NOP TS(10): the aligned form (RFC 7323 App. A)
_PAWS_IDLE = 24 * 86400.0                # RFC 7323 §5.5: TS.Recent is invalid after 24 days idle
_DEFAULT_MSS = 536                       # RFC 9293 §3.7.1: without the option


class NegotiatedOptions:
    """Our offer, and after the peer's SYN what both sides use."""

    def __init__(self, config: TCPConfig, iss: int, now: float) -> None:
        self.config = config
        ws = 0
        while ws < 14 and (config.rcv_buf >> ws) > 0xFFFF:
            ws += 1
        #: the window scale our SYN offers: enough for the receive buffer
        self.ws_offer = ws
        self.ws_ok = False
        #: the peer's window scale (its windows are shifted by it)
        self.snd_wscale = 0
        #: the largest segment either side takes (our MSS, the peer's)
        self.mss_cap = config.mss
        #: the payload of a full segment: mss_cap less the options every segment carries
        self.eff_mss = min(config.mss, _DEFAULT_MSS)
        self.sack_ok = False
        self.ts_ok = False
        self.ts_recent = 0
        self.ts_recent_age = now
        self.ts_offset = (iss * 2654435761 + 0x9E3779B9) & MASK

    def agree(self, syn: TCPSegment, now: float) -> int:
        """The peer's SYN (RFC 7323 §2.2/3.2, RFC 2018 §2, RFC 9293 §3.7.1 default MSS 536):
        record what both sides agreed; return our window scale (0 without scaling)."""
        cfg = self.config
        peer_mss = syn.mss if syn.mss is not None else _DEFAULT_MSS
        cap = peer_mss if peer_mss < cfg.mss else cfg.mss
        self.mss_cap = cap if cap > 48 else 48
        wscale = syn.wscale
        self.ws_ok = cfg.window_scaling and wscale is not None
        rcv_wscale = 0
        if wscale is not None and self.ws_ok:
            self.snd_wscale = wscale if wscale <= 14 else 14
            rcv_wscale = self.ws_offer
        else:
            self.snd_wscale = 0
        self.sack_ok = cfg.sack and syn.sack_permitted
        ts_val = syn.ts_val
        self.ts_ok = cfg.timestamps and ts_val is not None
        if ts_val is not None and self.ts_ok:
            self.ts_recent = ts_val
            self.ts_recent_age = now
        self.eff_mss = self.mss_cap - (12 if self.ts_ok else 0)
        return rcv_wscale

    def syn_options(self, active: bool, rcv_wscale: int, now: float) -> bytes:
        """The options of our SYN (``active``: what we offer) or SYN-ACK (what we agreed)."""
        cfg = self.config
        if active:
            return build_options(
                mss=cfg.mss, wscale=self.ws_offer if cfg.window_scaling else None,
                sack_permitted=cfg.sack, ts_val=self.ts_now(now) if cfg.timestamps else None,
                ts_ecr=0)
        return build_options(
            mss=cfg.mss, wscale=rcv_wscale if self.ws_ok else None, sack_permitted=self.sack_ok,
            ts_val=self.ts_now(now) if self.ts_ok else None, ts_ecr=self.ts_recent)

    def ts_now(self, now: float) -> int:
        """Our timestamp clock: milliseconds from a per-connection offset."""
        return (int(now * 1000) + self.ts_offset) & MASK

    def timestamp_option(self, now: float) -> bytes:
        """The timestamps option every segment after the SYNs carries (RFC 7323 §3.2)."""
        return _OPT_TS.pack(1, 1, 8, 10, self.ts_now(now), self.ts_recent)

    def paws_rejects(self, ts_val: Optional[int], now: float) -> bool:
        """RFC 7323 §5.3 PAWS: a segment whose timestamp is older than TS.Recent is rejected,
        unless TS.Recent has been idle past its validity (§5.5; it then takes this one)."""
        if not self.ts_ok or ts_val is None or ((ts_val - self.ts_recent) & MASK) < HALF:
            return False
        if now - self.ts_recent_age > _PAWS_IDLE:
            self.ts_recent = ts_val
            return False
        return True

    def update_recent(self, ts_val: Optional[int], now: float) -> None:
        """RFC 7323 §4.3: an acceptable segment at or below Last.ACK.sent updates TS.Recent."""
        if ts_val is not None and self.ts_ok:
            self.ts_recent = ts_val
            self.ts_recent_age = now

    def newer_than_recent(self, ts_val: int) -> bool:
        return 0 < ((ts_val - self.ts_recent) & MASK) < HALF
