"""One TCP connection (RFC 9293), sans-IO.

Theory of operation
-------------------
A ``TCPConnection`` is the transmission control block of one 4-tuple. It never touches a
socket or a clock: every call that can make it transmit takes ``now`` (seconds, any epoch,
monotonic), segments to send accumulate until ``take_segments()``, what the application must
know accumulates until ``events()``, and ``next_deadline()``/``handle_timer(now)`` drive the
retransmission, persist, delayed-ACK and TIME-WAIT timers. The stack (``stack.py``)
demultiplexes segments to connections by 4-tuple, parses them with
``tcp_segment.parse_segment`` (which verifies the checksum) and wraps what we emit in IPv4.
An application call that may have produced segments or events calls ``on_change``, which the
stack sets so that it collects them.

Opening. Passive: the stack builds the connection from a SYN with ``from_syn`` (state LISTEN,
the SYN held); the runtime tries the service and then calls ``accept(now)`` (SYN-ACK, state
SYN-RECEIVED) or ``refuse(now)`` (RST). SYNs retransmitted meanwhile are absorbed and counted.
Active: construct and call ``connect(now)``.

Sequence numbers. Internally every sequence number is an *unwrapped* int: ISS and IRS are the
32-bit values from the wire and SND.*/RCV.* only grow, so comparisons are plain ``<``. A 32-bit
value from a segment is unwrapped once, against RCV.NXT (SEG.SEQ) or SND.UNA (SEG.ACK, SACK
edges); values go back to 32 bits (``& MASK``) only on output and at the reassembly queue.

Parts. The connection is the state machine (RFC 9293 §3.10) and the output. Its state is in
the parts it composes (``receiver``, ``sender``, ``options``, and the ``scoreboard``,
``congestion`` and ``rtt`` the sender tells of every ACK), each in its ``tcp_*`` module.
"""

from __future__ import annotations

from typing import Callable, MutableMapping, Optional, Union

from pyslirp._core.checksum import pseudo_header_sum
from pyslirp.net.line_budget import LineBudget
from pyslirp.net.tcp_congestion import CA_LOSS, CA_STATE_NAMES, CongestionControl, NewReno
from pyslirp.net.tcp_options import NegotiatedOptions
from pyslirp.net.tcp_receive import Receiver
from pyslirp.net.tcp_rtt import RTTEstimator
from pyslirp.net.tcp_scoreboard import Scoreboard, SentSegment
from pyslirp.net.tcp_segment import ACK, FIN, PROTO_TCP, PSH, RST, SYN, URG, TCPSegment, encode_segment
from pyslirp.net.tcp_send import Sender
from pyslirp.net.tcp_types import (
    APP_SEND_STATES, CAN_SEND_STATES, CLOSE_TRANSITIONS, CLOSE_WAIT, CLOSED, CLOSING, ESTABLISHED,
    FIN_ACKED_TRANSITIONS, FIN_RECEIVED_TRANSITIONS, FIN_WAIT_1, FIN_WAIT_2, HALF, LAST_ACK,
    LISTEN, MASK, SYN_RECEIVED, SYN_SENT, SYNCHRONIZED_STATES, TEXT_STATES, TIME_WAIT, Aborted,
    Closed, DataReceived, Established, OutSegment, PeerFinished, Reset, SendSpace, TCPConfig,
    TCPUsageError, is_connection_request,
)

__all__ = ["TCPConnection"]

#: ``OutSegment(data, interactive)`` without the named tuple's Python-level ``__new__``
_tuple_new = tuple.__new__
#: the events without fields, made once (they are immutable, and equal to any other instance)
_ESTABLISHED = Established()
_PEER_FINISHED = PeerFinished()
_CLOSED = Closed()


def _earlier(a: Optional[float], b: Optional[float]) -> Optional[float]:
    """The earlier of two timers, either of which may be unarmed (None)."""
    if a is None or (b is not None and b < a):
        return b
    return a


class TCPConnection:
    """RFC 9293 TCP endpoint for one 4-tuple. See the module docstring."""

    def __init__(self, local_addr: bytes, local_port: int, remote_addr: bytes,
                 remote_port: int, *, iss: int, config: Optional[TCPConfig] = None,
                 now: float = 0.0,
                 counters: Optional[MutableMapping[str, int]] = None) -> None:
        cfg = config if config is not None else TCPConfig()
        self.local_addr = bytes(local_addr)
        self.local_port = local_port
        self.remote_addr = bytes(remote_addr)
        self.remote_port = remote_port
        self.config = cfg
        self.state = CLOSED
        #: Runtime hint: every segment of this connection is low-delay traffic.
        self.interactive = False
        #: Nagle off (RFC 9293 §3.7.4 lets the application disable it).
        self.nodelay = cfg.nodelay
        #: The link's shared budget of bulk bytes in flight (set by the stack), or None.
        self.budget: Optional[LineBudget] = None
        self._budget_charged = 0
        #: Called with the connection after an application call that may have produced
        #: segments or events (the stack sets it to collect them), or None.
        self.on_change: Optional[Callable[["TCPConnection"], None]] = None
        self._ctr = counters if counters is not None else {}
        self._events: list = []
        self._out: list = []
        self._ph = pseudo_header_sum(self.local_addr, self.remote_addr, PROTO_TCP, 0)

        iss &= MASK
        self.iss = iss
        self.options = NegotiatedOptions(cfg, iss, now)
        self.receiver = Receiver(cfg, self._ctr)
        self.rtt = RTTEstimator(cfg.initial_rto, cfg.min_rto, cfg.max_rto)
        self.congestion: CongestionControl = NewReno(cfg.mss, cfg.initial_window)
        self.scoreboard = Scoreboard(iss, cfg.dup_thresh, self._ctr)
        self.sender = Sender(iss, cfg.snd_buf, self.options, self.rtt, self.congestion,
                             self.scoreboard, self._ctr)
        #: the peer's SYN, held until accept() or refuse()
        self._syn: Optional[TCPSegment] = None
        #: close() was called: nobody reads what arrives
        self._app_closed = False

        self._retries = 0
        self._syn_rtx = 0
        self._syn_xmit = now
        self._rto_at: Optional[float] = None
        self._persist_at: Optional[float] = None
        self._tw_at: Optional[float] = None
        self._in_persist = False
        self._persist_backoff = 0
        self._probes = 0
        self._last_xmit = now

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_syn(cls, syn: TCPSegment, local_addr: bytes, remote_addr: bytes, *, iss: int,
                 config: Optional[TCPConfig] = None, now: float = 0.0,
                 counters: Optional[MutableMapping[str, int]] = None) -> "TCPConnection":
        """Passive open with deferred accept: a connection in LISTEN holding ``syn`` (which
        must satisfy ``is_connection_request``); nothing is sent until ``accept``/``refuse``."""
        if not is_connection_request(syn):
            raise ValueError("from_syn needs a SYN without ACK, RST or FIN")
        c = cls(local_addr, syn.dst_port, remote_addr, syn.src_port, iss=iss, config=config,
                now=now, counters=counters)
        c.state = LISTEN
        c._syn = syn
        c._learn_syn(syn, now)
        c._count("segments_in")
        if syn.payload:
            c._count("syn_data_ignored")    # not acknowledged: the peer sends it again
        return c

    def connect(self, now: float) -> None:
        """Active open (RFC 9293 §3.10.1): send a SYN, enter SYN-SENT."""
        if self.state is not CLOSED or not self.scoreboard.empty() or self.sender.snd_nxt != self.iss:
            raise TCPUsageError("connect() on a connection that is not fresh")
        self._open(SYN_SENT, now)

    def accept(self, now: float) -> None:
        """The service accepted: answer the held SYN with a SYN-ACK (LISTEN -> SYN-RECEIVED)."""
        if self.state is not LISTEN:
            raise TCPUsageError(f"accept() in state {self.state.name}")
        self._syn = None  # answered: only a connection in LISTEN needs it
        self._open(SYN_RECEIVED, now)

    def _open(self, state: object, now: float) -> None:
        """Enter ``state`` (SYN-SENT or SYN-RECEIVED) by sending our SYN, which takes ISS."""
        self.state = state
        self.sender.snd_nxt = self.iss + 1
        self._send_syn(now)
        self._rto_at = now + self.rtt.rto_base
        self._changed()

    def refuse(self, now: float) -> None:
        """The service refused or timed out: RST the held SYN (RFC 9293 §3.10.7.2) and close."""
        syn = self._leave_listen("refuse")
        self._send_ctl(0, (syn.seq + syn.seg_len) & MASK, RST | ACK)

    def drop_syn(self, now: float) -> None:
        """The target cannot be reached and the stack answers the held SYN with an ICMP error
        instead (RFC 1122 §4.2.3.9: the client aborts its connect on it): close, sending nothing."""
        self._leave_listen("drop_syn")

    def _leave_listen(self, call: str) -> TCPSegment:
        """Close a connection in LISTEN; return the held SYN, which the caller may answer."""
        if self.state is not LISTEN:
            raise TCPUsageError(f"{call}() in state {self.state.name}")
        self._enter_closed()
        self._changed()
        return self._syn

    # ------------------------------------------------------------------ application side

    def send(self, data: Union[bytes, bytearray, memoryview], now: float) -> int:
        """Queue up to ``send_space`` octets of ``data``; return how many were taken."""
        if self.sender.fin_queued:
            raise TCPUsageError("send() after shutdown_write()/close()")
        if self.state not in APP_SEND_STATES:
            return 0
        n = self.sender.queue(data)
        if n and self.state in CAN_SEND_STATES:
            self._output(now)
            self._changed()
        return n

    def resume(self, now: float) -> None:
        """The line budget has room again: send what it and the windows allow."""
        if self.state in CAN_SEND_STATES:
            self._transmit(now)

    @property
    def send_space(self) -> int:
        """Octets ``send`` would accept now."""
        if self.sender.fin_queued or self.state not in APP_SEND_STATES:
            return 0
        return self.sender.space()

    @property
    def send_buffered(self) -> int:
        """Octets held in the send buffer (unacknowledged plus unsent)."""
        return len(self.sender.buf)

    def read(self, max_bytes: int, now: float) -> bytes:
        """Take up to ``max_bytes`` (all if negative) in-order received octets. Reopening the
        window by at least min(MSS, half the buffer) sends a window update."""
        rcv = self.receiver
        if not rcv.buf:
            return b""
        data = rcv.read(max_bytes)
        st = self.state
        if st in SYNCHRONIZED_STATES and st is not TIME_WAIT and not rcv.fin_rcvd \
                and rcv.window_update_due():
            rcv.ack_now = True
            self._count("window_update")
            self._output(now)
            self._changed()
        return data

    @property
    def readable(self) -> int:
        """Octets ``read`` can return now."""
        return len(self.receiver.buf)

    @property
    def rcv_buffered(self) -> int:
        """Octets held on the receive side: unread in-order plus out-of-order."""
        return self.receiver.buffered()

    @property
    def at_eof(self) -> bool:
        """The peer's FIN arrived and everything before it has been read."""
        return self.receiver.fin_rcvd and not self.receiver.buf

    def shutdown_write(self, now: float) -> None:
        """Half-close: send a FIN after the queued data (RFC 9293 §3.10.4 CLOSE)."""
        self._queue_fin(now)
        self._changed()

    def _queue_fin(self, now: float) -> None:
        snd = self.sender
        if snd.fin_queued:
            return
        st = self.state
        if st in (LISTEN, SYN_SENT, SYN_RECEIVED):
            snd.fin_queued = True              # sent once ESTABLISHED
            return
        nxt = CLOSE_TRANSITIONS.get(st)
        if nxt is None:
            return
        snd.fin_queued = True
        self.state = nxt
        self._output(now)

    def close(self, now: float) -> None:
        """Full close: FIN, and we read nothing more. Unread data, or data arriving later,
        makes it an abort (RST) as RFC 2525 §2.17 and Linux do."""
        st = self.state
        if st is LISTEN or st is SYN_SENT or st is CLOSED:
            self.abort(now)     # RFC 9293 §3.10.4: refuse the held SYN, or delete the TCB
            return
        if self.receiver.buf and st not in (TIME_WAIT, CLOSING, LAST_ACK):
            self._count("close_with_unread")
            self.abort(now)
            return
        self._app_closed = True
        self._queue_fin(now)
        if self.state is FIN_WAIT_2 and self._tw_at is None:
            self._tw_at = now + self.config.fin_wait_2_timeout
        self._changed()

    def abort(self, now: float) -> None:
        """RFC 9293 §3.10.5 ABORT: RST (in synchronized states) and close."""
        st = self.state
        if st is LISTEN:
            self.refuse(now)
        elif st is not CLOSED:
            if st in (SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT):
                self._send_ctl(self.sender.snd_nxt & MASK, 0, RST)
            self._enter_closed()
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)

    # ------------------------------------------------------------------ outputs

    def take_segments(self) -> list:
        """The segments to transmit, in order (``OutSegment``), since the last call."""
        out = self._out
        if out:
            self._out = []
        return out

    def events(self) -> list:
        """Events since the last call, in order."""
        ev = self._events
        if ev:
            self._events = []
        return ev

    def counters(self) -> dict:
        return dict(self._ctr)

    def next_deadline(self) -> Optional[float]:
        """The earliest time ``handle_timer`` has something to do, or None."""
        return _earlier(_earlier(self._rto_at, self._persist_at), _earlier(self.receiver.delack_at, self._tw_at))

    def handle_timer(self, now: float) -> None:
        """Run every timer due at ``now`` (RFC 6298 retransmission, persist, delayed ACK,
        TIME-WAIT / FIN-WAIT-2)."""
        t = self._tw_at
        if t is not None and now >= t:
            self._tw_at = None
            if self.state is FIN_WAIT_2:
                self._abort_with_reset("fin_wait_2_timeout", self.receiver.rcv_nxt)
            else:
                self._enter_closed()
            return
        t = self._rto_at
        if t is not None and now >= t:
            self._rto_at = None
            self._on_rto(now)
            if self.state is CLOSED:
                return
        t = self._persist_at
        if t is not None and now >= t:
            self._persist_at = None
            self._on_persist(now)
        t = self.receiver.delack_at
        if t is not None and now >= t:
            self.receiver.delack_at = None
            self.receiver.ack_now = True
            self._count("delayed_ack")
        self._output(now)

    def info(self) -> dict:
        """A snapshot of the control block for tests, logs and metrics."""
        snd = self.sender
        rcv = self.receiver
        opts = self.options
        cc = self.congestion
        rtt = self.rtt
        return {
            "state": self.state.name, "snd_una": snd.snd_una & MASK,
            "snd_nxt": snd.snd_nxt & MASK, "snd_wnd": snd.snd_wnd,
            "rcv_nxt": rcv.rcv_nxt & MASK, "rcv_wnd": rcv.rcv_adv - rcv.rcv_nxt,
            "snd_wscale": opts.snd_wscale, "rcv_wscale": rcv.rcv_wscale,
            "mss": opts.eff_mss, "sack": opts.sack_ok, "timestamps": opts.ts_ok,
            "cwnd": cc.cwnd, "ssthresh": cc.ssthresh,
            "srtt": rtt.srtt if rtt.measured else None, "rttvar": rtt.rttvar, "rto": rtt.rto(),
            "in_flight": snd.in_flight(), "ca_state": CA_STATE_NAMES[cc.state],
            "send_buffered": len(snd.buf), "rcv_buffered": rcv.buffered(),
        }

    def accepts_new_syn(self, seg: TCPSegment) -> bool:
        """In TIME-WAIT, may ``seg`` (a SYN for this 4-tuple) start a new incarnation?
        (RFC 9293 §3.6.1 / RFC 6191: its sequence number, or timestamp, is beyond ours.)
        The stack then discards this connection and builds a new one ``from_syn``."""
        if self.state is not TIME_WAIT or not is_connection_request(seg):
            return False
        if self.options.ts_ok and seg.ts_val is not None:
            return self.options.newer_than_recent(seg.ts_val)
        return 0 < ((seg.seq - self.receiver.rcv_nxt) & MASK) < HALF

    def check_invariants(self) -> list:
        """Recompute the scoreboard and buffer accounting; return what disagrees (tests)."""
        if self.state is CLOSED:
            return []
        bad = self.sender.check_invariants(self.state in (SYN_SENT, SYN_RECEIVED))
        if self.receiver.buffered() > self.config.rcv_buf:
            bad.append("receive buffer over its bound")
        return bad

    def __repr__(self) -> str:
        return (f"<TCPConnection {self.local_port}->{self.remote_port} {self.state.name} "
                f"una={self.sender.snd_una & MASK} nxt={self.sender.snd_nxt & MASK} "
                f"rcv_nxt={self.receiver.rcv_nxt & MASK}>")

    # ------------------------------------------------------------------ segment arrives

    def receive_segment(self, seg: TCPSegment, now: float) -> None:
        """RFC 9293 §3.10.7 SEGMENT ARRIVES, for a segment of this 4-tuple whose checksum
        was verified. Never raises on wire input: what it cannot use is counted."""
        ctr = self._ctr
        ctr["segments_in"] = ctr.get("segments_in", 0) + 1
        st = self.state
        if st in SYNCHRONIZED_STATES:
            self._rx_synchronized(seg, now)
        elif st is SYN_SENT:
            self._rx_syn_sent(seg, now)
        elif st is LISTEN:
            syn = self._syn
            if seg.flags & (SYN | ACK | RST) == SYN and syn is not None and seg.seq == syn.seq:
                self._count("syn_while_pending")
            else:
                self._count("pending_dropped")
            return
        else:
            self._count("closed_dropped")
            return
        if self.state is not CLOSED:
            self._output(now)

    def _rx_syn_sent(self, seg: TCPSegment, now: float) -> None:
        # RFC 9293 §3.10.7.3
        snd = self.sender
        flags = seg.flags
        ack = 0
        if flags & ACK:
            ack = self.iss + ((seg.ack - self.iss + HALF) & MASK) - HALF
            if ack <= self.iss or ack > snd.snd_nxt:
                self._count("bad_ack")
                if not flags & RST:
                    self._send_ctl(seg.ack, 0, RST)
                return
        if flags & RST:
            if flags & ACK:
                self._count("rst_received")
                self._events.append(Reset("SYN_SENT"))
                self._enter_closed()
            else:
                self._count("rst_rejected")
            return
        if not flags & SYN:
            self._count("no_ack" if not flags & ACK else "pending_dropped")
            return
        self._learn_syn(seg, now)
        if seg.payload or flags & FIN:
            self._count("syn_data_ignored")     # not acknowledged: the peer resends it
        # Windows in SYNs are never scaled (RFC 7323).
        snd.open_window(seg.window, self.receiver.irs, ack if flags & ACK else self.iss)
        if flags & ACK:
            snd.snd_una = ack
            if self._syn_rtx == 0:
                self.rtt.sample(now - self._syn_xmit)
            self._rto_at = None
            self._establish(now)
            self.receiver.ack_now = True
        else:
            # Simultaneous open: SYN-RECEIVED, answer with SYN-ACK (same ISS).
            self.state = SYN_RECEIVED
            self._send_syn(now)

    def _rx_synchronized(self, seg: TCPSegment, now: float) -> None:
        flags = seg.flags
        st = self.state
        rcv = self.receiver
        snd = self.sender
        opts = self.options
        rcv_nxt = rcv.rcv_nxt
        seq = rcv_nxt + ((seg.seq - rcv_nxt + HALF) & MASK) - HALF
        payload = seg.payload
        plen = len(payload)
        fin = flags & FIN

        if st is SYN_RECEIVED and flags & SYN and not flags & RST and seq == rcv.irs:
            if not flags & ACK:
                # Our SYN-ACK was lost and the peer resent its SYN: answer again (Linux).
                self._count("syn_while_pending")
                self._send_syn(now)
                return
            if ((seg.ack - snd.snd_nxt) & MASK) == 0:
                # Simultaneous open (RFC 9293 §3.5 figure 7): the peer's SYN-ACK acknowledges
                # our SYN; take it as the ACK of the handshake, as Linux does.
                flags &= ~SYN
                seq = rcv_nxt

        tsv = seg.ts_val
        if not flags & RST and opts.paws_rejects(tsv, now):
            self._count("paws_rejected")
            rcv.ack_unacceptable(now, plen or fin)
            return

        # First: sequence number acceptability (RFC 9293 §3.10.7.4).
        seglen = plen + (1 if flags & SYN else 0) + (1 if fin else 0)
        if not rcv.acceptable(seq, seglen):
            if flags & RST:
                self._count("rst_rejected")                   # RFC 5961 §3.2 (1)
                return
            if seq + seglen <= rcv_nxt:
                self._count("duplicate_segment")
                if st is TIME_WAIT and fin:
                    self._tw_at = now + self.config.time_wait  # retransmitted FIN
            else:
                self._count("out_of_window")
            rcv.ack_unacceptable(now, seglen)
            return

        # Second: RST (RFC 5961 §3.2: only an exact match resets, else challenge ACK).
        if flags & RST:
            if seq == rcv_nxt:
                self._count("rst_received")
                if st not in (CLOSING, LAST_ACK, TIME_WAIT):
                    self._events.append(Reset(st.name))
                self._enter_closed()
            else:
                self._count("rst_challenged")
                rcv.challenge_ack(now)
            return

        # Fourth: SYN in a synchronized state: challenge ACK (RFC 5961 §4.2).
        if flags & SYN:
            self._count("syn_in_window")
            rcv.challenge_ack(now)
            return

        # Fifth: ACK.
        if not flags & ACK:
            self._count("no_ack")
            return
        if seq <= rcv.last_ack_sent:
            opts.update_recent(tsv, now)
        snd_una = snd.snd_una
        ack = snd_una + ((seg.ack - snd_una + HALF) & MASK) - HALF
        if st is SYN_RECEIVED:
            if snd_una < ack <= snd.snd_nxt:
                snd.snd_una = ack
                snd.open_window(seg.window << opts.snd_wscale, seq, ack)
                self._rto_at = None
                if self._syn_rtx == 0:
                    self.rtt.sample(now - self._syn_xmit)
                self._establish(now)
                st = self.state
            else:
                self._count("bad_ack")
                self._send_ctl(seg.ack, 0, RST)
                return
        elif ack > snd.snd_nxt or ack < snd_una - snd.max_snd_wnd:
            self._count("ack_unacceptable")                   # RFC 5961 §5.2
            rcv.challenge_ack(now)
            return
        elif ack >= snd_una:
            wnd = seg.window << opts.snd_wscale
            is_dup = (ack == snd_una and seglen == 0 and wnd == snd.snd_wnd
                      and snd.snd_nxt > snd_una and not self._in_persist)
            snd.update_window(seq, ack, wnd)
            self._probes = 0
            if ack > snd_una or is_dup or seg.sack_blocks:
                self._take_ack(ack, seg, now, is_dup)
            if self._in_persist and snd.snd_wnd > 0:
                self._leave_persist(now)
            if snd.fin_sent and snd.snd_una > snd.fin_seq:
                nxt = FIN_ACKED_TRANSITIONS.get(st)
                if nxt is not None:
                    if nxt is CLOSED:
                        self._enter_closed()                  # LAST-ACK done
                        return
                    self.state = st = nxt
                    if nxt is TIME_WAIT:
                        self._enter_time_wait(now)
                    elif self._app_closed and self._tw_at is None:
                        self._tw_at = now + self.config.fin_wait_2_timeout
        # (ACK below SND.UNA but acceptable: an old duplicate, ignored; text still processed.)

        if flags & URG:
            self._count("urg_ignored")          # urgent data is delivered inline

        # Seventh: segment text; eighth: FIN.
        if not plen and not fin:
            return
        if st not in TEXT_STATES:
            return                              # FIN already received: nothing more to take
        if seq < rcv_nxt:
            payload = payload[rcv_nxt - seq:]
            seq = rcv_nxt
        if seq + len(payload) > rcv.rcv_adv:
            payload = rcv.cut_to_window(seq, payload)
            fin = 0
        plen = len(payload)
        if plen and self._app_closed:
            # Nobody will read this: RFC 2525 §2.17 / Linux "abort on data".
            self._count("data_after_close")
            self._abort_with_reset("data_after_close", seq + plen)
            return
        if seq != rcv_nxt:
            rcv.hold(seq, payload, bool(fin))
            return
        delivered = rcv.take_in_order(payload, bool(fin))
        if delivered:
            self._events.append(DataReceived(len(rcv.buf), bool(flags & (PSH | FIN))))
        if rcv.fin_rcvd:
            self._events.append(_PEER_FINISHED)
            nxt = FIN_RECEIVED_TRANSITIONS[st]
            self.state = nxt
            if nxt is CLOSE_WAIT and not rcv.ack_now:
                # The application usually closes in turn: its FIN carries this ACK, as Linux's
                # does (delayed ACK on a FIN, RFC 9293 §3.8.6.3); the timer sends it otherwise.
                rcv.delay_ack(now)
            else:
                rcv.ack_now = True
            if nxt is TIME_WAIT:
                self._enter_time_wait(now)
            return
        if not rcv.ack_now and delivered:
            if rcv.unacked > rcv.rcv_mss:
                rcv.ack_now = True              # at least every second full-sized segment
            else:
                rcv.delay_ack(now)              # RFC 5681 §4.2

    def _take_ack(self, ack: int, seg: TCPSegment, now: float, is_dup: bool) -> None:
        """An ACK for the send side: the line budget's share, the sender, and the
        retransmission timer."""
        snd = self.sender
        acked = ack - snd.snd_una
        bulk_acked = False
        if acked > 0:
            self._retries = 0
            charged = self._budget_charged
            if charged:
                released = acked if acked < charged else charged
                self._budget_charged = charged - released
                self.budget.release(released, now)  # type: ignore[union-attr]
                bulk_acked = True
        space = snd.on_ack(ack, seg, now, is_dup)
        if space >= 0:
            self._events.append(SendSpace(space))
        if bulk_acked and snd.rtt_sample >= 0.0:
            self.budget.rtt_sample(snd.rtt_sample)  # type: ignore[union-attr]
        if acked > 0:
            # RFC 6298 §5.2/5.3: stop or restart the retransmission timer.
            outstanding = snd.snd_nxt > snd.snd_una and not self._in_persist
            self._rto_at = now + self.rtt.rto() if outstanding else None

    # ------------------------------------------------------------------ timers

    def _on_rto(self, now: float) -> None:
        cfg = self.config
        st = self.state
        rtt = self.rtt
        if st is SYN_SENT or st is SYN_RECEIVED:
            self._syn_rtx += 1
            if self._syn_rtx > (cfg.syn_retries if st is SYN_SENT else cfg.synack_retries):
                self._count("aborted_timeout")
                self._events.append(Aborted("syn_timeout"))
                self._enter_closed()
                return
            rtt.backoff += 1
            self._count("retrans_syn")
            self._send_syn(now)
            self._rto_at = now + rtt.rto()
            return
        if self.scoreboard.empty() or self._in_persist:
            return
        self._retries += 1
        if self._retries > cfg.max_retries:
            self._count("aborted_timeout")
            self._abort_with_reset("timeout", self.receiver.rcv_nxt)
            return
        self._count("rto")
        self.sender.on_timeout(now)
        self._rto_at = now + rtt.rto()          # RFC 6298 §5.5/5.6

    def _on_persist(self, now: float) -> None:
        # RFC 9293 §3.8.6.1 zero-window probing: one octet beyond the window (RFC 1122
        # 4.2.2.17), backing off like the RTO; probing continues while the peer answers.
        if not self._in_persist:
            return
        self._probes += 1
        if self._probes > self.config.max_retries:
            self._count("aborted_timeout")
            self._abort_with_reset("timeout", self.receiver.rcv_nxt)
            return
        snd = self.sender
        unsent = snd.unsent()
        usable = snd.snd_una + snd.snd_wnd - snd.snd_nxt
        if usable > 0 and unsent > 0 and self.scoreboard.empty():
            # Sender SWS override timeout (RFC 9293 §3.8.6.2.1): the window is open but
            # below the SWS threshold; send what it allows.
            self._in_persist = False
            self._persist_backoff = 0
            n = min(usable, self.options.eff_mss, unsent)
            self._send_new(n, FIN if n == unsent and snd.fin_queued else 0, now)
            return
        self._count("zero_window_probe")
        r = self.scoreboard.first()
        if r is not None:
            r.rtx += 1
            r.xmit = now
            self._xmit(ACK | (FIN if r.fin else 0), r.seq, snd.payload(r), now)
        elif unsent > 0:
            self._send_new(1, 0, now)
        else:
            self._leave_persist(now)
            return
        self._persist_backoff += 1
        self._persist_at = now + self.rtt.backed_off(self._persist_backoff)

    def _leave_persist(self, now: float) -> None:
        self._in_persist = False
        self._persist_at = None
        self._persist_backoff = 0
        self.sender.unsend_probe()
        if self.sender.snd_nxt > self.sender.snd_una:
            self._rto_at = now + self.rtt.rto()

    def _enter_time_wait(self, now: float) -> None:
        self._rto_at = self._persist_at = None
        self._in_persist = False
        self._tw_at = now + self.config.time_wait

    def _abort_with_reset(self, reason: str, ack: int) -> None:
        """Give up: RST+ACK (acknowledging ``ack``), ``Aborted(reason)``, CLOSED."""
        self._send_ctl(self.sender.snd_nxt & MASK, ack & MASK, RST | ACK)
        self._events.append(Aborted(reason))
        self._enter_closed()

    def _enter_closed(self) -> None:
        self.state = CLOSED
        if self.budget is not None:
            self.budget.forget(self)
            if self._budget_charged:
                self.budget.release(self._budget_charged, 0.0, delivered=False)
                self._budget_charged = 0
        self._rto_at = self._persist_at = self._tw_at = None
        self._in_persist = False
        self.receiver.discard_held()
        self.sender.clear()
        self._events.append(_CLOSED)

    def _establish(self, now: float) -> None:
        self.state = ESTABLISHED
        self.sender.on_established(self._syn_rtx > 0)
        self._last_xmit = now
        self._events.append(_ESTABLISHED)
        if self.sender.fin_queued:
            self.sender.fin_queued = False
            self._queue_fin(now)

    def _learn_syn(self, syn: TCPSegment, now: float) -> None:
        """Record the peer's SYN: IRS, the options both sides agreed, our window's start."""
        self.receiver.start(syn.seq, self.options.agree(syn, now))
        self.congestion.cwnd = self.options.eff_mss

    # ------------------------------------------------------------------ output

    def _output(self, now: float) -> None:
        """Send what the state, windows and timers allow, then a pure ACK if one is owed."""
        if self.state in CAN_SEND_STATES:
            self._transmit(now)
        if self.receiver.ack_now and self.state in SYNCHRONIZED_STATES:
            self._xmit(ACK, self.sender.snd_nxt, b"", now)

    def _transmit(self, now: float) -> None:
        snd = self.sender
        cc = self.congestion
        sb = self.scoreboard
        cwnd = cc.cwnd
        # RFC 6675 NextSeg rule (1): the lowest lost segment first.
        if sb.lost_pending > 0:
            while sb.lost_pending > 0:
                r = sb.next_lost(snd.snd_nxt)
                if r is None:
                    break
                if not snd.force_rtx and snd.in_flight() + (r.end - r.seq) > cwnd:
                    break
                snd.force_rtx = False
                self._retransmit(r, now)
        snd.force_rtx = False
        if self._in_persist:
            return
        mss = self.options.eff_mss
        budget = self.budget
        if budget is not None:
            seg = budget.segment_size(now)
            if seg < mss:
                mss = seg
        unsent = snd.unsent()
        if unsent <= 0:
            # Application-limited: cwnd grows only while it is what limits us (RFC 7661).
            cc.cwnd_limited = snd.in_flight() + mss > cwnd
        else:
            if snd.snd_nxt == snd.snd_una and now - self._last_xmit > self.rtt.rto():
                cc.on_idle_restart(mss)
                cwnd = cc.cwnd
            if self.options.sack_ok:
                # Leave room for the SACK option we owe the peer (as Linux's current MSS).
                mss -= self.receiver.sack_option_size(3 if self.options.ts_ok else 4)
            wnd_end = snd.snd_una + snd.snd_wnd
            limited = False
            wblocked = False
            held = False
            while unsent > 0:
                n = mss if unsent > mss else unsent
                win = wnd_end - snd.snd_nxt
                if n > win:
                    # Sender SWS avoidance (RFC 9293 §3.8.6.2.1): a partial segment only
                    # when it is at least half the largest window the peer offered.
                    if win <= 0 or win < (snd.max_snd_wnd >> 1):
                        wblocked = True
                        break
                    n = win
                if snd.in_flight() + n > cwnd:
                    limited = True
                    break
                last = n == unsent
                if last and n < mss and not self.nodelay and not snd.fin_queued \
                        and snd.snd_nxt > snd.snd_una:
                    break                       # Nagle (RFC 9293 §3.7.4)
                if budget is not None and not self._low_delay(n):
                    if not budget.admit(self, n, now):
                        held = True             # the stack resumes us when the line has room
                        break
                    self._budget_charged += n
                self._send_new(n, FIN if last and snd.fin_queued else 0, now)
                unsent -= n
            cc.cwnd_limited = limited or (not held and snd.in_flight() + mss > cwnd)
            if wblocked and snd.snd_nxt == snd.snd_una:
                # Nothing in flight and the window forbids sending: persist (RFC 9293
                # §3.8.6.1; it doubles as the SWS override timer).
                self._in_persist = True
                self._rto_at = None
                if self._persist_at is None:
                    self._persist_at = now + self.rtt.backed_off(self._persist_backoff)
                return
        if snd.fin_queued and not snd.fin_sent and unsent == 0:
            self._send_new(0, FIN, now)          # a bare FIN goes regardless of the window

    def _retransmit(self, r: SentSegment, now: float) -> None:
        sack_ok = self.options.sack_ok
        self._count("retrans_rto" if self.congestion.state == CA_LOSS else
                    "retrans_sack" if sack_ok else "retrans_fast")
        # With SACK, the loss of this copy is detected too.
        self.scoreboard.on_retransmit(r, now, sack_ok)
        self._xmit(ACK | (FIN if r.fin else 0), r.seq, self.sender.payload(r), now)
        if self._rto_at is None or r.seq == self.sender.snd_una:
            # Resending the head restarts the timer (as Linux): the RTO must not fire
            # before this copy could have been acknowledged.
            self._rto_at = now + self.rtt.rto()

    def _send_new(self, n: int, fin: int, now: float) -> None:
        snd = self.sender
        seq = snd.snd_nxt
        flags = ACK | fin
        if n and n == snd.unsent():
            flags |= PSH
        payload = snd.take_new(n, fin, now)
        if n and self.budget is not None and self._low_delay(n):
            self.budget.note_interactive(now)
        self._xmit(flags, seq, payload, now)
        if self._rto_at is None and not self._in_persist:
            self._rto_at = now + self.rtt.rto()     # RFC 6298 §5.1

    def _send_syn(self, now: float) -> None:
        active = self.state is SYN_SENT
        opts = self.options.syn_options(active, self.receiver.rcv_wscale, now)
        self._syn_xmit = now
        self._xmit(SYN if active else SYN | ACK, self.iss, b"", now, opts)

    def _low_delay(self, payload_len: int) -> bool:
        """Interactive traffic: small payloads (pure ACKs and control segments too) and every
        segment of a connection marked ``interactive``. It has the line's priority, is exempt
        from the line budget, and while it flows the budget shrinks bulk segments."""
        return self.interactive or payload_len <= self.config.interactive_max

    def _xmit(self, flags: int, seq: int, payload: Union[bytes, bytearray], now: float,
              opts: bytes = b"") -> None:
        """Build one segment carrying ACK=RCV.NXT and our window (unless SYN/RST rules say
        otherwise) and queue it."""
        n = len(payload)
        rcv = self.receiver
        options = self.options
        sack_sent = True
        if flags & SYN:
            wnd = rcv.syn_window()
        else:
            wnd = rcv.window_field()
            if options.ts_ok:
                opts = options.timestamp_option(now)
            if rcv.ooo_used and options.sack_ok:
                # As many blocks as the header has room for, at most 4 (3 beside timestamps).
                room = (options.mss_cap - n - len(opts) - 4) >> 3
                sack = rcv.sack_option(min(room, 3 if options.ts_ok else 4))
                opts += sack
                sack_sent = len(sack) > 0
        ack = 0
        if flags & ACK:
            ack = rcv.rcv_nxt & MASK
            rcv.ack_sent(sack_sent)
        data = encode_segment(self.local_port, self.remote_port, seq & MASK, ack, flags, wnd,
                              opts, payload, self._ph)
        self._out.append(_tuple_new(OutSegment, (data, self._low_delay(n))))
        self._last_xmit = now
        ctr = self._ctr
        ctr["segments_out"] = ctr.get("segments_out", 0) + 1

    def _send_ctl(self, seq32: int, ack32: int, flags: int) -> None:
        """A bare control segment (RST, RST+ACK) that does not touch the ACK state."""
        data = encode_segment(self.local_port, self.remote_port, seq32 & MASK, ack32 & MASK,
                              flags, 0, b"", b"", self._ph)
        self._out.append(_tuple_new(OutSegment, (data, True)))
        if flags & RST:
            self._count("rst_sent")
        self._count("segments_out")

    def _count(self, name: str, n: int = 1) -> None:
        ctr = self._ctr
        ctr[name] = ctr.get(name, 0) + n
