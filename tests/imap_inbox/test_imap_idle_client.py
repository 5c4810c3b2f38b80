"""The watcher's asyncio IMAP client and its connection opener, against the real Dovecot."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from plugins.imap_inbox.connection import ConnectionSettings, ImapConnectError
from plugins.imap_inbox.watcher.idle_client import TLS_READ_BUFFER, use_small_tls_buffers
from plugins.imap_inbox.watcher.opening import Opener, OpeningLimits, ServerFull
from tests.support.imap_helpers import message


def settings(mailbox, **overrides) -> ConnectionSettings:
    values = dict(host=mailbox.host, port=mailbox.port, security="ssl", username=mailbox.username,
                  password=mailbox.password, ca_file=mailbox.ca_file, timeout=10)
    values.update(overrides)
    return ConnectionSettings(**values)


def opener(**limits) -> Opener:
    return Opener(OpeningLimits(**limits), block_private_hosts=False)


def test_idle_reports_new_and_expunged_mail_and_examine_is_read_only(mailbox):
    mailbox.append("INBOX", message(1))

    async def scenario():
        client = await opener().open(settings(mailbox))
        try:
            state = await client.examine("INBOX")
            assert state["exists"] == 1 and state["uidnext"] == 2
            seen: list[bytes] = []
            threading.Timer(0.5, lambda: mailbox.append("INBOX", message(2))).start()
            threading.Timer(1.0, lambda: mailbox.server.expunge(mailbox.username, "INBOX", [1])).start()
            await client.idle(3.0, seen.append)
            await client.noop(seen.append)
            return seen
        finally:
            await client.logout()

    seen = asyncio.run(scenario())
    assert b"EXISTS" in seen and b"EXPUNGE" in seen
    with mailbox.client() as imap:  # EXAMINE changed nothing: the new message is still unseen
        imap.select_folder("INBOX", readonly=True)
        assert imap.search(["UNSEEN"]) == [2]


def test_the_sent_folder_is_followed_by_notify_while_idle(mailbox):
    mailbox.append("Sent", message(1))

    async def scenario():
        client = await opener().open(settings(mailbox))
        try:
            await client.examine("INBOX")
            assert await client.follow("Sent") == {"messages": 1, "uidnext": 2}
            assert client.follow_pushed  # Dovecot 2.3 offers NOTIFY (RFC 5465)
            seen: list[bytes] = []
            threading.Timer(0.5, lambda: mailbox.append("Sent", message(2))).start()
            await client.idle(2.5, seen.append)
            await client.check_followed("Sent", seen.append)  # asked again: nothing new, nothing reported
            return seen
        finally:
            await client.logout()

    assert asyncio.run(scenario()) == [b"STATUS"]


def test_with_the_watchers_small_tls_buffer_an_answer_many_times_longer_is_read_whole(mailbox, monkeypatch):
    """The watcher reads at most TLS_READ_BUFFER bytes per wake-up; records and answers may be far longer."""
    monkeypatch.setattr(asyncio.sslproto.SSLProtocol, "max_size", asyncio.sslproto.SSLProtocol.max_size)
    use_small_tls_buffers()
    body = "".join(f"line {n:05d} of a long message\r\n" for n in range(2000))  # 62 KB: 4 TLS records
    assert len(body) > 25 * TLS_READ_BUFFER
    mailbox.append("INBOX", message(1, body=body))

    async def scenario():
        client = await opener().open(settings(mailbox))
        try:
            assert (await client.examine("INBOX"))["exists"] == 1
            return await client.command("FETCH", "1", "(BODY.PEEK[TEXT])")
        finally:
            await client.logout()

    answer = b"".join(asyncio.run(scenario()))
    assert b"line 00000 of a long message" in answer and b"line 01999 of a long message" in answer
    assert answer.count(b"of a long message") == 2000


def test_starttls_and_a_utf8_password(dovecot):
    dovecot.add_user("utf8@team.example", "pässwörd-ünïcode")
    account = ConnectionSettings(host=dovecot.host, port=dovecot.imap_port, security="starttls",
                                 username="utf8@team.example", password="pässwörd-ünïcode",
                                 ca_file=dovecot.ca_file, timeout=10)

    async def scenario():
        client = await opener().open(account)
        try:
            assert "IDLE" in client.capabilities
            return await client.examine("INBOX")
        finally:
            await client.logout()

    assert asyncio.run(scenario())["exists"] == 0


def test_a_wrong_password_is_worded_as_for_a_sync_without_the_password(mailbox):
    async def scenario():
        await opener().open(settings(mailbox, password="not-the-password-9"))

    with pytest.raises(ImapConnectError) as caught:
        asyncio.run(scenario())
    assert caught.value.kind == "auth_failed" and caught.value.permanent
    assert "not-the-password-9" not in str(caught.value.to_dict())


def test_an_untrusted_certificate_and_a_closed_port_are_told_apart(mailbox):
    async def attempt(**overrides):
        await opener().open(settings(mailbox, **overrides))

    with pytest.raises(ImapConnectError) as untrusted:
        asyncio.run(attempt(ca_file=mailbox.server.wrong_ca_file))
    assert untrusted.value.kind == "certificate_untrusted" and untrusted.value.permanent
    with pytest.raises(ImapConnectError) as refused:
        asyncio.run(attempt(port=1))
    assert refused.value.kind == "connection_refused" and not refused.value.permanent


def test_the_per_server_cap_is_kept(mailbox):
    async def scenario():
        capped = opener(connections_per_server=1)
        first = await capped.open(settings(mailbox))
        try:
            with pytest.raises(ServerFull):
                await capped.open(settings(mailbox))
        finally:
            capped.release(settings(mailbox))
            await first.logout()
        second = await capped.open(settings(mailbox))  # released: there is room again
        await second.logout()

    asyncio.run(scenario())


def test_connections_opening_at_the_same_time_count_against_the_cap(mailbox):
    async def scenario():
        capped = opener(connections_per_server=1)
        results = await asyncio.gather(*(capped.open(settings(mailbox)) for _ in range(3)), return_exceptions=True)
        clients = [r for r in results if not isinstance(r, BaseException)]
        for client in clients:
            await client.logout()
        return clients, [r for r in results if isinstance(r, BaseException)]

    clients, refused = asyncio.run(scenario())
    assert len(clients) == 1 and len(refused) == 2 and all(isinstance(r, ServerFull) for r in refused)


def test_private_hosts_are_refused_when_blocked(mailbox):
    async def scenario():
        await Opener(OpeningLimits(), block_private_hosts=True).open(settings(mailbox, host="localhost"))

    with pytest.raises(ImapConnectError) as caught:
        asyncio.run(scenario())
    assert caught.value.kind == "private_host_blocked"
    # As for a sync (issue 14): the refusal never says what the name resolved to.
    said = caught.value.message + caught.value.hint
    assert "localhost" in said and "127.0.0.1" not in said and "::1" not in said


def _bytes_until_idling(proxy, through_proxy) -> int:
    """Server -> client bytes of a clean session up to IDLE's continuation (greeting, TLS, LOGIN, EXAMINE)."""
    from tests.support.faultproxy import DOWN

    async def measure() -> int:
        client = await opener().open(through_proxy)
        await client.examine("INBOX")
        idle = asyncio.create_task(client.idle(1.0, lambda kind: None))
        await asyncio.sleep(0.5)
        count = proxy.last.sent[DOWN]
        await idle
        await client.logout()
        return count

    return asyncio.run(measure())


def _watch(through_proxy, modes: list[str], until, seconds: float = 20, statuses: list | None = None) -> None:
    """Run one InboxWatch (fast timings) until ``until()`` holds or ``seconds`` pass."""
    from plugins.imap_inbox.watcher.inbox_watch import InboxWatch, WatchTimings

    def record(inbox_id, status) -> None:
        modes.append(status["mode"])
        if statuses is not None:
            statuses.append(status)

    async def run() -> None:
        watch = InboxWatch(1, through_proxy, opener(), WatchTimings(idle_seconds=1.0, retry_first=0.2),
                           lambda *change: None, record)
        task = asyncio.create_task(watch.run())
        try:
            for _ in range(int(seconds * 10)):
                if until():
                    return
                await asyncio.sleep(0.1)
        finally:
            task.cancel()

    asyncio.run(run())


def test_a_connection_gone_silent_mid_idle_is_noticed_and_replaced(mailbox):
    """No FIN, no RST: the link just stops carrying bytes (a NAT dropped it). The NOOP between IDLE rounds
    gets no answer within the timeout, and the watch reconnects."""
    from tests.support.faultproxy import DOWN, Cut, FaultProxy

    with FaultProxy(mailbox.host, mailbox.port) as proxy:
        through_proxy = settings(mailbox, port=proxy.port, timeout=2)
        proxy.arm(Cut(DOWN, _bytes_until_idling(proxy, through_proxy), "stall"))  # the next connection only
        modes: list[str] = []
        started = time.monotonic()
        _watch(through_proxy, modes, lambda: modes.count("live") >= 2)
    assert proxy.traces[1].cut_fired
    assert modes[:2] == ["connecting", "live"] and "retrying" in modes and modes.count("live") >= 2, modes
    assert time.monotonic() - started < 15


def test_a_server_that_drops_every_connection_once_idling_is_retried_ever_more_slowly(mailbox):
    """Reaching IDLE is not health: only a connection that stays up resets the backoff."""
    from tests.support.faultproxy import DOWN, Cut, FaultProxy

    with FaultProxy(mailbox.host, mailbox.port) as proxy:
        through_proxy = settings(mailbox, port=proxy.port, timeout=2)
        proxy.arm(Cut(DOWN, _bytes_until_idling(proxy, through_proxy), "fin"), policy="flaky")
        modes: list[str] = []
        statuses: list[dict] = []
        _watch(through_proxy, modes, lambda: modes.count("retrying") >= 5, statuses=statuses)
        connections = len(proxy.traces) - 1
    # From 0.2 s, doubling, with jitter of 0.5-1: the fifth wait is 1.6-3.2 s. Were reaching IDLE taken
    # for health, every wait would be 0.1-0.2 s.
    waits = [s["retry_in"] for s in statuses if s["mode"] == "retrying"]
    assert len(waits) >= 5 and waits[4] >= 2, waits
    assert modes.count("live") == connections
