"""Every SMTP reply text vmond sends, in one place (cameras' logs and installers' searches rely on them)."""

from __future__ import annotations


class Reply:
    TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, try again later"
    TOO_MANY_FROM_PEER = "421 4.7.0 Too many connections from your address (at most {limit}), try again later"
    TOO_MANY_COMMANDS = "421 4.7.0 Too many commands in one session, closing"
    TOO_MANY_AUTH_FAILURES = "421 4.7.0 Too many failed logins, closing"
    AUTH_THROTTLED = "454 4.7.0 Too many failed logins from your address, try again later"
    AUTH_REQUIRED = "530 5.7.0 Authentication required"
    SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
    NETWORK_REFUSED = "554 5.7.1 Your network is not allowed to send mail here"
    RECIPIENT_OK = "250 2.1.5 Recipient ok"
    UNKNOWN_RECIPIENT = "550 5.1.1 <{address}>: no camera has this address"
    WRONG_CAMERA = "550 5.7.1 <{address}>: these credentials belong to another camera"
    INSUFFICIENT_STORAGE = "452 4.3.1 Insufficient system storage, try again later"
    LOCAL_ERROR = "451 4.3.0 Local error in processing, try again later"
    QUEUED = "250 2.0.0 Ok: queued as {name}"
    AUTH_OK = "235 2.7.0 Authentication successful"
    START_DATA = "354 End data with <CR><LF>.<CR><LF>"
    TOO_BIG = "552 5.3.4 Message exceeds the maximum size of {limit} bytes"
    NEED_RCPT = "503 5.5.1 Error: need RCPT command"
    DATA_SYNTAX = "501 5.5.4 Syntax: DATA"
    DATA_TIMEOUT = "421 4.4.2 The message took too long to arrive, closing"
