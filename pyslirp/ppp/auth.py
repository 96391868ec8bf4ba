"""Server-side authentication in the Authenticate phase (RFC 1661 §3.5): PAP and CHAP-MD5.

* PAP (RFC 1334 §2): we wait for the peer's Authenticate-Request and answer Ack or Nak. A
  retransmitted request (the peer lost our answer) gets the same answer again. No request within
  ``timeout`` seconds is a failure.
* CHAP with MD5 (RFC 1994): we send a Challenge (a random value from the injected RNG, and our
  name); the Response must be MD5(Identifier || secret || challenge). Success or Failure follows.
  An unanswered Challenge is retransmitted every ``restart_interval`` with a new Identifier and
  value (§4.1: "The Identifier MUST be changed each time a Challenge is sent"), at most
  ``max_transmits`` times and within ``timeout``. While the link is up, an optional re-challenge
  every ``rechallenge_interval`` seconds (§2.3).

Credentials are a mapping user -> secret handed in by the runtime. Secrets and passwords never
appear in a log message, an outcome, a counter or a repr. Comparisons are constant-time.

A failure is final: the link ends it (LCP Terminate) and reports AuthFailed. Outcomes are drained
with :meth:`AuthServer.take_outcomes`; packets (the Information field of PAP/CHAP frames) with
:meth:`AuthServer.take_packets`.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from pyslirp.counters import CounterSet, CounterSpec
from pyslirp.ppp.fsm import FSMConfig, build_packet, parse_packet
from pyslirp.ppp.protocols import AUTH_CHAP, AUTH_PAP, PROTO_CHAP, PROTO_PAP, printable
from pyslirp.ppp.randomness import RandomSource

__all__ = ["AUTH_COUNTERS", "AuthOptions", "AuthOutcome", "AuthServer", "CHAPServer", "PAPServer", "make_auth_server"]

log = logging.getLogger(__name__)


def _equal_in_constant_time(a: bytes, b: bytes) -> bool:
    """``hmac.compare_digest``, imported on first use: hmac and hashlib load OpenSSL's libcrypto
    (about 3.5 MB of a server's memory), which only a link that authenticates needs."""
    import hmac

    return hmac.compare_digest(a, b)


# PAP codes (RFC 1334 §2.2)
PAP_AUTH_REQUEST = 1
PAP_AUTH_ACK = 2
PAP_AUTH_NAK = 3
# CHAP codes (RFC 1994 §4)
CHAP_CHALLENGE = 1
CHAP_RESPONSE = 2
CHAP_SUCCESS = 3
CHAP_FAILURE = 4

_CHALLENGE_SIZE = 16

#: The keys of :attr:`AuthServer.counters`, PAP's and CHAP's.
AUTH_COUNTERS = CounterSet("auth", [
    CounterSpec("authentications", "logins by result, CHAP re-challenges included", reasons=("success", "failure"),
                prefix=""),
    CounterSpec(
        "auth_packets_ignored", "PAP and CHAP packets ignored, by reason", prefix="",
        reasons=("malformed", "unexpected_code", "unexpected_request", "stale_response"),
    ),
    CounterSpec(
        "auth_answers_repeated",
        "requests repeated because our answer was lost, answered again (RFC 1334 §2.2.1, RFC 1994 §4.2)",
        reasons=("repeated_request", "repeated_response"), prefix="",
    ),
    CounterSpec("challenge_sent", "CHAP Challenges sent, retransmissions included (RFC 1994 §4.1)"),
    CounterSpec("rechallenge", "periodic CHAP re-challenges begun (RFC 1994 §2.3)"),
])


@dataclass(frozen=True)
class AuthOutcome:
    """The result of one authentication exchange. ``user`` is printable, never a secret."""

    ok: bool
    user: str
    method: str
    reason: str = ""
    rechallenge: bool = False


class _Phase(enum.Enum):
    IDLE = "idle"
    WAITING = "waiting"  # PAP: for the request; CHAP: for the response to our challenge
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class AuthServer:
    """Common machinery: the received packet's header, packets out, outcomes out, one deadline."""

    method = ""
    protocol = 0
    #: The one code the peer sends the authenticator: PAP Authenticate-Request, CHAP Response.
    request_code = 0

    def __init__(self, credentials: Mapping[str, str], timeout: float) -> None:
        self._credentials = credentials
        self.timeout = timeout
        self.phase = _Phase.IDLE
        self.counters: Counter[str] = Counter()  # keys: AUTH_COUNTERS
        self._deadline: float | None = None
        self._outbox: list[bytes] = []
        self._outcomes: list[AuthOutcome] = []
        #: while set, every login is refused with this message (a blocked line), whatever it says
        self.refusal: str | None = None

    def __repr__(self) -> str:  # no credentials in reprs
        return f"<{type(self).__name__} {self.phase.value}>"

    @property
    def succeeded(self) -> bool:
        return self.phase is _Phase.SUCCEEDED

    def take_packets(self) -> list[bytes]:
        out, self._outbox = self._outbox, []
        return out

    def take_outcomes(self) -> list[AuthOutcome]:
        out, self._outcomes = self._outcomes, []
        return out

    def next_deadline(self) -> float | None:
        return self._deadline

    def stop(self) -> None:
        """The link went down: no more timers."""
        self._deadline = None
        if self.phase is _Phase.WAITING:
            self.phase = _Phase.IDLE

    def start(self, now: float) -> None:
        raise NotImplementedError

    def receive(self, packet: bytes, now: float) -> None:
        """A PAP or CHAP packet from the peer (the PPP Information field). Never raises."""
        parsed = parse_packet(packet)
        if parsed is None:
            self.counters["malformed"] += 1
            return
        code, ident, data = parsed
        if code != self.request_code:
            self.counters["unexpected_code"] += 1
            return
        self._on_request(ident, data, now)

    def _on_request(self, ident: int, data: bytes, now: float) -> None:
        """The peer's request (``request_code``), its header checked."""
        raise NotImplementedError

    def handle_timer(self, now: float) -> None:
        raise NotImplementedError

    def _lookup(self, raw_name: bytes) -> str | None:
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return self._credentials.get(name)

    def _fail(self, user: str, reason: str, rechallenge: bool = False) -> None:
        self.phase = _Phase.FAILED
        self._deadline = None
        self.counters["failure"] += 1
        self._outcomes.append(AuthOutcome(False, user, self.method, reason, rechallenge))
        log.info("%s: authentication of %r failed: %s", self.method.upper(), user, reason)

    def _succeed(self, user: str, rechallenge: bool) -> None:
        self.phase = _Phase.SUCCEEDED
        self.counters["success"] += 1
        self._outcomes.append(AuthOutcome(True, user, self.method, "", rechallenge))
        log.info("%s: %r authenticated", self.method.upper(), user)


class PAPServer(AuthServer):
    """RFC 1334 §2, authenticator side."""

    method = AUTH_PAP
    protocol = PROTO_PAP
    request_code = PAP_AUTH_REQUEST

    def __init__(self, credentials: Mapping[str, str], timeout: float = 30.0) -> None:
        super().__init__(credentials, timeout)
        self._last_code = 0
        self._last_message = b""

    def start(self, now: float) -> None:
        self.phase = _Phase.WAITING
        self._deadline = now + self.timeout

    def _on_request(self, ident: int, data: bytes, now: float) -> None:
        # §2.2.1: Peer-ID Length, Peer-ID, Passwd-Length, Password.
        if not data or len(data) < 1 + data[0] + 1 or len(data) < 1 + data[0] + 1 + data[1 + data[0]]:
            self.counters["malformed"] += 1
            return
        id_len = data[0]
        raw_user = data[1 : 1 + id_len]
        pw_len = data[1 + id_len]
        password = data[2 + id_len : 2 + id_len + pw_len]
        if self.phase in (_Phase.SUCCEEDED, _Phase.FAILED):
            # §2.2.1: the peer retransmits when our answer was lost: answer the same again.
            self.counters["repeated_request"] += 1
            self._outbox.append(build_packet(self._last_code, ident, bytes((len(self._last_message),)) + self._last_message))
            return
        if self.phase is not _Phase.WAITING:
            self.counters["unexpected_request"] += 1
            return
        user = printable(raw_user)
        self._deadline = None
        if self.refusal is not None:
            self._answer(PAP_AUTH_NAK, ident, self.refusal.encode("utf-8"))
            self._fail(user, "blocked")
            return
        secret = self._lookup(raw_user)
        ok = secret is not None and _equal_in_constant_time(secret.encode("utf-8"), password)
        if ok:
            self._answer(PAP_AUTH_ACK, ident, b"Login ok")
            self._succeed(user, rechallenge=False)
        else:
            self._answer(PAP_AUTH_NAK, ident, b"Login incorrect")
            self._fail(user, "unknown user" if secret is None else "wrong password")

    def _answer(self, code: int, ident: int, message: bytes) -> None:
        self._last_code, self._last_message = code, message
        self._outbox.append(build_packet(code, ident, bytes((len(message),)) + message))

    def handle_timer(self, now: float) -> None:
        if self._deadline is not None and now >= self._deadline and self.phase is _Phase.WAITING:
            self._fail("", "timeout waiting for Authenticate-Request")


class CHAPServer(AuthServer):
    """RFC 1994 authenticator with the MD5 algorithm (5)."""

    method = AUTH_CHAP
    protocol = PROTO_CHAP
    request_code = CHAP_RESPONSE

    def __init__(
        self,
        credentials: Mapping[str, str],
        rng: RandomSource,
        name: str = "pyslirp",
        timeout: float = 30.0,
        restart_interval: float = 3.0,
        max_transmits: int = 10,
        rechallenge_interval: float | None = None,
    ) -> None:
        super().__init__(credentials, timeout)
        self._rng = rng
        self._name = name.encode("utf-8")
        self.restart_interval = restart_interval
        self.max_transmits = max_transmits
        self.rechallenge_interval = rechallenge_interval
        self._next_id = rng.getrandbits(8)
        self._ident = -1
        self._challenge = b""
        self._transmits = 0
        self._give_up_at = 0.0
        self._rechallenge = False
        self._answered_ident = -1
        self._answer: bytes = b""
        self.user = ""

    def start(self, now: float) -> None:
        self._rechallenge = False
        self._begin(now)

    def _begin(self, now: float) -> None:
        self.phase = _Phase.WAITING
        self._transmits = 0
        self._give_up_at = now + self.timeout
        self._send_challenge(now)

    def _send_challenge(self, now: float) -> None:
        self._ident = self._next_id
        self._next_id = (self._next_id + 1) & 0xFF
        self._challenge = self._rng.randbytes(_CHALLENGE_SIZE)
        data = bytes((len(self._challenge),)) + self._challenge + self._name
        self._outbox.append(build_packet(CHAP_CHALLENGE, self._ident, data))
        self._transmits += 1
        self.counters["challenge_sent"] += 1
        self._deadline = now + self.restart_interval

    def _on_request(self, ident: int, data: bytes, now: float) -> None:
        # §4.1: Value-Size, Value, Name.
        if not data or len(data) < 1 + data[0]:
            self.counters["malformed"] += 1
            return
        value = data[1 : 1 + data[0]]
        raw_name = data[1 + data[0] :]
        if self.phase in (_Phase.SUCCEEDED, _Phase.FAILED) and ident == self._answered_ident:
            # §4.2: a duplicate Response (our Success/Failure was lost): answer it again.
            self.counters["repeated_response"] += 1
            self._outbox.append(self._answer)
            return
        if self.phase is not _Phase.WAITING or ident != self._ident:
            self.counters["stale_response"] += 1
            return
        user = printable(raw_name)
        secret = self._lookup(raw_name) if self.refusal is None else None
        ok = False
        reason = "unknown user" if self.refusal is None else "blocked"
        if secret is not None:
            import hashlib  # on first use, as in _equal_in_constant_time

            expected = hashlib.md5(bytes((ident,)) + secret.encode("utf-8") + self._challenge).digest()
            ok = _equal_in_constant_time(expected, value)
            reason = "wrong response"
        if ok and self._rechallenge and user != self.user:
            ok, reason = False, "user changed on re-challenge"
        self._answered_ident = ident
        if ok:
            self._answer = build_packet(CHAP_SUCCESS, ident, b"Welcome")
            self._outbox.append(self._answer)
            self.user = user
            self._succeed(user, self._rechallenge)
            self._deadline = now + self.rechallenge_interval if self.rechallenge_interval else None
        else:
            message = self.refusal.encode("utf-8") if self.refusal is not None else b"Access denied"
            self._answer = build_packet(CHAP_FAILURE, ident, message)
            self._outbox.append(self._answer)
            self._fail(user, reason, self._rechallenge)

    def handle_timer(self, now: float) -> None:
        if self._deadline is None or now < self._deadline:
            return
        if self.phase is _Phase.SUCCEEDED:
            self._rechallenge = True  # §2.3: periodic re-challenge while the link is up
            self.counters["rechallenge"] += 1
            self._begin(now)
        elif self.phase is _Phase.WAITING:
            if self._transmits >= self.max_transmits or now >= self._give_up_at:
                self._fail(self.user, "timeout waiting for Response", self._rechallenge)
            else:
                self._send_challenge(now)


@dataclass(frozen=True)
class AuthOptions:
    """How we authenticate the peer (which methods we ask for is LCP's: ``LCPOptions``)."""

    credentials: Mapping[str, str] = field(default_factory=dict, repr=False)  # user -> secret
    local_name: str = "pyslirp"  # our name in CHAP Challenges
    timeout: float = 30.0
    chap_rechallenge_interval: float | None = None


def make_auth_server(method: str, options: AuthOptions, fsm: FSMConfig, rng: RandomSource) -> AuthServer:
    """The authenticator for the method LCP negotiated; CHAP retransmits its Challenge on the
    automaton's restart timer, at most Max-Configure times."""
    if method == AUTH_PAP:
        return PAPServer(options.credentials, options.timeout)
    if method == AUTH_CHAP:
        return CHAPServer(
            options.credentials, rng, options.local_name, options.timeout, fsm.restart_interval,
            fsm.max_configure, options.chap_rechallenge_interval,
        )
    raise ValueError(f"unknown authentication method {method!r}")
