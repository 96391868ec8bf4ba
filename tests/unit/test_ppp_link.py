"""PPPLink end to end against a scripted client that behaves like Linux pppd's defaults.

pppd, dialling in with default options, asks for: LCP asyncmap 0, a magic number, protocol and
address/control field compression; IPCP address 0.0.0.0 (to be assigned) and VJ compression with
16 slots (Max-Slot-Id 15) and Comp-Slot-Id 1; with usepeerdns, DNS 0.0.0.0 twice. Everything runs
on plain bytes and a fake clock.
"""

from __future__ import annotations

import hashlib
import random
from ipaddress import IPv4Address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyslirp.ppp.auth import AuthOptions
from pyslirp.ppp.fsm import FSMConfig, State, build_options, build_packet, earlier, parse_options
from pyslirp.ppp.ipcp import IPCPOptions
from pyslirp.ppp.lcp import LCPOptions
from pyslirp.ppp.link import (
    LINK_COUNTERS,
    RX_DISPOSITIONS,
    AuthFailed,
    AuthSucceeded,
    KeepaliveFailed,
    LinkDown,
    LinkOptions,
    LinkUp,
    LoopbackDetected,
    NetworkDown,
    Phase,
    PPPLink,
    ProtocolRejected,
)
from pyslirp.ppp.randomness import OSRandom

LCP, PAP, CHAP, IPCP, IPV6CP, CCP = 0xC021, 0xC023, 0xC223, 0x8021, 0x8057, 0x80FD
IP, VJC, VJU, IPV6 = 0x0021, 0x002D, 0x002F, 0x0057
ZERO = bytes(4)


def ip4(text: str) -> bytes:
    return IPv4Address(text).packed


# --- the scripted client -----------------------------------------------------------------------


class Pppd:
    """A reactive PPP client scripted after pppd's defaults (no timers of its own)."""

    def __init__(
        self,
        *,
        magic: int = 0x5EED1234,
        mru: int | None = None,
        asyncmap: int = 0,
        pcomp: bool = True,
        accomp: bool = True,
        vj: bool = True,
        usepeerdns: bool = False,
        user: str | None = None,
        password: str | None = None,
        refuse_chap: bool = False,
        ipv6: bool = False,
        answer_echo: bool = True,
        reject_ipcp: bool = False,
        silent_auth: bool = False,
        ip: bytes = ZERO,
    ) -> None:
        self.magic = magic
        self.mru = mru
        self.asyncmap = asyncmap
        self.pcomp, self.accomp, self.vj = pcomp, accomp, vj
        self.usepeerdns = usepeerdns
        self.user, self.password = user, password
        self.refuse_chap = refuse_chap
        self.ipv6 = ipv6
        self.answer_echo = answer_echo
        self.reject_ipcp = reject_ipcp
        self.silent_auth = silent_auth
        self.initial_ip = ip
        self.out: list[bytes] = []
        self.received: list[tuple[int, bytes, int, bytes]] = []  # protocol, info, accm, raw frame
        self.next_id = 1
        self.reset()

    def reset(self) -> None:
        self.lcp_req = self._lcp_request_options()
        self.lcp_req_id = -1
        self.lcp_acked = self.lcp_we_acked = self.lcp_open = False
        self.server_lcp: dict[int, bytes] = {}
        self.auth_ok: bool | None = None
        self.ipcp_started = self.ipcp_acked = self.ipcp_we_acked = self.ipcp_open = False
        self.ipcp_req_id = -1
        self.ip = self.initial_ip
        self.dns = [ZERO, ZERO]
        self.want_vj = self.vj
        self.vj_params = bytes((15, 1))  # Max-Slot-Id 15, Comp-Slot-Id 1
        self.want_dns = [self.usepeerdns, self.usepeerdns]  # pppd's req_dns1, req_dns2
        self.server_ipcp: dict[int, bytes] = {}
        self.protocol_rejects: list[tuple[int, bytes]] = []
        self.echo_replies: list[bytes] = []
        self.terminated = False
        self.chap_responses = 0

    # --- framing ---
    def send(self, protocol: int, packet: bytes) -> None:
        compress = self.lcp_open and protocol != LCP
        header = b"" if compress and 8 in self.server_lcp else b"\xff\x03"
        if compress and 7 in self.server_lcp and protocol < 0x100:
            self.out.append(header + bytes((protocol,)) + packet)
        else:
            self.out.append(header + protocol.to_bytes(2, "big") + packet)

    def take(self) -> list[bytes]:
        out, self.out = self.out, []
        return out

    def packet(self, protocol: int, code: int, data: bytes = b"", ident: int | None = None) -> int:
        if ident is None:
            ident, self.next_id = self.next_id, (self.next_id + 1) & 0xFF
        self.send(protocol, build_packet(code, ident, data))
        return ident

    def receive(self, frame: bytes, accm: int) -> None:
        i = 2 if frame[:2] == b"\xff\x03" else 0
        if frame[i] & 1:
            protocol, i = frame[i], i + 1
        else:
            protocol, i = int.from_bytes(frame[i : i + 2], "big"), i + 2
        info = frame[i:]
        self.received.append((protocol, info, accm, frame))
        handler = {LCP: self.on_lcp, PAP: self.on_pap, CHAP: self.on_chap, IPCP: self.on_ipcp}.get(protocol)
        if handler is not None:
            handler(info[0], info[1], info[4 : int.from_bytes(info[2:4], "big")])

    def frames(self, protocol: int) -> list[tuple[bytes, int, bytes]]:
        return [(info, accm, raw) for p, info, accm, raw in self.received if p == protocol]

    # --- LCP ---
    def _lcp_request_options(self) -> list[tuple[int, bytes]]:
        opts = []
        if self.mru is not None:
            opts.append((1, self.mru.to_bytes(2, "big")))
        opts.append((2, self.asyncmap.to_bytes(4, "big")))
        opts.append((5, self.magic.to_bytes(4, "big")))
        if self.pcomp:
            opts.append((7, b""))
        if self.accomp:
            opts.append((8, b""))
        return opts

    def start(self) -> None:
        self.send_lcp_request()

    def send_lcp_request(self) -> None:
        self.lcp_req_id = self.packet(LCP, 1, build_options(self.lcp_req))

    def on_lcp(self, code: int, ident: int, data: bytes) -> None:
        if code == 1:
            if self.lcp_open:  # pppd: renegotiate from scratch
                self.reset()
                self.send_lcp_request()
            self.judge_lcp(ident, data)
        elif code == 2 and ident == self.lcp_req_id:
            self.lcp_acked = True
            self.check_lcp_open()
        elif code == 3 and ident == self.lcp_req_id:
            for t, v in parse_options(data) or []:
                self.lcp_req = [(t, v) if t2 == t else (t2, v2) for t2, v2 in self.lcp_req]
            self.send_lcp_request()
        elif code == 4 and ident == self.lcp_req_id:
            rejected = {t for t, _ in parse_options(data) or []}
            self.lcp_req = [(t, v) for t, v in self.lcp_req if t not in rejected]
            self.send_lcp_request()
        elif code == 5:
            self.packet(LCP, 6, ident=ident)
            self.terminated = True
            self.lcp_open = False
        elif code == 6:
            self.terminated = True
        elif code == 8:
            self.protocol_rejects.append((int.from_bytes(data[:2], "big"), data[2:]))
        elif code == 9 and self.lcp_open and self.answer_echo:
            self.packet(LCP, 10, self.magic.to_bytes(4, "big") + data[4:], ident=ident)
        elif code == 10:
            self.echo_replies.append(data)

    def judge_lcp(self, ident: int, data: bytes) -> None:
        opts = parse_options(data) or []
        naks, rejects = [], []
        for t, v in opts:
            if t == 3:
                proto = int.from_bytes(v[:2], "big")
                if proto == CHAP and (self.refuse_chap or self.password is None):
                    (naks if self.password is not None else rejects).append((3, PAP.to_bytes(2, "big")) if self.password is not None else (t, v))
                elif proto == PAP and self.password is None:
                    rejects.append((t, v))
            elif t == 7 and not self.pcomp or t == 8 and not self.accomp:
                rejects.append((t, v))
            elif t not in (1, 2, 3, 5, 7, 8):
                rejects.append((t, v))
        if rejects:
            self.packet(LCP, 4, build_options(rejects), ident=ident)
        elif naks:
            self.packet(LCP, 3, build_options(naks), ident=ident)
        else:
            self.packet(LCP, 2, data, ident=ident)
            self.server_lcp = dict(opts)
            self.lcp_we_acked = True
            self.check_lcp_open()

    def check_lcp_open(self) -> None:
        if self.lcp_acked and self.lcp_we_acked and not self.lcp_open:
            self.lcp_open = True
            auth = self.server_lcp.get(3, b"")[:2]
            if auth and self.silent_auth:
                pass  # never authenticates
            elif auth == PAP.to_bytes(2, "big"):
                user, pw = (self.user or "").encode(), (self.password or "").encode()
                self.packet(PAP, 1, bytes((len(user),)) + user + bytes((len(pw),)) + pw)
            elif auth == CHAP.to_bytes(2, "big"):
                pass  # wait for the Challenge
            else:
                self.start_ipcp()

    # --- authentication ---
    def on_pap(self, code: int, ident: int, data: bytes) -> None:
        if code == 2:
            self.auth_ok = True
            self.start_ipcp()
        elif code == 3:
            self.auth_ok = False
            self.packet(LCP, 5, b"Failed to authenticate ourselves to peer")

    def on_chap(self, code: int, ident: int, data: bytes) -> None:
        if code == 1 and not self.silent_auth:
            challenge = data[1 : 1 + data[0]]
            secret = (self.password or "").encode()
            value = hashlib.md5(bytes((ident,)) + secret + challenge).digest()
            user = (self.user or "").encode()
            self.chap_responses += 1
            self.packet(CHAP, 2, bytes((16,)) + value + user, ident=ident)
        elif code == 3:
            if self.auth_ok is None:
                self.auth_ok = True
                self.start_ipcp()
        elif code == 4:
            self.auth_ok = False
            self.packet(LCP, 5, b"Failed to authenticate ourselves to peer")

    # --- IPCP ---
    def ipcp_request_options(self) -> list[tuple[int, bytes]]:
        opts = [(3, self.ip)]
        if self.want_vj:
            opts.append((2, VJC.to_bytes(2, "big") + self.vj_params))
        if self.want_dns[0]:
            opts.append((129, self.dns[0]))
        if self.want_dns[1]:
            opts.append((131, self.dns[1]))
        return opts

    def start_ipcp(self) -> None:
        if self.reject_ipcp:
            return
        self.ipcp_started = True
        self.send_ipcp_request()
        if self.ipv6:
            self.packet(IPV6CP, 1, build_options([(1, bytes.fromhex("0211223344556677"))]))

    def send_ipcp_request(self) -> None:
        self.ipcp_req_id = self.packet(IPCP, 1, build_options(self.ipcp_request_options()))

    def on_ipcp(self, code: int, ident: int, data: bytes) -> None:
        if self.reject_ipcp:  # like a client built without IPv4 support
            self.packet(LCP, 8, IPCP.to_bytes(2, "big") + build_packet(code, ident, data))
            return
        if code == 1:
            opts = parse_options(data) or []
            rejects = [(t, v) for t, v in opts if t not in (2, 3) or (t == 2 and not self.vj)]
            if rejects:
                self.packet(IPCP, 4, build_options(rejects), ident=ident)
            else:
                self.packet(IPCP, 2, data, ident=ident)
                self.server_ipcp = dict(opts)
                self.ipcp_we_acked = True
                self.check_ipcp_open()
        elif code == 2 and ident == self.ipcp_req_id:
            self.ipcp_acked = True
            self.check_ipcp_open()
        elif code == 3 and ident == self.ipcp_req_id:
            for t, v in parse_options(data) or []:
                if t == 3:
                    self.ip = v
                elif t == 2 and len(v) == 4 and v[:2] == VJC.to_bytes(2, "big") and v[2] <= 15:
                    self.vj_params = v[2:]
                elif t in (129, 131):
                    self.dns[0 if t == 129 else 1] = v
            self.send_ipcp_request()
        elif code == 4 and ident == self.ipcp_req_id:
            for t, _ in parse_options(data) or []:
                if t == 2:
                    self.want_vj = False
                elif t in (129, 131):
                    self.want_dns[0 if t == 129 else 1] = False
            self.send_ipcp_request()
        elif code == 5:
            self.packet(IPCP, 6, ident=ident)

    def check_ipcp_open(self) -> None:
        if self.ipcp_acked and self.ipcp_we_acked:
            self.ipcp_open = True


class Wire:
    """The link and the client joined back to back, with a fake clock."""

    def __init__(self, options: LinkOptions | None = None, peer: Pppd | None = None, seed: int = 1) -> None:
        self.now = 0.0
        self.link = PPPLink(options or LinkOptions(), random.Random(seed))
        self.peer = peer or Pppd()
        self.events: list[object] = []
        self.delivered: list[bytes] = []

    def dial(self) -> Wire:
        self.link.open(self.now)
        self.peer.start()
        self.pump()
        return self

    def pump(self) -> None:
        for _ in range(200):
            self.check_view()
            out = self.link.take_output()
            for frame, accm in out:
                self.peer.receive(frame, accm)
            frames = self.peer.take()
            for frame in frames:
                datagram = self.link.receive_frame(frame, self.now)
                if datagram is not None:
                    self.delivered.append(datagram)
                self.check_view()
            self.events += self.link.events()
            if not out and not frames:
                return
        raise AssertionError("the exchange does not settle")

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while (deadline := self.link.next_deadline()) is not None and deadline <= end:
            self.now = deadline
            self.link.handle_timer(self.now)
            self.check_view()
            self.pump()
        self.now = end

    def check_view(self) -> None:
        """What the link takes from its protocols only after they ran (its deadline, whether IP
        passes, the ACCM, ACFC and PFC it sends with) is what they say now: every test that
        dials through a Wire checks the cached view."""
        link = self.link
        fresh = earlier(link.lcp.next_deadline(), link.ipcp.fsm.next_deadline())
        if link._auth is not None:
            fresh = earlier(fresh, link._auth.next_deadline())
        assert link.next_deadline() == fresh
        lcp_open = link.lcp_state is State.OPENED
        assert link.tx_accm == (link.lcp.peer_accm if lcp_open else 0xFFFFFFFF)
        ip_open = link.phase is Phase.NETWORK and link.ipcp_state is State.OPENED
        assert link._ip_open == ip_open
        assert link._tx_acfc == (lcp_open and link.lcp.peer_acfc)
        assert link._tx_pfc == (lcp_open and link.lcp.peer_pfc)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


# --- negotiation -----------------------------------------------------------------------------


def test_the_link_draws_its_magic_number_from_the_os_by_default() -> None:
    link = PPPLink(LinkOptions())
    assert isinstance(link._rng, OSRandom)
    source = OSRandom()
    for bits in (1, 5, 8, 32):
        assert all(0 <= source.getrandbits(bits) < 1 << bits for _ in range(200))
    assert max(source.getrandbits(8) for _ in range(2000)) >= 0x80  # the top bit is used too
    assert len(source.randbytes(16)) == 16


def test_pppd_defaults_bring_the_network_up() -> None:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0))).dial()
    link, peer = w.link, w.peer
    assert link.phase is Phase.NETWORK
    assert link.lcp_state is State.OPENED and link.ipcp_state is State.OPENED
    (up,) = w.of(LinkUp)
    assert up == LinkUp(IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"), (), peer_mru=1500, vj_tx=True, vj_rx=True)
    # The client was given its address by Nak and ours was acknowledged.
    assert peer.ip == ip4("10.0.0.2") and peer.ipcp_open
    assert peer.server_ipcp[3] == ip4("10.0.0.1")
    assert peer.server_ipcp[2] == bytes.fromhex("002d0f01")
    # asyncmap 0 both ways once LCP is Opened; the peer's MRU default.
    assert link.tx_accm == 0 and link.rx_accm == 0 and link.peer_mru == 1500
    # LCP always with Address/Control, 2-octet protocol and the default map (RFC 1662 §7.1).
    for info, accm, raw in peer.frames(LCP):
        assert accm == 0xFFFFFFFF and raw[:4] == b"\xff\x03\xc0\x21"
    # IPCP after LCP Opened: the negotiated map and ACFC.
    for info, accm, raw in peer.frames(IPCP):
        assert accm == 0 and raw[:2] == b"\x80\x21"
    assert not any(k.endswith("illegal_event") for k in link.counters())


def test_datagrams_flow_with_acfc_and_pfc() -> None:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0), ipcp=IPCPOptions(vj=False)), Pppd(vj=False)).dial()
    udp = bytes.fromhex("4500001c0001000040110000") + ip4("10.0.0.1") + ip4("10.0.0.2") + bytes(8)
    frame = w.link.encode_datagram(udp)
    assert frame == b"\x21" + udp  # ACFC and PFC: just the 1-octet protocol
    # The client may send either form: both are accepted.
    assert w.link.receive_frame(b"\x21" + udp, w.now) == udp
    assert w.link.receive_frame(b"\xff\x03\x00\x21" + udp, w.now) == udp
    assert w.link.counters()["rx_ip"] == 2


def test_novj() -> None:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0)), Pppd(vj=False)).dial()
    (up,) = w.of(LinkUp)
    assert not up.vj_tx and not up.vj_rx
    assert 2 not in w.peer.server_ipcp  # the client rejected our VJ request
    assert w.link.ipcp.rx_vj is None and w.link.ipcp.tx_vj is None


def test_vj_disabled_on_our_side_rejects_the_clients_vj() -> None:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0), ipcp=IPCPOptions(vj=False))).dial()
    (up,) = w.of(LinkUp)
    assert not up.vj_tx and not up.vj_rx
    assert not w.peer.want_vj  # it was Rejected, pppd stopped asking


def test_vj_slot_count_is_negotiated_both_ways() -> None:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0), ipcp=IPCPOptions(vj_slots=8))).dial()
    assert w.link.ipcp.tx_vj is not None and w.link.ipcp.tx_vj.max_slot_id == 7  # pppd's 15 Nak'd to 7
    assert w.peer.server_ipcp[2] == bytes.fromhex("002d0701")
    assert w.link.ipcp.rx_vj is not None and w.link.ipcp.rx_vj.max_slot_id == 7


def test_noaccomp_nopcomp() -> None:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0), ipcp=IPCPOptions(vj=False)), Pppd(pcomp=False, accomp=False, vj=False)).dial()
    assert 7 not in w.peer.server_lcp and 8 not in w.peer.server_lcp
    assert not w.link.lcp.peer_pfc and not w.link.lcp.peer_acfc
    packet = bytes(20)
    assert w.link.encode_datagram(packet) == b"\xff\x03\x00\x21" + packet
    for info, accm, raw in w.peer.frames(IPCP):
        assert raw[:4] == b"\xff\x03\x80\x21"


def test_mru_296() -> None:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0)), Pppd(mru=296)).dial()
    assert w.link.peer_mru == 296
    assert w.of(LinkUp)[0].peer_mru == 296
    assert w.link.lcp.fsm.max_packet == 296


def test_our_mru_is_requested_when_not_default() -> None:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0, mru=1000))).dial()
    assert w.peer.server_lcp[1] == (1000).to_bytes(2, "big")


def test_asyncmap_0xa0000() -> None:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0)), Pppd(asyncmap=0xA0000)).dial()
    assert w.link.tx_accm == 0xA0000
    assert w.link.rx_accm == 0
    for info, accm, raw in w.peer.frames(IPCP):
        assert accm == 0xA0000
    for info, accm, raw in w.peer.frames(LCP):
        assert accm == 0xFFFFFFFF


def test_accm_is_default_until_lcp_opened() -> None:
    link = PPPLink(LinkOptions(), random.Random(1))
    assert link.tx_accm == link.rx_accm == 0xFFFFFFFF
    link.open(0.0)
    assert link.tx_accm == link.rx_accm == 0xFFFFFFFF


@pytest.mark.parametrize(
    ("dns", "expect_dns", "still_asking"),
    [
        (("10.0.0.1", "8.8.8.8"), [ip4("10.0.0.1"), ip4("8.8.8.8")], [True, True]),
        (("10.0.0.1",), [ip4("10.0.0.1"), ZERO], [True, False]),
        ((), [ZERO, ZERO], [False, False]),
    ],
)
def test_usepeerdns(dns: tuple[str, ...], expect_dns: list[bytes], still_asking: list[bool]) -> None:
    options = LinkOptions(lcp=LCPOptions(echo_interval=0), ipcp=IPCPOptions(dns=tuple(IPv4Address(a) for a in dns)))
    w = Wire(options, Pppd(usepeerdns=True)).dial()
    assert w.peer.ipcp_open
    assert w.peer.dns == expect_dns
    assert w.peer.want_dns == still_asking  # what was Rejected, pppd stops asking
    (up,) = w.of(LinkUp)
    assert up.dns == tuple(IPv4Address(a) for a in dns)


def test_client_asking_a_wrong_address_is_nakd_with_its_assignment() -> None:
    peer = Pppd(ip=ip4("192.168.1.50"))
    Wire(LinkOptions(lcp=LCPOptions(echo_interval=0)), peer).dial()
    naks = [info for info, _, _ in peer.frames(IPCP) if info[0] == 3]
    assert naks and parse_options(naks[0][4:]) == [(3, ip4("10.0.0.2"))]
    assert peer.ip == ip4("10.0.0.2") and peer.ipcp_open


# --- authentication ----------------------------------------------------------------------------


CREDS = {"alice": "s3cret-pw"}


def auth_options(method: str, *fallback: str, timeout: float = 30.0, chap_rechallenge_interval: float | None = None,
                 max_configure: int = 10) -> LinkOptions:
    return LinkOptions(
        lcp=LCPOptions(echo_interval=0, auth_methods=(method, *fallback)),
        auth=AuthOptions(credentials=CREDS, timeout=timeout, chap_rechallenge_interval=chap_rechallenge_interval),
        fsm=FSMConfig(max_configure=max_configure),
    )


def assert_no_secret(w: Wire) -> None:
    for event in w.events:
        assert "s3cret" not in repr(event)
        assert "wrong" not in repr(event) or isinstance(event, AuthFailed)
    assert "s3cret" not in repr(w.link.options)


def test_pap_good() -> None:
    w = Wire(auth_options("pap"), Pppd(user="alice", password="s3cret-pw")).dial()
    assert w.of(AuthSucceeded) == [AuthSucceeded("alice", "pap")]
    assert w.peer.auth_ok is True
    assert len(w.of(LinkUp)) == 1
    assert_no_secret(w)


def test_pap_bad_password_ends_the_link() -> None:
    w = Wire(auth_options("pap"), Pppd(user="alice", password="guess")).dial()
    assert w.of(AuthFailed) == [AuthFailed("alice", "pap", "wrong password")]
    assert w.peer.auth_ok is False
    assert not w.of(LinkUp)
    w.advance(30)
    assert w.link.phase is Phase.DEAD
    (down,) = w.of(LinkDown)
    assert down.reason == "authentication failed"
    assert_no_secret(w)
    assert "guess" not in repr(w.events)


def test_pap_unknown_user() -> None:
    w = Wire(auth_options("pap"), Pppd(user="mallory", password="s3cret-pw")).dial()
    assert w.of(AuthFailed) == [AuthFailed("mallory", "pap", "unknown user")]


def test_pap_timeout_when_client_never_sends_credentials() -> None:
    w = Wire(auth_options("pap", timeout=20.0), Pppd(user="alice", password="s3cret-pw", silent_auth=True))
    w.dial()
    assert w.link.phase is Phase.AUTHENTICATE
    w.advance(19)
    assert not w.of(AuthFailed)
    w.advance(2)
    assert w.of(AuthFailed) == [AuthFailed("", "pap", "timeout waiting for Authenticate-Request")]


def test_chap_good() -> None:
    w = Wire(auth_options("chap"), Pppd(user="alice", password="s3cret-pw")).dial()
    assert w.peer.server_lcp[3] == bytes.fromhex("c22305")
    assert w.of(AuthSucceeded) == [AuthSucceeded("alice", "chap")]
    assert len(w.of(LinkUp)) == 1
    challenge = w.peer.frames(CHAP)[0][0]
    assert challenge[4] == 16 and challenge[5 + 16 :] == b"pyslirp"  # value size, value, our name
    assert_no_secret(w)


def test_chap_bad_secret() -> None:
    w = Wire(auth_options("chap"), Pppd(user="alice", password="nope")).dial()
    assert w.of(AuthFailed) == [AuthFailed("alice", "chap", "wrong response")]
    assert w.peer.auth_ok is False
    w.advance(30)
    assert w.link.phase is Phase.DEAD
    assert not w.of(LinkUp)


def test_chap_rechallenge() -> None:
    w = Wire(auth_options("chap", chap_rechallenge_interval=60.0), Pppd(user="alice", password="s3cret-pw")).dial()
    assert w.peer.chap_responses == 1
    w.advance(61)
    assert w.peer.chap_responses == 2
    assert w.link.phase is Phase.NETWORK
    assert w.of(AuthSucceeded) == [AuthSucceeded("alice", "chap"), AuthSucceeded("alice", "chap", rechallenge=True)]
    w.peer.password = "changed"  # the secret no longer matches: the next round fails
    w.advance(60)
    assert w.peer.chap_responses == 3
    assert w.of(AuthFailed) == [AuthFailed("alice", "chap", "wrong response")]
    w.advance(30)
    assert w.link.phase is Phase.DEAD
    assert [type(e) for e in w.events if isinstance(e, (NetworkDown, LinkDown))] == [NetworkDown, LinkDown]


def test_chap_challenge_is_retransmitted_then_times_out() -> None:
    peer = Pppd(user="alice", password="s3cret-pw", silent_auth=True)
    w = Wire(auth_options("chap", max_configure=4), peer).dial()
    w.advance(3 * 4 + 1)
    challenges = [info for info, _, _ in peer.frames(CHAP) if info[0] == 1]
    assert len(challenges) == 4
    assert len({c[1] for c in challenges}) == 4  # RFC 1994 §4.1: a new Identifier each time
    assert w.of(AuthFailed) == [AuthFailed("", "chap", "timeout waiting for Response")]


def test_chap_nakd_with_pap_falls_back_when_pap_allowed() -> None:
    w = Wire(auth_options("chap", "pap"), Pppd(user="alice", password="s3cret-pw", refuse_chap=True)).dial()
    assert w.peer.server_lcp[3] == PAP.to_bytes(2, "big")
    assert w.of(AuthSucceeded) == [AuthSucceeded("alice", "pap")]


def test_chap_nakd_with_pap_when_pap_not_allowed_fails() -> None:
    w = Wire(auth_options("chap"), Pppd(user="alice", password="s3cret-pw", refuse_chap=True)).dial()
    assert w.of(AuthFailed) == [AuthFailed("", "chap", "peer refused to authenticate")]
    assert not w.of(LinkUp)


def test_client_without_credentials_refuses_auth() -> None:
    w = Wire(auth_options("pap"), Pppd()).dial()
    assert w.of(AuthFailed) == [AuthFailed("", "pap", "peer refused to authenticate")]
    w.advance(30)
    assert w.of(LinkDown) == [LinkDown("authentication refused")]


def test_ip_before_authentication_is_dropped() -> None:
    w = Wire(auth_options("chap"), Pppd(user="alice", password="s3cret-pw", silent_auth=True)).dial()
    assert w.link.phase is Phase.AUTHENTICATE
    assert w.link.receive_frame(b"\xff\x03\x00\x21" + bytes(20), w.now) is None
    assert w.link.receive_frame(b"\xff\x03\x80\x21" + build_packet(1, 1), w.now) is None
    c = w.link.counters()
    assert c["ip_before_ipcp_open"] == 1 and c["ncp_before_network"] == 1


# --- keepalive, echo, rejects, loopback -------------------------------------------------------------


def test_keepalive_failure_takes_the_link_down() -> None:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=10, echo_failures=3)), Pppd(answer_echo=False)).dial()
    w.advance(35)
    assert not w.of(KeepaliveFailed)
    assert len([i for i, _, _ in w.peer.frames(LCP) if i[0] == 9]) == 3
    w.advance(5)  # t=40: three unanswered
    assert w.of(KeepaliveFailed) == [KeepaliveFailed(3)]
    w.peer.out.clear()
    w.peer.on_lcp = lambda *a: None  # type: ignore[method-assign]  # the client is gone
    w.advance(10)
    assert w.of(LinkDown) == [LinkDown("keepalive")]
    assert w.link.phase is Phase.DEAD


def test_keepalive_answered_keeps_the_link_up() -> None:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=10, echo_failures=3))).dial()
    w.advance(300)
    assert not w.of(KeepaliveFailed) and not w.of(LinkDown)
    assert len(w.peer.frames(LCP)) > 25
    assert w.link.counters()["lcp_echo_reply"] == 30


def test_negotiated_summarises_what_lcp_and_ipcp_agreed() -> None:
    link = PPPLink(LinkOptions(lcp=LCPOptions(echo_interval=0)), random.Random(1))
    assert link.negotiated() == {"phase": "dead"}
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0))).dial()
    summary = w.link.negotiated()
    assert summary["phase"] == "network"
    assert summary["lcp"] == {"mru": 1500, "peer_mru": 1500, "accm": "0x00000000", "peer_accm": "0x00000000",
                              "pfc": True, "acfc": True, "auth": "none", "echo_rtt": None}
    assert summary["ipcp"] == {"local_ip": "10.0.0.1", "peer_ip": "10.0.0.2", "dns": [], "vj_tx": True, "vj_rx": True}


def test_keepalive_measures_the_echo_round_trip() -> None:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=10)), Pppd(answer_echo=False)).dial()
    assert w.link.lcp.echo_rtt is None
    w.advance(10)  # our Echo-Request goes out at t=10
    (request,) = [i for i, _, _ in w.peer.frames(LCP) if i[0] == 9]
    w.now += 0.25
    w.peer.packet(LCP, 10, w.peer.magic.to_bytes(4, "big"), ident=request[1])
    w.pump()
    assert w.link.lcp.echo_rtt == pytest.approx(0.25)


def test_we_answer_echo_requests() -> None:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0))).dial()
    w.peer.packet(LCP, 9, (0x5EED1234).to_bytes(4, "big") + b"hello", ident=0x42)
    w.pump()
    reply = [i for i, _, _ in w.peer.frames(LCP) if i[0] == 10][-1]
    assert reply[1] == 0x42
    assert reply[4:8] == w.link.lcp.our_magic.to_bytes(4, "big") and reply[8:] == b"hello"
    assert w.link.lcp.our_magic != 0


def test_discard_request_is_counted_and_silent() -> None:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0))).dial()
    before = len(w.peer.received)
    w.peer.packet(LCP, 11, bytes(4) + b"x")
    w.pump()
    assert len(w.peer.received) == before
    assert w.link.counters()["lcp_discard_request"] == 1


def test_ipv6cp_is_protocol_rejected() -> None:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0)), Pppd(ipv6=True)).dial()
    ((proto, rest),) = w.peer.protocol_rejects
    assert proto == IPV6CP
    assert rest[0] == 1  # the rejected Configure-Request follows
    assert w.link.counters()["protocol_rejected"] == 1
    assert w.link.phase is Phase.NETWORK


@pytest.mark.parametrize("protocol", [CCP, IPV6, 0x4021, 0x0201])
def test_unknown_protocols_are_protocol_rejected(protocol: int) -> None:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0))).dial()
    w.peer.send(protocol, b"\x01\x01\x00\x04")
    w.pump()
    assert [p for p, _ in w.peer.protocol_rejects] == [protocol]


def test_protocol_reject_is_not_sent_before_lcp_opened() -> None:
    link = PPPLink(LinkOptions(), random.Random(1))
    link.open(0.0)
    link.take_output()
    link.receive_frame(b"\xff\x03\x80\x57\x01\x01\x00\x04", 0.0)
    assert link.take_output() == []
    assert link.counters()["lcp_not_open"] == 1


def test_peer_protocol_rejecting_ipcp_takes_the_link_down() -> None:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0)), Pppd(reject_ipcp=True)).dial()
    assert w.of(ProtocolRejected) == [ProtocolRejected(IPCP)]
    w.advance(30)
    assert w.of(LinkDown) == [LinkDown("peer rejected IPCP")]


def test_loopback_is_detected() -> None:
    link = PPPLink(LinkOptions(lcp=LCPOptions(echo_interval=0)), random.Random(7))
    link.open(0.0)
    events: list[object] = []
    now = 0.0
    for _ in range(200):
        out = link.take_output()
        if not out:
            deadline = link.next_deadline()
            if deadline is None:
                break
            now = deadline
            link.handle_timer(now)
            continue
        for frame, _accm in out:  # the line echoes everything back
            link.receive_frame(frame, now)
        events += link.events()
    events += link.events()
    assert [e for e in events if isinstance(e, LoopbackDetected)]
    assert events[-1] == LinkDown("loopback")
    assert link.phase is Phase.DEAD


def test_magic_collision_with_a_real_peer_is_resolved() -> None:
    # The client happens to ask for the very magic number we chose.
    rng_probe = random.Random(3)
    ours = rng_probe.getrandbits(32)
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0)), Pppd(magic=ours), seed=3).dial()
    assert w.link.lcp.our_magic == ours
    assert w.peer.ipcp_open
    assert w.link.lcp.peer_magic != ours
    assert not w.of(LoopbackDetected)


# --- termination and redial -----------------------------------------------------------------


def test_peer_terminate() -> None:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0))).dial()
    w.peer.packet(LCP, 5, b"User request")
    w.pump()
    assert w.of(NetworkDown)
    assert w.link.phase is Phase.TERMINATE
    w.advance(3)  # zrc: one Restart period in Stopping
    assert w.of(LinkDown) == [LinkDown("peer terminated: User request")]
    assert w.link.phase is Phase.DEAD


def test_administrative_close() -> None:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0))).dial()
    w.link.close("shutdown", w.now)
    w.pump()
    assert w.peer.terminated
    assert w.of(LinkDown) == [LinkDown("shutdown")]
    assert w.link.encode_datagram(bytes(20)) is None
    assert w.link.counters()["tx_before_ipcp_open"] == 1


def test_line_down() -> None:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=10))).dial()
    w.link.line_down(w.now)
    w.events += w.link.events()
    assert [type(e) for e in w.events[-2:]] == [NetworkDown, LinkDown]
    assert w.of(LinkDown) == [LinkDown("line down")]
    assert w.link.next_deadline() is None
    assert w.link.receive_frame(b"\xff\x03\xc0\x21" + build_packet(1, 1), w.now) is None
    assert w.link.counters()["link_dead"] == 1


def test_redial_gives_a_fresh_negotiation() -> None:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0))).dial()
    first_magic = w.link.lcp.our_magic
    w.link.line_down(w.now)
    w.peer = Pppd(magic=0x0BADCAFE)
    w.now += 5
    w.dial()
    assert len(w.of(LinkUp)) == 2
    assert w.link.lcp.our_magic != first_magic
    assert w.link.lcp.peer_magic == 0x0BADCAFE
    assert w.link.counters()["tx_lcp"] >= 4  # counters survive sessions


def test_new_options_wait_for_the_next_negotiation() -> None:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0))).dial()
    w.link.set_options(LinkOptions(lcp=LCPOptions(echo_interval=0), ipcp=IPCPOptions(peer_ip=IPv4Address("10.0.0.9"))))
    assert w.link.options.ipcp.peer_ip == IPv4Address("10.0.0.2")  # the link that is up keeps its own
    w.link.line_down(w.now)
    w.peer = Pppd()
    w.now += 5
    w.dial()
    assert [up.peer_ip for up in w.of(LinkUp)] == [IPv4Address("10.0.0.2"), IPv4Address("10.0.0.9")]


def test_open_after_terminate_negotiates_afresh_and_counts_both_sessions() -> None:
    # The gateway keeps one PPPLink per line and open()s it again after a LinkDown.
    def client() -> Pppd:
        return Pppd(magic=0x0BADCAFE, user="alice", password="s3cret-pw")

    w = Wire(auth_options("chap"), Pppd(user="alice", password="s3cret-pw")).dial()
    first_lcp = w.link.lcp
    w.peer.packet(LCP, 5, b"User request")
    w.pump()
    w.advance(3)
    assert w.link.phase is Phase.DEAD
    ended = w.link.counters()
    w.peer = client()
    w.now += 1
    w.dial()
    assert [type(e) for e in w.events] == [AuthSucceeded, LinkUp, NetworkDown, LinkDown, AuthSucceeded, LinkUp]
    assert w.link.phase is Phase.NETWORK and w.link.lcp is not first_lcp
    assert w.link.lcp.peer_magic == 0x0BADCAFE and w.peer.ipcp_open
    # The second session counted exactly what a link dialled once counts, on top of the first.
    once = Wire(auth_options("chap"), client()).dial().link.counters()
    both = w.link.counters()
    assert both == {key: ended.get(key, 0) + once.get(key, 0) for key in ended.keys() | once.keys()}
    assert both["rx_frames"] > ended["rx_frames"] > 0 and both["auth_success"] == 2


def test_lcp_renegotiation_brings_network_down_and_up() -> None:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0))).dial()
    w.peer.reset()
    w.peer.send_lcp_request()
    w.pump()
    types = [type(e) for e in w.events]
    assert types == [LinkUp, NetworkDown, LinkUp]
    assert w.link.phase is Phase.NETWORK


def test_lcp_negotiation_timeout() -> None:
    link = PPPLink(LinkOptions(), random.Random(1))
    link.open(0.0)
    now = 0.0
    while (deadline := link.next_deadline()) is not None:
        now = deadline
        link.handle_timer(now)
    assert now == 30.0
    assert sum(1 for f, _ in link.take_output() if f[4] == 1) == 10
    assert link.events() == [LinkDown("LCP negotiation timed out")]
    link.open(now)  # the runtime tries again
    assert link.phase is Phase.ESTABLISH


def test_passive_waits_for_the_peer_after_timeout() -> None:
    link = PPPLink(LinkOptions(lcp=LCPOptions(echo_interval=0), passive=True), random.Random(1))
    link.open(0.0)
    while (deadline := link.next_deadline()) is not None:
        link.handle_timer(deadline)
    assert link.events() == [] and link.lcp_state is State.STOPPED
    link.take_output()
    peer = Pppd()
    peer.start()
    for frame in peer.take():
        link.receive_frame(frame, 40.0)
    codes = sorted(f[4] for f, _ in link.take_output())
    assert codes == [1, 2]  # Stopped + RCR+: irc,scr,sca/8


def test_close_ends_a_passive_wait() -> None:
    link = PPPLink(LinkOptions(lcp=LCPOptions(echo_interval=0), passive=True), random.Random(1))
    link.open(0.0)
    while (deadline := link.next_deadline()) is not None:
        link.handle_timer(deadline)
    assert link.lcp_state is State.STOPPED and link.phase is Phase.ESTABLISH
    link.close("shutdown", 40.0)
    assert link.events() == [LinkDown("shutdown")] and link.phase is Phase.DEAD
    link.open(41.0)  # the runtime can start again
    assert link.phase is Phase.ESTABLISH and link.lcp_state is State.REQ_SENT


# --- VJ data path ---------------------------------------------------------------------------------


def tcp_packet(seq: int, payload: bytes, src: str = "10.0.0.2", dst: str = "10.0.0.1") -> bytes:
    from pyslirp._core.checksum import internet_checksum

    tcp = bytearray(20)
    tcp[0:2] = (40000).to_bytes(2, "big")
    tcp[2:4] = (22).to_bytes(2, "big")
    tcp[4:8] = seq.to_bytes(4, "big")
    tcp[8:12] = (1000).to_bytes(4, "big")
    tcp[12] = 5 << 4
    tcp[13] = 0x18  # PSH ACK
    tcp[14:16] = (8192).to_bytes(2, "big")
    total = 20 + 20 + len(payload)
    ip = bytearray(
        bytes([0x45, 0, *total.to_bytes(2, "big"), 0, 1, 0x40, 0, 64, 6, 0, 0]) + ip4(src) + ip4(dst)
    )
    ip[10:12] = internet_checksum(bytes(ip)).to_bytes(2, "big")
    return bytes(ip) + bytes(tcp) + payload


def test_vj_both_directions() -> None:
    vj = pytest.importorskip("pyslirp.ppp.vj")
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0))).dial()
    # Client -> us: the client compresses with what we asked (Max-Slot-Id 15, Comp-Slot-Id 1).
    comp = vj.VJCompressor(15, True)
    sent = [tcp_packet(1 + 10 * i, b"x" * 10) for i in range(5)]
    protocols = []
    for packet in sent:
        protocol, payload = comp.compress(packet)
        protocols.append(protocol)
        w.peer.send(protocol, payload)
    w.pump()
    assert protocols[0] == VJU and VJC in protocols
    assert w.delivered == sent
    # Us -> client: we compress with what the client asked.
    decomp = vj.VJDecompressor(15, True)
    out = [tcp_packet(500 + 10 * i, b"y" * 10, src="10.0.0.1", dst="10.0.0.2") for i in range(5)]
    got = []
    for packet in out:
        frame = w.link.encode_datagram(packet)
        assert frame is not None
        protocol = frame[0] if frame[0] & 1 else int.from_bytes(frame[:2], "big")
        got.append(decomp.decompress(protocol, frame[1:] if frame[0] & 1 else frame[2:]))
    assert got == out
    c = w.link.counters()
    assert c["rx_vj"] == 5 and c["tx_vj"] >= 4
    assert any(k.startswith("vj_rx_") for k in c)


def test_frame_error_tosses_vj_state() -> None:
    vj = pytest.importorskip("pyslirp.ppp.vj")
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0))).dial()
    comp = vj.VJCompressor(15, True)
    frames = [comp.compress(tcp_packet(1 + 10 * i, b"z" * 10)) for i in range(3)]
    w.link.receive_frame(b"\x2f" + frames[0][1], w.now)
    w.link.frame_error()  # frame 1 was lost on the line
    assert w.link.receive_frame(b"\x2d" + frames[2][1], w.now) is None
    c = w.link.counters()
    assert c["frame_error"] == 1 and c["vj_dropped"] == 1 and c["vj_rx_toss_requests"] == 1


def test_vj_frames_when_not_negotiated_are_dropped() -> None:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0)), Pppd(vj=False)).dial()
    assert w.link.receive_frame(b"\x2d\x00\x00\x00", w.now) is None
    assert w.link.counters()["vj_not_negotiated"] == 1


# --- garbage ----------------------------------------------------------------------------------------


def dispositions(counters: dict[str, int]) -> int:
    return sum(counters.get(k, 0) for k in RX_DISPOSITIONS)


def test_malformed_frames_are_counted_by_reason() -> None:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0))).dial()
    link = w.link
    for frame in (b"", b"\xff", b"\xff\x03", b"\xff\x02\x00\x21", b"\x00", b"\x00\x20", b"\x21"):
        assert link.receive_frame(frame, w.now) is None
    c = link.counters()
    assert c["short_frame"] == 4  # empty, FF 03 with nothing, 0x00 alone, an empty IP frame
    assert c["bad_address_control"] == 2
    assert c["bad_protocol"] == 1
    assert c["rx_frames"] == dispositions(c)


def _established_link() -> PPPLink:
    return Wire(LinkOptions(lcp=LCPOptions(echo_interval=5)), seed=11).dial().link


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frames=st.lists(
        st.one_of(
            st.binary(max_size=64),
            st.tuples(st.sampled_from([b"\xff\x03\xc0\x21", b"\x80\x21", b"\xc0\x23", b"\xc2\x23", b"\x21", b"\x2d",
                                        b"\x2f", b"\x80\x57", b"\xff\x03"]), st.binary(max_size=48)).map(b"".join),
        ),
        max_size=30,
    ),
    phase=st.sampled_from(["dead", "establish", "network"]),
)
def test_random_frames_never_raise_and_are_all_counted(frames: list[bytes], phase: str) -> None:
    if phase == "network":
        link = _established_link()
    else:
        link = PPPLink(LinkOptions(), random.Random(5))
        if phase == "establish":
            link.open(0.0)
    before = link.counters()
    now = 1.0
    for frame in frames:
        link.receive_frame(frame, now)
        link.take_output()
        link.events()
        now += 0.5
        if (deadline := link.next_deadline()) is not None and deadline <= now:
            link.handle_timer(now)
    after = link.counters()
    assert after.get("rx_frames", 0) - before.get("rx_frames", 0) == len(frames)
    assert dispositions(after) - dispositions(before) == len(frames)
    assert after.get("internal_error", 0) == 0


def test_lcp_renegotiation_reauthenticates_and_keeps_counters() -> None:
    w = Wire(auth_options("chap"), Pppd(user="alice", password="s3cret-pw")).dial()
    w.peer.reset()
    w.peer.send_lcp_request()
    w.pump()
    assert w.of(AuthSucceeded) == [AuthSucceeded("alice", "chap")] * 2
    assert [type(e) for e in w.events if not isinstance(e, AuthSucceeded)] == [LinkUp, NetworkDown, LinkUp]
    assert w.link.counters()["auth_success"] == 2


def test_vj_compressor_failure_sends_plain_ip() -> None:
    pytest.importorskip("pyslirp.ppp.vj")
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0))).dial()

    class Broken:
        def compress(self, packet: bytes) -> tuple[int, bytes]:
            raise RuntimeError("bug")

        def counters(self) -> dict[str, int]:
            return {}

    w.link._vj_tx = Broken()
    assert w.link.encode_datagram(b"E" + bytes(19)) == b"\x21E" + bytes(19)
    assert w.link.counters()["vj_compress_error"] == 1


# --- every count is declared (pyslirp.counters) ----------------------------------------------------


def _vj_traffic(w: Wire) -> None:
    """TCP both ways, compressed; then a lost frame and a compressed frame that cannot be decoded."""
    from pyslirp.ppp import vj

    comp = vj.VJCompressor(15, True)
    for i in range(4):
        w.peer.send(*comp.compress(tcp_packet(1 + 10 * i, b"x" * 10)))
        w.link.encode_datagram(tcp_packet(500 + 10 * i, b"y" * 10, src="10.0.0.1", dst="10.0.0.2"))
    w.pump()
    w.link.frame_error()
    w.link.receive_frame(b"\x2d" + comp.compress(tcp_packet(100, b"z"))[1], w.now)
    w.link.receive_frame(b"\x2f\x00", w.now)


def _garbage(w: Wire) -> None:
    for frame in (b"", b"\xff", b"\xff\x03", b"\xff\x02\x00\x21", b"\x00", b"\x00\x20", b"\x21",
                  b"\xc0\x23\x01", b"\x80\x21\x01\x01\x00", b"\x80\x57\x01\x01\x00\x04", b"\x2d\x00"):
        w.link.receive_frame(frame, w.now)
    w.link.receive_frame(b"\xff\x03\xc0\x21" + build_packet(8, 9, b"\x00"), w.now)  # short Protocol-Reject
    w.link.receive_frame(b"\xff\x03\xc0\x21" + build_packet(9, 9, b"ab"), w.now)  # Echo-Request without magic
    w.link.receive_frame(b"\xff\x03\xc0\x21" + build_packet(0x20, 9), w.now)  # unknown code
    w.pump()


def _pap_twice() -> Wire:
    w = Wire(auth_options("pap"), Pppd(user="alice", password="s3cret-pw")).dial()
    w.peer.packet(PAP, 1, b"\x05alice\x09s3cret-pw")  # our Ack was "lost": answered again
    w.peer.packet(PAP, 1, b"\x05alice\x09s3")  # the password runs past the packet
    w.peer.packet(PAP, 9, b"")
    w.peer.send(PAP, b"\x01\x07")
    w.pump()
    return w


def _pap_refused() -> Wire:
    w = Wire(auth_options("pap"), Pppd(user="alice", password="guess")).dial()
    w.advance(30)
    return w


def _chap_rechallenge_fails() -> Wire:
    w = Wire(auth_options("chap", chap_rechallenge_interval=60.0), Pppd(user="alice", password="s3cret-pw")).dial()
    w.advance(61)
    w.peer.password = "changed"
    w.advance(90)
    return w


def _chap_unanswered() -> Wire:
    w = Wire(auth_options("chap", max_configure=4), Pppd(user="alice", password="s3cret-pw", silent_auth=True))
    w.dial()
    w.link.receive_frame(b"\xff\x03\xc2\x23" + build_packet(2, 0, b"\x10" + bytes(16) + b"alice"), w.now)
    w.advance(60)
    return w


def _vj() -> Wire:
    pytest.importorskip("pyslirp.ppp.vj")
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0))).dial()
    _vj_traffic(w)
    w.peer.send(IP, tcp_packet(1, b"plain"))
    w.pump()
    w.link.encode_datagram(bytes(20))  # not TCP: plain IP
    w.link.encode_datagram(b"\x45" + bytes(2000))  # beyond the peer's MRU
    return w


def _bad_frames_in_every_phase() -> Wire:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0), ipcp=IPCPOptions(vj=False)), Pppd(vj=False))
    _garbage(w)  # Dead
    w.link.open(w.now)
    _garbage(w)  # Establish
    w.peer.start()
    w.pump()
    _garbage(w)  # Network
    return w


def _protocol_rejects() -> Wire:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0)), Pppd(ipv6=True)).dial()
    for protocol in (CCP, IPV6, 0x4021):
        w.peer.send(protocol, b"\x01\x01\x00\x04")
    w.peer.packet(LCP, 8, CCP.to_bytes(2, "big"))  # the client rejects one of ours: tolerated
    w.pump()
    return w


def _ipcp_rejected() -> Wire:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0)), Pppd(reject_ipcp=True)).dial()
    w.advance(30)
    return w


def _terminated_and_redialled() -> Wire:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0))).dial()
    w.link.open(w.now)  # already open
    w.peer.packet(LCP, 5, b"User request")
    w.pump()
    w.advance(3)
    w.link.encode_datagram(bytes(20))  # Dead: not sent
    w.peer = Pppd()
    w.dial()
    w.link.close("shutdown", w.now)
    w.pump()
    w.advance(10)
    w.link.line_down(w.now)
    return w


def _keepalive_fails() -> Wire:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=10, echo_failures=3))).dial()
    w.peer.packet(LCP, 9, (0x5EED1234).to_bytes(4, "big"))
    w.peer.packet(LCP, 11, bytes(4))  # Discard-Request
    w.advance(15)  # one Echo-Request answered
    w.peer.answer_echo = False
    w.advance(40)
    w.peer.on_lcp = lambda *a: None  # type: ignore[method-assign]  # the client is gone
    w.advance(10)
    return w


def _looped_back() -> Wire:
    link = PPPLink(LinkOptions(lcp=LCPOptions(echo_interval=0)), random.Random(7))
    w = Wire(LinkOptions(), seed=7)
    w.link = link
    link.open(0.0)
    now = 0.0
    for _ in range(200):
        out = link.take_output()
        if not out:
            if (deadline := link.next_deadline()) is None:
                break
            now = deadline
            link.handle_timer(now)
        for frame, _accm in out:
            link.receive_frame(frame, now)
    return w


def _passive_after_timeout() -> Wire:
    w = Wire(LinkOptions(lcp=LCPOptions(echo_interval=0), passive=True))
    w.link.open(0.0)
    while (deadline := w.link.next_deadline()) is not None:  # nobody answers
        w.now = deadline
        w.link.handle_timer(w.now)
    w.link.take_output()
    w.peer.start()
    w.pump()
    return w


@pytest.mark.parametrize(
    "scenario",
    [_pap_twice, _pap_refused, _chap_rechallenge_fails, _chap_unanswered, _vj, _bad_frames_in_every_phase,
     _protocol_rejects, _ipcp_rejected, _terminated_and_redialled, _keepalive_fails, _looped_back,
     _passive_after_timeout],
)
def test_every_link_count_is_declared(scenario) -> None:  # type: ignore[no-untyped-def]
    counters = scenario().link.counters()
    assert counters and LINK_COUNTERS.undeclared(counters) == []
