#!/usr/bin/env python3
"""A clinical app's client for the ClinAuth workstation agent, in plain Python.

`clinauth-agent` serves a local Unix socket (`/run/clinauth/agent.sock` by
default). This module speaks its protocol (docs/agent-protocol.md) with the
standard library only: one JSON object per line, at most 64 KiB a line,
every message in the envelope {"v":1,"id":N,"body":{"type":...}}.

It shows what an EHR, order-entry or pharmacy app asks of the agent for the
user it runs as:

- step_up: a fresh two-factor authentication before a sensitive action,
  ending in a server-signed ticket the app's backend verifies;
- register_record / pending_records / get_record / decide_record: a record
  entered by proxy (代行入力) stays pending until its confirmer
  authenticates and confirms or rejects it; the server signs the decision;
- sign: a document digest signed with the card's signature key;
- subscribe: card, lock and user-switch events (hide a chart the moment the
  clinician walks away with their card).

The PIN is never the app's business: the agent asks for it in its own
dialog (GnuPG's pinentry) on the user's desktop. The app only receives
`info` messages (printed here on stderr, as an app would show them) and
the result. An agent that sent this client a `prompt` would be asking it
for a secret: the client refuses (PromptRefused) and hangs up, which ends
the agent's flow.

Tickets and confirmations are decoded here for display only
(jws_claims); they are NOT verified. Verifying them is the job of the app's
backend, with the server's Ed25519 ticket public key.

Example session (a clerk enters an order for Dr Suzuki, who confirms it
at her own workstation; the PIN dialogs appear on the screen):

    $ python3 clinauth_agent.py status
    {"type":"status_result","agent_version":"0.1.0","server_reachable":true,"session_user":"clerk.ito","card_present":true}
    $ python3 clinauth_agent.py register @order-0012345.json \\
          "処方: ロキソプロフェン 60mg 3錠 分3 (患者 0012345)" dr.suzuki
    agent: Answer in the ClinAuth dialog on your screen.
           画面の ClinAuth ダイアログで入力してください。
    {"type":"record","record":{"id":"5d1f0c0e9a7b4c2d8e3f60718293a4b5","digest":"sha256:9f86...","state":"pending",...}}

    (at Dr Suzuki's workstation, running as dr.suzuki)
    $ python3 clinauth_agent.py pending
    {"type":"records","records":[{"id":"5d1f0c0e9a7b4c2d8e3f60718293a4b5",...}],"truncated":false}
    $ python3 clinauth_agent.py --claims confirm 5d1f0c0e9a7b4c2d8e3f60718293a4b5
    agent: Answer in the ClinAuth dialog on your screen.
           画面の ClinAuth ダイアログで入力してください。
    confirmation claims (decoded, NOT verified): {"iss":...,"verdict":"confirm",...}
    {"type":"record_result","outcome":"allow","record":{...,"state":"confirmed","confirmation":"eyJ..."}}
    $ echo $?
    0

Command line:

    clinauth_agent.py [--socket PATH] [--timeout S] [--claims] COMMAND
      status
      step-up ACTION [--max-age S] [--user U]
      register DIGEST_OR_@FILE SUMMARY CONFIRMER [--user U]
      pending [--user U]
      get RECORD
      confirm RECORD [--user U]
      reject RECORD [--user U]
      sign DIGEST_OR_@FILE [--user U]
      events [--count N]

Each command prints the final reply body (or, for `events`, each event) as
one JSON object per line on stdout. `@FILE` means the SHA-256 of the
file's bytes. Exit status: 0 allowed / done, 1 denied, 2 error.

In a program:

    from clinauth_agent import AgentClient, digest_of, jws_claims

    with AgentClient("/run/clinauth/agent.sock") as agent:
        result = agent.step_up("order.controlled_drug", max_age=120)
        if result["outcome"] == "allow":
            send_to_backend(result["ticket"])   # the backend verifies it
"""

import argparse
import base64
import hashlib
import json
import socket
import sys

PROTOCOL_VERSION = 1
# The longest frame, in bytes, including its newline (proto/src/frame.rs).
MAX_FRAME_LEN = 64 * 1024
# The id the agent puts on an error about a frame it could not read.
UNCORRELATED_ID = 0
DEFAULT_SOCKET = "/run/clinauth/agent.sock"
# After these errors the agent closes the connection.
CLOSING_ERRORS = ("frame_too_large", "malformed", "unsupported_version")

_DIGEST_LENGTHS = {"sha256": 32, "sha384": 48, "sha512": 64}
_HEX = "0123456789abcdef"


class ClinAuthError(Exception):
    """Anything that went wrong talking to the agent."""


class AgentError(ClinAuthError):
    """The agent answered with an `error` reply."""

    def __init__(self, body):
        self.body = body
        self.code = str(body.get("code", "?"))
        self.message = str(body.get("message", ""))
        super().__init__("agent error %s: %s" % (self.code, self.message))

    @property
    def closes_connection(self):
        """Whether the agent hung up after this error."""
        return self.code in CLOSING_ERRORS


class ProtocolError(ClinAuthError):
    """The agent's bytes broke the protocol (framing, envelope, order)."""


class PromptRefused(ProtocolError):
    """The agent sent a `prompt`. An app never answers one: PINs go to the
    agent's pinentry dialog, never through the app. The connection is
    closed, which aborts the agent's flow."""


class ConnectionClosed(ClinAuthError):
    """The agent closed the connection between two frames."""


# --- values ---------------------------------------------------------------


def digest_of(data):
    """The `sha256:<hex>` digest of `data` (bytes), as the agent expects."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _is_hex(text):
    return all(c in _HEX for c in text)


def check_digest(text):
    """Returns `text` if it is `sha256:`, `sha384:` or `sha512:` followed by
    lowercase hex of the right length; raises ValueError otherwise."""
    alg, sep, hexpart = text.partition(":")
    size = _DIGEST_LENGTHS.get(alg)
    if not sep or size is None or len(hexpart) != 2 * size or not _is_hex(hexpart):
        raise ValueError(
            "a digest is sha256:, sha384: or sha512: and lowercase hex of its length, "
            "not %r" % text[:80]
        )
    return text


def check_record_id(text):
    """Returns `text` if it is a record ID (32 lowercase hex digits)."""
    if len(text) != 32 or not _is_hex(text):
        raise ValueError("a record ID is 32 lowercase hex digits, not %r" % text[:80])
    return text


def check_action(text):
    """Returns `text` if it is an action name (1 to 64 ASCII letters,
    digits, '.', '_', '-')."""
    ok = 1 <= len(text) <= 64 and all(
        c.isascii() and (c.isalnum() or c in "._-") for c in text
    )
    if not ok:
        raise ValueError("an action is 1 to 64 ASCII letters, digits, '.', '_' or '-'")
    return text


def check_summary(text):
    """Returns `text` if it is a record summary (1 to 512 bytes of UTF-8,
    no control characters)."""
    size = len(text.encode("utf-8"))
    if not 1 <= size <= 512:
        raise ValueError("a summary is 1 to 512 bytes (UTF-8)")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text):
        raise ValueError("a summary has no control characters (no line breaks)")
    return text


def _b64url_decode(part):
    padded = part + "=" * (-len(part) % 4)
    return base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)


def _jws_part(token, index):
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise ValueError("not a compact JWS (header.payload.signature)")
    try:
        value = json.loads(_b64url_decode(parts[index]).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError("the JWS part is not base64url JSON: %s" % e) from None
    if not isinstance(value, dict):
        raise ValueError("the JWS part is not a JSON object")
    return value


def jws_header(token):
    """The decoded header of a ticket or confirmation, e.g.
    {"alg":"EdDSA","typ":"clinauth-ticket+jwt","kid":"..."}. Not verified."""
    return _jws_part(token, 0)


def jws_claims(token):
    """The decoded claims (payload) of a ticket or a signed confirmation.

    This does NOT verify the signature: nothing read here may be trusted.
    Verification is the app backend's job, with the server's Ed25519 ticket
    public key (check the header's alg "EdDSA" and typ, the signature, then
    iss, ws, sub, purpose, op and iat/exp; see docs/agent-protocol.md).
    Python's standard library has no Ed25519, so this example cannot do it.
    """
    return _jws_part(token, 1)


# --- framing --------------------------------------------------------------


def encode_frame(envelope):
    """One frame: compact JSON (which never holds a raw newline) and `\\n`."""
    data = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    data += b"\n"
    if len(data) > MAX_FRAME_LEN:
        raise ValueError("the request is longer than %d bytes" % MAX_FRAME_LEN)
    return data


def decode_frame(line):
    """Checks one frame (without its newline) and returns (id, body)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("the agent sent a frame that is not UTF-8") from None
    try:
        envelope = json.loads(text)
    except ValueError:
        raise ProtocolError("the agent sent a frame that is not JSON") from None
    if not isinstance(envelope, dict):
        raise ProtocolError("the agent sent a frame that is not an envelope")
    version = envelope.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError("unsupported protocol version %r" % (version,))
    rid = envelope.get("id")
    if type(rid) is not int or rid < 0:
        raise ProtocolError("the agent sent an envelope without a valid id")
    body = envelope.get("body")
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        raise ProtocolError("the agent sent an envelope without a typed body")
    return rid, body


def print_info(body):
    """Shows an `info` reply on stderr, English then Japanese."""
    lines = ["agent: " + str(body.get("text", ""))]
    if body.get("text_ja"):
        lines.append("       " + str(body["text_ja"]))
    _write(sys.stderr, "\n".join(lines) + "\n")


def _write(stream, text):
    # UTF-8 whatever the locale (summaries and messages are often Japanese).
    raw = getattr(stream, "buffer", None)
    if raw is not None:
        stream.flush()
        raw.write(text.encode("utf-8"))
        raw.flush()
    else:
        stream.write(text)
        stream.flush()


# --- the client -----------------------------------------------------------


class AgentClient:
    """A connection to the agent's socket, opened at the first request.

    Each method sends one request and returns the final reply body (a
    dict). The `info` replies before it go to `on_info` (default: printed
    on stderr) and are kept in `self.infos`. An `error` reply raises
    AgentError; a `prompt` raises PromptRefused. `user=None` means the user
    the app runs as; naming another user is refused by the agent.

    One request is outstanding at a time. After an exception other than an
    AgentError that keeps the connection open, the connection is closed
    (which aborts a flow in progress); the next request opens a new one.
    """

    def __init__(self, path=DEFAULT_SOCKET, timeout=None, on_info=print_info):
        self.path = path
        # Seconds a read may wait; None: for ever. A step-up waits for the
        # person at the PIN dialog (up to [pinentry] timeout) and the card.
        self.timeout = timeout
        self.on_info = on_info
        self.infos = []
        self._sock = None
        self._buf = bytearray()
        self._next_id = 1
        self._sub_id = None
        self._events = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def connect(self):
        """Opens the connection if it is not open."""
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.path)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._buf = bytearray()
        self._next_id = 1  # request ids count up from 1 on each connection
        self._sub_id = None
        self._events = []

    def close(self):
        """Closes the connection (the agent aborts a flow in progress)."""
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._buf = bytearray()
                self._sub_id = None
                self._events = []

    # The requests.

    def status(self):
        """The agent's state: `status_result` {agent_version,
        server_reachable, session_user?, card_present}."""
        return self._call({"type": "status"}, ("status_result",))

    def step_up(self, action, max_age, user=None):
        """A fresh two-factor authentication for `action`: `auth_result`
        {outcome, user, purpose, rule?, factors, reason?, ticket?}; the
        ticket (on allow) states the action and lives at most `max_age`
        seconds (1 to 86,400)."""
        if type(max_age) is not int or not 1 <= max_age <= 86400:
            raise ValueError("max_age is 1 to 86,400 seconds")
        body = {"type": "step_up", "action": check_action(action), "max_age": max_age}
        return self._call(_with_user(body, user), ("auth_result",))

    def register_record(self, digest, summary, confirmer, user=None):
        """Registers a record entered for `confirmer`: `record` {record},
        pending. An `auth_result` deny comes back instead when the
        inputter had to step up first and was refused."""
        body = {
            "type": "register_record",
            "digest": check_digest(digest),
            "summary": check_summary(summary),
            "confirmer": confirmer,
        }
        return self._call(_with_user(body, user), ("record", "auth_result"))

    def pending_records(self, user=None):
        """The records waiting for the user to confirm: `records`
        {records, truncated}, oldest first."""
        body = {"type": "pending_records"}
        return self._call(_with_user(body, user), ("records",))

    def get_record(self, record):
        """One record, for its inputter or confirmer: `record` {record}."""
        body = {"type": "get_record", "record": check_record_id(record)}
        return self._call(body, ("record",))

    def decide_record(self, record, verdict, user=None):
        """The confirmer confirms (`verdict="confirm"`) or rejects
        (`"reject"`) a record after a fresh authentication: `record_result`
        {outcome, record?, reason?}; record.confirmation is the signed
        confirmation."""
        if verdict not in ("confirm", "reject"):
            raise ValueError('the verdict is "confirm" or "reject"')
        body = {"type": "decide_record", "record": check_record_id(record), "verdict": verdict}
        return self._call(_with_user(body, user), ("record_result", "auth_result"))

    def sign(self, digest, user=None):
        """Signs a SHA-256 document digest with the card's signature key:
        `sign_result` {outcome, signature?, certificate?, ticket?, reason?}
        (signature and certificate in base64url)."""
        body = {"type": "sign", "digest": check_digest(digest)}
        return self._call(_with_user(body, user), ("sign_result", "auth_result"))

    def subscribe(self):
        """Subscribes to the workstation's events and returns a generator of
        them: dicts {kind, at_ms, reader?, user?, session?}, kind one of
        card_inserted, card_removed, session_locked, session_unlocked,
        user_switched, lagged. The subscription is made (and `subscribed`
        awaited) before this returns. Best on a connection of its own."""
        rid, _ = self._exchange({"type": "subscribe"}, ("subscribed",))
        self._sub_id = rid
        return self._event_stream()

    # The machinery.

    def _event_stream(self):
        while True:
            if self._events:
                yield self._events.pop(0)
                continue
            if self._sock is None or self._sub_id is None:
                return
            try:
                rid, body = self._read_reply()
                if rid == self._sub_id and body["type"] == "event":
                    event = body.get("event")
                    if not isinstance(event, dict):
                        raise ProtocolError("an event reply without its event")
                elif rid == UNCORRELATED_ID and body["type"] == "error":
                    raise AgentError(body)
                else:
                    raise ProtocolError(
                        "unexpected %r reply (id %d) on the event stream" % (body["type"], rid)
                    )
            except BaseException:
                self.close()
                raise
            yield event

    def _call(self, body, finals):
        return self._exchange(body, finals)[1]

    def _exchange(self, body, finals):
        """Sends `body`, relays infos, returns (request id, final body)."""
        self.infos = []
        try:
            self.connect()
            rid = self._next_id
            self._next_id += 1
            self._sock.sendall(encode_frame({"v": PROTOCOL_VERSION, "id": rid, "body": body}))
            while True:
                got, reply = self._read_reply()
                kind = reply["type"]
                if got == UNCORRELATED_ID and kind == "error":
                    raise AgentError(reply)
                if self._sub_id is not None and got == self._sub_id and kind == "event":
                    # An event of this connection's subscription: kept for
                    # the event stream.
                    if not isinstance(reply.get("event"), dict):
                        raise ProtocolError("an event reply without its event")
                    self._events.append(reply["event"])
                    continue
                if got != rid:
                    raise ProtocolError(
                        "reply id %d does not answer request %d" % (got, rid)
                    )
                if kind == "info":
                    self.infos.append(reply)
                    if self.on_info is not None:
                        self.on_info(reply)
                    continue
                if kind == "prompt":
                    raise PromptRefused(
                        "the agent sent a %r prompt: an app never answers prompts "
                        "(PINs go to the agent's pinentry dialog); hanging up"
                        % (reply.get("kind"),)
                    )
                if kind == "error":
                    raise AgentError(reply)
                if kind in finals:
                    return rid, reply
                raise ProtocolError("unexpected %r reply to %r" % (kind, body["type"]))
        except AgentError as e:
            if e.closes_connection:
                self.close()
            raise
        except BaseException:
            # Out of step, timed out or interrupted: hang up, which aborts
            # the agent's flow (nothing is left half-done).
            self.close()
            raise

    def _read_reply(self):
        return decode_frame(self._read_line())

    def _read_line(self):
        """The next frame without its newline; never buffers more than one
        frame's limit while looking for the newline."""
        while True:
            newline = self._buf.find(b"\n")
            if newline >= 0:
                if newline + 1 > MAX_FRAME_LEN:
                    raise ProtocolError("the agent sent a frame longer than 64 KiB")
                line = bytes(self._buf[:newline])
                del self._buf[: newline + 1]
                if not line:
                    raise ProtocolError("the agent sent an empty line")
                return line
            if len(self._buf) >= MAX_FRAME_LEN:
                raise ProtocolError("the agent sent a frame longer than 64 KiB")
            chunk = self._sock.recv(min(4096, MAX_FRAME_LEN - len(self._buf)))
            if not chunk:
                if self._buf:
                    raise ProtocolError("the agent hung up in the middle of a frame")
                raise ConnectionClosed("the agent closed the connection")
            self._buf += chunk


def _with_user(body, user):
    if user is not None:
        body["user"] = user
    return body


# --- the command line -----------------------------------------------------


def _digest_arg(text):
    if text.startswith("@"):
        try:
            with open(text[1:], "rb") as f:
                return digest_of(f.read())
        except OSError as e:
            raise ValueError("cannot read %s: %s" % (text[1:], e.strerror or e)) from None
    return check_digest(text)


def _print_json(body):
    _write(sys.stdout, json.dumps(body, ensure_ascii=False, separators=(",", ":")) + "\n")


def _show_claims(body):
    """For --claims: what the ticket or confirmation says, unverified."""
    tokens = []
    if isinstance(body.get("ticket"), str):
        tokens.append(("ticket", body["ticket"]))
    record = body.get("record")
    if isinstance(record, dict) and isinstance(record.get("confirmation"), str):
        tokens.append(("confirmation", record["confirmation"]))
    for name, token in tokens:
        try:
            claims = json.dumps(jws_claims(token), ensure_ascii=False, separators=(",", ":"))
        except ValueError as e:
            claims = "(cannot decode: %s)" % e
        _write(sys.stderr, "%s claims (decoded, NOT verified): %s\n" % (name, claims))


def _common_options(p, defaults):
    # Accepted before the command and after it alike.
    p.add_argument(
        "--socket",
        default=DEFAULT_SOCKET if defaults else argparse.SUPPRESS,
        help="the agent's socket (%s)" % DEFAULT_SOCKET,
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None if defaults else argparse.SUPPRESS,
        help="seconds to wait for the agent (default 600; events: for ever); 0: for ever",
    )
    p.add_argument(
        "--claims",
        action="store_true",
        default=False if defaults else argparse.SUPPRESS,
        help="also show the claims of a ticket or confirmation on stderr (decoded, not verified)",
    )


def _parser():
    p = argparse.ArgumentParser(
        prog="clinauth_agent.py",
        description="Talk to the ClinAuth workstation agent as a clinical app would. "
        "Prints each final reply (or event) as one JSON line; exit 0 allowed/done, "
        "1 denied, 2 error.",
    )
    _common_options(p, True)
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, False)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name, help_text, _add=sub.add_parser):
        return _add(name, help=help_text, parents=[common])

    add("status", "the agent's state")

    s = add("step-up", "a fresh two-factor authentication for ACTION")
    s.add_argument("action", metavar="ACTION")
    s.add_argument("--max-age", type=int, default=300, help="seconds (1-86400, default 300)")
    s.add_argument("--user")

    s = add("register", "register a record entered for CONFIRMER")
    s.add_argument("digest", metavar="DIGEST_OR_@FILE")
    s.add_argument("summary", metavar="SUMMARY")
    s.add_argument("confirmer", metavar="CONFIRMER")
    s.add_argument("--user")

    s = add("pending", "the records waiting for you to confirm")
    s.add_argument("--user")

    s = add("get", "one record")
    s.add_argument("record", metavar="RECORD")

    for name in ("confirm", "reject"):
        s = add(name, "%s a record (its confirmer)" % name)
        s.add_argument("record", metavar="RECORD")
        s.add_argument("--user")

    s = add("sign", "sign a document digest with the card")
    s.add_argument("digest", metavar="DIGEST_OR_@FILE")
    s.add_argument("--user")

    s = add("events", "print card, lock and user-switch events")
    s.add_argument("--count", type=int, default=None, help="stop after N events")
    return p


def _run(args, agent):
    cmd = args.command
    if cmd == "events":
        if args.count is not None and args.count < 1:
            raise ValueError("--count is at least 1")
        seen = 0
        for event in agent.subscribe():
            _print_json(event)
            seen += 1
            if args.count is not None and seen >= args.count:
                return 0
        return 2
    if cmd == "status":
        reply = agent.status()
    elif cmd == "step-up":
        reply = agent.step_up(args.action, args.max_age, user=args.user)
    elif cmd == "register":
        reply = agent.register_record(
            _digest_arg(args.digest), args.summary, args.confirmer, user=args.user
        )
    elif cmd == "pending":
        reply = agent.pending_records(user=args.user)
    elif cmd == "get":
        reply = agent.get_record(args.record)
    elif cmd in ("confirm", "reject"):
        reply = agent.decide_record(args.record, cmd, user=args.user)
    elif cmd == "sign":
        reply = agent.sign(_digest_arg(args.digest), user=args.user)
    else:  # argparse allows nothing else
        raise ValueError("unknown command %r" % cmd)
    if args.claims:
        _show_claims(reply)
    _print_json(reply)
    return 1 if reply.get("outcome") == "deny" else 0


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.timeout is None:
        timeout = None if args.command == "events" else 600.0
    else:
        timeout = args.timeout if args.timeout > 0 else None
    agent = AgentClient(args.socket, timeout=timeout)
    try:
        return _run(args, agent)
    except AgentError as e:
        _print_json(e.body)
        _write(sys.stderr, "clinauth_agent.py: %s\n" % e)
        return 2
    except (ClinAuthError, ValueError) as e:
        _write(sys.stderr, "clinauth_agent.py: %s\n" % e)
        return 2
    except OSError as e:
        _write(sys.stderr, "clinauth_agent.py: %s (agent socket %s)\n" % (e, args.socket))
        return 2
    except KeyboardInterrupt:
        return 0 if args.command == "events" else 2
    finally:
        agent.close()


if __name__ == "__main__":
    sys.exit(main())
