"""systemd's D-Bus API: start, stop and follow transient units (the only dbus_next importer).

Mechanism only: which properties a notebook unit gets is decided in units.py, which hands
them over as plain ``(name, dbus signature, value)`` triples so nothing else sees dbus_next.
References: org.freedesktop.systemd1(5), systemd.resource-control(5).
"""

import asyncio
import logging
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from dbus_next import BusType, Message, MessageType, Variant
from dbus_next.aio import MessageBus

from appliance.errors import NoSuchUnit, SystemdError

log = logging.getLogger(__name__)

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
UNIT = "org.freedesktop.systemd1.Unit"
SERVICE = "org.freedesktop.systemd1.Service"
SLICE = "org.freedesktop.systemd1.Slice"
PROPERTIES = "org.freedesktop.DBus.Properties"
JOB = "org.freedesktop.systemd1.Job"
#: A job's JobRemoved should come at once; after this long without it, ask whether the job is
#: still queued (if not, the signal was lost and the unit's state tells the outcome).
JOB_CHECK_SECONDS = 10.0
UNIT_PREFIX = "/org/freedesktop/systemd1/unit/"
#: JobRemoved signals kept for jobs whose reply has not been read yet (see _on_job_removed).
EARLY_JOBS_KEPT = 1024
#: Method calls on the wire at once. A classroom burst makes hundreds of calls in the same
#: second; more in flight than systemd answers at once only fills the socket and systemd's queue.
MAX_CALLS_IN_FLIGHT = 32
#: What a user sees when the connection dropped under their request.
LOST_CONNECTION = ("The hub briefly lost its connection to systemd while this was under way. "
                   "It has reconnected: please try again.")
#: How long a call made while the connection is down waits for the reconnection.
RECONNECT_WAIT_SECONDS = 10.0
#: Pause between reconnection attempts: doubling from the first to the last.
RECONNECT_BACKOFF = (0.1, 5.0)

#: A unit property as spawner.py builds it: (name, D-Bus signature, value).
Property = tuple[str, str, Any]
#: Called with (unit name, changed properties) when a watched unit changes.
UnitCallback = Callable[[str, dict[str, Any]], None]
#: Awaited after the connection was lost and made again (signals may have been missed).
ReconnectCallback = Callable[[], Awaitable[None]]

_MATCH_RULES = (
    f"type='signal',sender='{SYSTEMD}',interface='{MANAGER}',member='JobRemoved'",
    # arg0: only the Unit interface's changes (ActiveState is there). The Service interface
    # sends its own, several times larger, for every state change of every unit: during a
    # 150-student burst dbus-next unmarshalled thousands of them on the event loop for nothing.
    f"type='signal',sender='{SYSTEMD}',interface='{PROPERTIES}',member='PropertiesChanged',"
    f"path_namespace='{MANAGER_PATH}/unit',arg0='{UNIT}'",
)


@dataclass(frozen=True)
class UnitState:
    """What systemd says about one unit (Unit and Service interfaces)."""

    name: str
    active_state: str
    sub_state: str = ""
    result: str = ""
    exec_main_code: int = 0
    exec_main_status: int = 0

    @property
    def running(self) -> bool:
        """True while the unit is starting or running."""
        return self.active_state in ("active", "activating", "reloading")


def unit_object_path(name: str) -> str:
    """D-Bus object path of a unit (sd_bus_path_encode: non-alnum bytes become _xx)."""
    return UNIT_PREFIX + "".join(
        chr(b) if chr(b).isalnum() and b < 128 else f"_{b:02x}" for b in name.encode()
    )


def unit_name_from_path(path: str) -> str:
    """Inverse of unit_object_path."""
    label, out, i = path[len(UNIT_PREFIX):], bytearray(), 0
    while i < len(label):
        if label[i] == "_":
            out.append(int(label[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(ord(label[i]))
            i += 1
    return out.decode()


def escape_unit_part(text: str) -> str:
    """systemd-escape(1) for one part of a unit name ('/' -> '-', others -> \\xNN)."""
    out = []
    for i, ch in enumerate(text):
        if ch.isascii() and (ch.isalnum() or ch in ":_" or (ch == "." and i > 0)):
            out.append(ch)
        elif ch == "/":
            out.append("-")
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
    return "".join(out)


def to_variants(properties: Iterable[Property]) -> list[list[Any]]:
    """Turn spawner triples into the a(sv) body StartTransientUnit takes (lists, not tuples)."""
    return [[name, Variant(sig, value)] for name, sig, value in properties]


def _plain(value: Any) -> Any:
    """Unwrap dbus_next Variants recursively into plain Python values."""
    if isinstance(value, Variant):
        return _plain(value.value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class _PatientSocket:
    """The bus socket as dbus-next's writer sees it: a full send buffer writes 0 bytes.

    dbus-next 0.2.3 (Debian 12's and 13's python3-dbus-next) writes with sock.send() on a
    non-blocking socket and treats EAGAIN as fatal: when a burst of calls fills the socket's
    buffer it closes the whole bus connection, and every later call waits for ever
    (altdesktop/python-dbus-next#153, fix unmerged; Debian's python3-dbus-fast has the same
    code). Its writer already handles a short write (it keeps its offset and waits for the
    socket to become writable), so "0 bytes written" turns EAGAIN into exactly that.
    """

    def __init__(self, sock: socket.socket):
        self._sock = sock

    def send(self, data) -> int:
        """socket.send, except that a full buffer (EAGAIN, EINTR) is a write of 0 bytes."""
        try:
            return self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _wait_on_full_socket(bus: MessageBus) -> None:
    """Give the bus's writer the patient socket (see _PatientSocket), where it has one."""
    writer = getattr(bus, "_writer", None)
    if writer is None or not isinstance(getattr(writer, "sock", None), socket.socket):
        log.warning("dbus-next has no _MessageWriter.sock (a newer release?): the EAGAIN "
                    "workaround for python-dbus-next#153 is not applied")
        return
    writer.sock = _PatientSocket(writer.sock)


def _close_socket(bus: MessageBus) -> None:
    """Close a dropped bus's socket: dbus-next only shuts it down, and its file object (from
    makefile) holds the descriptor too."""
    for closable in (getattr(bus, "_stream", None), getattr(bus, "_sock", None)):
        if closable is not None:
            try:
                closable.close()
            except OSError:
                pass


class Systemd:
    """A connection to the system manager with JobRemoved and PropertiesChanged followed.

    The connection heals itself: when it drops, calls in flight and jobs being waited for fail
    with a SystemdError, a new connection is made with the same match rules, and the
    on_reconnect callbacks run so their owners can catch up on signals they missed.
    """

    def __init__(self) -> None:
        self._bus: MessageBus | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._keeper: asyncio.Task | None = None
        self._in_flight = asyncio.Semaphore(MAX_CALLS_IN_FLIGHT)
        #: Job object path -> the future its JobRemoved resolves (with the job's result).
        self._jobs: dict[str, asyncio.Future] = {}
        #: Results of JobRemoved signals that came before anyone waited for the job.
        self._early_jobs: OrderedDict[str, str] = OrderedDict()
        self._watchers: dict[str, UnitCallback] = {}
        self._on_reconnect: list[ReconnectCallback] = []
        #: How many times the connection was lost and made again (tests and status).
        self.reconnects = 0

    async def connect(self) -> None:
        """Connect to the system bus, follow signals, and keep the connection up from now on."""
        self._bus = await self._open()
        self._connected.set()
        self._keeper = asyncio.create_task(self._keep_connected(), name="dbus-keeper")

    def on_reconnect(self, callback: ReconnectCallback) -> None:
        """Await callback() after each reconnection."""
        self._on_reconnect.append(callback)

    async def close(self) -> None:
        """Disconnect from the bus for good."""
        self._closing = True
        if self._keeper is not None:
            self._keeper.cancel()
        if self._bus is not None:
            self._bus.disconnect()
            self._bus = None
        self._connected.clear()

    def drop_connection(self) -> None:
        """Close the bus socket under the client, as a crash of the bus would (fault tests)."""
        if self._bus is not None:
            self._bus._sock.shutdown(socket.SHUT_RDWR)

    def watch(self, name: str, callback: UnitCallback) -> None:
        """Call callback(name, changes) whenever the unit's properties change."""
        self._watchers[unit_object_path(name)] = callback

    def unwatch(self, name: str) -> None:
        """Stop following a unit."""
        self._watchers.pop(unit_object_path(name), None)

    async def start_transient(self, name: str, properties: Iterable[Property]) -> None:
        """StartTransientUnit and wait for its job; raise SystemdError unless the job is done."""
        reply = await self._manager("StartTransientUnit", "ssa(sv)a(sa(sv))",
                                    [name, "fail", to_variants(properties), []])
        await self._job_result(name, "start", reply[0])

    async def stop(self, name: str) -> None:
        """StopUnit and wait for the job; a unit that is not loaded counts as stopped."""
        try:
            reply = await self._manager("StopUnit", "ss", [name, "replace"])
        except NoSuchUnit:
            return
        await self._job_result(name, "stop", reply[0])

    async def reset_failed(self, name: str) -> None:
        """ResetFailedUnit, so a failed transient unit's name can be used again."""
        try:
            await self._manager("ResetFailedUnit", "s", [name])
        except NoSuchUnit:
            pass

    async def state(self, name: str) -> UnitState:
        """Current state of a unit; an unloaded unit is reported as inactive."""
        path = unit_object_path(name)
        unit = await self._get_all(path, UNIT)
        if unit.get("LoadState") == "not-found":
            return UnitState(name, "inactive", "dead")
        service = await self._get_all(path, SERVICE) if name.endswith(".service") else {}
        return UnitState(
            name, unit["ActiveState"], unit["SubState"], service.get("Result", ""),
            service.get("ExecMainCode", 0), service.get("ExecMainStatus", 0))

    async def unit_property(self, name: str, interface: str, prop: str) -> Any:
        """Read one property of a unit (used by tests and diagnostics)."""
        reply = await self._call(SYSTEMD, unit_object_path(name), PROPERTIES, "Get",
                                 "ss", [interface, prop])
        return _plain(reply[0])

    async def list_units(self, pattern: str) -> list[str]:
        """Names of loaded units matching a glob (ListUnitsByPatterns)."""
        reply = await self._manager("ListUnitsByPatterns", "asas", [[], [pattern]])
        return [row[0] for row in reply[0]]

    # -- the connection ------------------------------------------------------------------------

    async def _open(self) -> MessageBus:
        """A new bus connection with match rules added and systemd's signals subscribed.

        A connection that fails half-way is closed: left open, it would still dispatch
        signals, and a later good one would see every JobRemoved twice.
        """
        bus = MessageBus(bus_type=BusType.SYSTEM)
        _wait_on_full_socket(bus)
        try:
            await bus.connect()
            bus.add_message_handler(self._on_message)
            for rule in _MATCH_RULES:
                await self._send(bus, Message(
                    destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                    interface="org.freedesktop.DBus", member="AddMatch", signature="s",
                    body=[rule]))
            await self._send(bus, Message(destination=SYSTEMD, path=MANAGER_PATH,
                                          interface=MANAGER, member="Subscribe"))
        except BaseException:
            _close_socket(bus)
            raise
        return bus

    async def _keep_connected(self) -> None:
        """Wait for the connection to drop; then fail what waited on it and reconnect."""
        while not self._closing:
            bus = self._bus
            try:
                await bus.wait_for_disconnect()
                reason = "closed by the bus"
            except Exception as e:  # dbus-next reports the socket error that ended it
                reason = f"{type(e).__name__}: {e}"
            if self._closing:
                return
            log.error("lost the connection to systemd over D-Bus (%s); reconnecting", reason)
            _close_socket(bus)
            self._bus = None
            self._connected.clear()
            self._fail_waiters(SystemdError(
                f"the hub lost its D-Bus connection to systemd ({reason})",
                user_message=LOST_CONNECTION))
            await self._reconnect()
            for callback in self._on_reconnect:
                try:
                    await callback()
                except Exception:
                    log.exception("catching up after the D-Bus reconnection failed")

    async def _reconnect(self) -> None:
        """Open a new connection, retrying with a doubling pause until it works."""
        pause = RECONNECT_BACKOFF[0]
        while True:
            try:
                self._bus = await self._open()
                break
            except Exception as e:  # no bus yet (dbus-daemon restarting): try again
                log.warning("D-Bus reconnection failed (%s); retrying in %.1fs", e, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, RECONNECT_BACKOFF[1])
        self.reconnects += 1
        self._connected.set()
        log.warning("reconnected to systemd over D-Bus (reconnection %d)", self.reconnects)

    def _fail_waiters(self, error: SystemdError) -> None:
        """Jobs being waited for will send no JobRemoved on this connection: fail them."""
        for fut in self._jobs.values():
            if not fut.done():
                fut.set_exception(error)

    # -- internals ---------------------------------------------------------------------------

    def _expect_job(self, job: str) -> asyncio.Future:
        """The future the job's JobRemoved resolves, already done if the signal came first.

        Jobs are told apart by their object path, never by unit: a stop that cancels a start
        of the same unit must get its own result, not the start's "canceled".
        """
        fut = asyncio.get_running_loop().create_future()
        if job in self._early_jobs:
            fut.set_result(self._early_jobs.pop(job))
        else:
            self._jobs[job] = fut
        return fut

    async def _job_result(self, name: str, verb: str, job: str) -> None:
        """Wait for the job's JobRemoved; its result must be 'done'.

        Never waits for ever on a signal: every JOB_CHECK_SECONDS the job object is looked up,
        and once it is gone without a JobRemoved the unit's state gives the result.
        """
        fut = self._expect_job(job)
        try:
            while True:
                try:
                    result = await asyncio.wait_for(asyncio.shield(fut), JOB_CHECK_SECONDS)
                    break
                except asyncio.TimeoutError:
                    if not await self._job_exists(job):
                        result = await self._result_from_state(name, verb)
                        log.warning("no JobRemoved for the %s job of %s; its state says %s",
                                    verb, name, result)
                        break
        finally:
            self._jobs.pop(job, None)
        if result != "done":
            raise SystemdError(f"{verb} job for {name} ended with result '{result}'"
                               f" (see journalctl -u {name})")

    async def _job_exists(self, job: str) -> bool:
        """Whether a job object is still queued or running."""
        try:
            await self._call(SYSTEMD, job, PROPERTIES, "Get", "ss", [JOB, "State"])
        except SystemdError as e:
            if e.dbus_name.endswith((".UnknownObject", ".UnknownMethod", ".NoSuchJob")):
                return False
            raise
        return True

    async def _result_from_state(self, name: str, verb: str) -> str:
        """What JobRemoved would have said, judged from the unit after its job ended."""
        state = await self.state(name)
        wanted = ("active", "activating", "reloading") if verb == "start" else (
            "inactive", "failed")
        return "done" if state.active_state in wanted else "failed"

    async def _manager(self, method: str, signature: str = "", body: list | None = None) -> list:
        """Call a method on the Manager object."""
        return await self._call(SYSTEMD, MANAGER_PATH, MANAGER, method, signature, body or [])

    async def _get_all(self, path: str, interface: str) -> dict[str, Any]:
        """Properties.GetAll as a plain dict."""
        reply = await self._call(SYSTEMD, path, PROPERTIES, "GetAll", "s", [interface])
        return {k: _plain(v) for k, v in reply[0].items()}

    async def _call(self, dest: str, path: str, iface: str, member: str,
                    signature: str, body: list) -> list:
        """One method call, waiting out a reconnection; errors become typed exceptions here."""
        if self._bus is not None and not self._bus.connected:
            # Dropped, but the keeper has not run yet: wait for its reconnection too.
            self._connected.clear()
        if not self._connected.is_set():
            try:
                await asyncio.wait_for(self._connected.wait(), RECONNECT_WAIT_SECONDS)
            except asyncio.TimeoutError:
                raise SystemdError("not connected to systemd's D-Bus (is dbus.service "
                                   "running? see journalctl -u dbus)") from None
        return await self._send(self._bus, Message(
            destination=dest, path=path, interface=iface, member=member,
            signature=signature, body=body))

    async def _send(self, bus: MessageBus, msg: Message) -> list:
        """Send one call on bus, at most MAX_CALLS_IN_FLIGHT at once; return the reply body."""
        async with self._in_flight:
            if bus is None or not bus.connected:  # a call on a dropped bus is never answered
                raise SystemdError(f"systemd {msg.member}: the D-Bus connection is down")
            try:
                reply = await bus.call(msg)
            except Exception as e:  # the connection dropped under the call
                raise SystemdError(f"systemd {msg.member}: the D-Bus connection was lost "
                                   f"({type(e).__name__}: {e})",
                                   user_message=LOST_CONNECTION) from e
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body else reply.error_name
            error = NoSuchUnit if reply.error_name.endswith(".NoSuchUnit") else SystemdError
            raise error(f"systemd {msg.member}: {text}", dbus_name=reply.error_name)
        return reply.body

    def _on_message(self, msg: Message) -> bool:
        """Dispatch JobRemoved and PropertiesChanged signals; never consumes other messages."""
        if msg.message_type != MessageType.SIGNAL:
            return False
        if msg.member == "JobRemoved" and msg.interface == MANAGER:
            self._on_job_removed(msg.body[1], msg.body[3])
        elif msg.member == "PropertiesChanged" and msg.path in self._watchers:
            changes = {k: _plain(v) for k, v in msg.body[1].items()}
            changes["_interface"] = msg.body[0]
            self._notify(msg.path, changes)
        return False

    def _on_job_removed(self, job: str, result: str) -> None:
        """Resolve the waiter for this job. The signal can come before the waiter: the reply
        that names the job and the signal may be read in one go, before the caller resumes;
        then the result is kept for it (a bounded number of them, oldest dropped first)."""
        fut = self._jobs.pop(job, None)
        if fut is not None:
            if not fut.done():
                fut.set_result(result)
            return
        self._early_jobs[job] = result
        while len(self._early_jobs) > EARLY_JOBS_KEPT:
            self._early_jobs.popitem(last=False)

    def _notify(self, path: str, changes: dict[str, Any]) -> None:
        """Run a watcher callback; its bugs are logged, never break the bus reader."""
        callback = self._watchers[path]
        try:
            callback(unit_name_from_path(path), changes)
        except Exception:
            log.exception("unit watcher for %s failed", unit_name_from_path(path))
