"""IPCP, the IP Control Protocol (RFC 1332, DNS options RFC 1877), server side.

We request our own IP-Address (3) and, when VJ is enabled, IP-Compression-Protocol (2) Van
Jacobson TCP/IP header compression 0x002D with our Max-Slot-Id and Comp-Slot-Id. The option
states what its sender can *receive* (RFC 1332 §3.2), so:

* the peer's VJ request, once Acked, is what we compress with when sending (``tx_vj``);
* our VJ request, once Acked by the peer, is what we decompress with (``rx_vj``).

Judging the peer's request:

* IP-Address (3): the address we assign (default 10.0.0.2) is Acked; anything else, 0.0.0.0
  included, is Nak'd with the assignment. If the option is missing we append it to a Nak as a
  hint (RFC 1332 §3.3).
* IP-Compression-Protocol (2): VJ with Max-Slot-Id up to ours is Acked, a larger one Nak'd down to
  ours; any other protocol, or VJ when disabled, is Rejected.
* Primary/Secondary DNS (129, 131, RFC 1877): Acked when they already hold the address we offer,
  else Nak'd with it; Rejected when we have no such server to offer.
* NBNS (130, 132), the deprecated IP-Addresses (1), and anything unknown: Rejected.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from ipaddress import IPv4Address

from pyslirp.ppp.fsm import FSM, FSMConfig, Option, OptionHandler, Verdict
from pyslirp.ppp.protocols import PROTO_VJ_COMP

__all__ = ["IPCP", "IPCPOptions", "VJParams"]

log = logging.getLogger(__name__)

OPT_IP_ADDRESSES = 1  # deprecated (RFC 1332 §3.1)
OPT_IP_COMPRESSION = 2
OPT_IP_ADDRESS = 3
OPT_PRIMARY_DNS = 129
OPT_PRIMARY_NBNS = 130
OPT_SECONDARY_DNS = 131
OPT_SECONDARY_NBNS = 132
_DNS_INDEX = {OPT_PRIMARY_DNS: 0, OPT_SECONDARY_DNS: 1}


@dataclass(frozen=True)
class VJParams:
    """Van Jacobson parameters of one direction (RFC 1332 §4)."""

    max_slot_id: int
    compress_slot_id: bool

    def encode(self) -> bytes:
        return PROTO_VJ_COMP.to_bytes(2, "big") + bytes((self.max_slot_id, int(self.compress_slot_id)))


@dataclass
class IPCPOptions:
    """Addresses and compression for IPCP."""

    local_ip: IPv4Address = IPv4Address("10.0.0.1")
    peer_ip: IPv4Address = IPv4Address("10.0.0.2")
    dns: tuple[IPv4Address, ...] = ()
    vj: bool = True
    vj_slots: int = 16  # slots 0..vj_slots-1: Max-Slot-Id = vj_slots - 1
    vj_compress_slot_id: bool = True


class IPCP(OptionHandler):
    """IPCP for one link session. ``fsm`` is its automaton; the attributes are its results."""

    def __init__(self, options: IPCPOptions, fsm_config: FSMConfig) -> None:
        self.options = options
        self.fsm = FSM("IPCP", self, fsm_config)
        self._max_slot_id = max(0, min(255, options.vj_slots - 1))
        self._want_address = True
        self._want_vj: VJParams | None = None
        #: Our VJ request as the peer acknowledged it: we decompress with it.
        self.rx_vj: VJParams | None = None
        #: The peer's VJ request as we acknowledged it: we compress with it.
        self.tx_vj: VJParams | None = None
        #: The address the peer agreed to use (None if it never sent the option).
        self.peer_address: IPv4Address | None = None
        #: DNS servers the peer agreed to take from us.
        self.dns_acked: tuple[IPv4Address, ...] = ()

    # --- our Configure-Request -----------------------------------------------------------------
    def reset_options(self) -> None:
        self._want_address = True
        self._want_vj = VJParams(self._max_slot_id, self.options.vj_compress_slot_id) if self.options.vj else None
        self.rx_vj = None

    def request_options(self) -> list[Option]:
        opts: list[Option] = []
        if self._want_vj is not None:
            opts.append((OPT_IP_COMPRESSION, self._want_vj.encode()))
        if self._want_address:
            opts.append((OPT_IP_ADDRESS, self.options.local_ip.packed))
        return opts

    def peer_acked(self, options: list[Option]) -> None:
        self.rx_vj = self._want_vj

    def peer_naked(self, options: list[Option]) -> None:
        for opt_type, value in options:
            if opt_type == OPT_IP_COMPRESSION and self._want_vj is not None:
                if len(value) == 4 and int.from_bytes(value[:2], "big") == PROTO_VJ_COMP:
                    self._want_vj = VJParams(
                        min(value[2], self._want_vj.max_slot_id), self._want_vj.compress_slot_id and bool(value[3])
                    )
                else:
                    self._want_vj = None  # the peer wants something we do not speak
            elif opt_type == OPT_IP_ADDRESS and len(value) == 4:
                # Our address is configured, not negotiable: keep asking for it.
                log.info("IPCP: peer suggests %s for us; keeping %s", IPv4Address(value), self.options.local_ip)

    def peer_rejected(self, options: list[Option]) -> None:
        for opt_type, _value in options:
            if opt_type == OPT_IP_COMPRESSION:
                self._want_vj = None
            elif opt_type == OPT_IP_ADDRESS:
                self._want_address = False

    # --- the peer's Configure-Request ----------------------------------------------------------
    def judge_option(self, opt_type: int, value: bytes) -> tuple[Verdict, bytes]:
        if opt_type == OPT_IP_ADDRESS:
            if len(value) != 4:
                return Verdict.REJECT, value
            if value == self.options.peer_ip.packed:
                return Verdict.ACK, value
            return Verdict.NAK, self.options.peer_ip.packed
        if opt_type == OPT_IP_COMPRESSION:
            return self._judge_vj(value)
        if opt_type in _DNS_INDEX:
            index = _DNS_INDEX[opt_type]
            if len(value) != 4 or index >= len(self.options.dns):
                return Verdict.REJECT, value
            offer = self.options.dns[index].packed
            return (Verdict.ACK, value) if value == offer else (Verdict.NAK, offer)
        # IP-Addresses (deprecated), NBNS (130, 132), anything else.
        return Verdict.REJECT, value

    def _judge_vj(self, value: bytes) -> tuple[Verdict, bytes]:
        if not self.options.vj or len(value) != 4 or int.from_bytes(value[:2], "big") != PROTO_VJ_COMP:
            return Verdict.REJECT, value
        max_slot_id, comp_slot_id = value[2], value[3]
        if max_slot_id > self._max_slot_id or comp_slot_id > 1:
            return Verdict.NAK, VJParams(min(max_slot_id, self._max_slot_id), comp_slot_id == 1).encode()
        return Verdict.ACK, value

    def hint_options(self, seen: set[int]) -> list[Option]:
        if OPT_IP_ADDRESS not in seen:
            return [(OPT_IP_ADDRESS, self.options.peer_ip.packed)]
        return []

    def we_acked(self, options: list[Option]) -> None:
        self.tx_vj = None
        self.peer_address = None
        dns: list[IPv4Address] = []
        for opt_type, value in options:
            if opt_type == OPT_IP_COMPRESSION:
                self.tx_vj = VJParams(value[2], bool(value[3]))
            elif opt_type == OPT_IP_ADDRESS:
                self.peer_address = IPv4Address(value)
            elif opt_type in _DNS_INDEX:
                dns.append(IPv4Address(value))
        self.dns_acked = tuple(dns)

    def this_layer_down(self, now: float) -> None:
        self.tx_vj = None
