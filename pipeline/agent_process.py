"""Run one agent CLI as a subprocess in its own process group and stream its stdout.

The caller supplies a `Supervisor` whose hooks are called from the loop: `on_events` with parsed
events, `on_tick` periodically (heartbeat, cancellation, budget); any hook may return a reason to
stop, and the whole process group is then killed. The loop never trusts the agent to exit: on
timeout, stall, fatal stream error or a stop reason it sends SIGTERM to the group, waits a grace
period, then SIGKILL, and after the leader exits it kills whatever of the group is left.
"""

from __future__ import annotations

import errno
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, AnyStr

from .providers.base import OUTPUT_LIMIT, STDERR_EVENTS_LIMIT, Event, Outcome, ProviderError, StreamParser

STDERR_POLL_SECONDS = 0.2  # how often a capturing parser's stderr file is read for new lines


class StopAgent(Exception):
    def __init__(self, outcome: str, reason: str):
        super().__init__(reason)
        self.outcome = outcome  # a StageResult.Outcome value
        self.reason = reason


@dataclass
class ProcessResult:
    outcome: Outcome
    exit_code: int | None
    stop: StopAgent | None  # why TAC-X stopped the agent, if it did
    pgid: int | None


def kill_group(pgid: int, grace: float) -> None:
    """SIGTERM the group, then SIGKILL whatever is still there after `grace` seconds."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def group_members(pgid: int) -> list[int] | None:
    """Live (non-zombie) process ids of process group `pgid`, read from /proc; None when /proc
    cannot be read."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    members = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(int(entry))
    return members


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Zombies still count for killpg(0); look at /proc to ignore them where we can.
    members = group_members(pgid)
    return True if members is None else bool(members)


def pump_lines(stream: IO[AnyStr], *, name: str) -> tuple[queue.Queue[AnyStr | None], threading.Thread]:
    """Copy `stream`'s lines into a queue, then None at its end, from a daemon thread (started):
    a reader of the queue can wait with a timeout, which a read of the stream cannot."""
    lines: queue.Queue[AnyStr | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, name=name, daemon=True)
    reader.start()
    return lines, reader


class StderrLines:
    """The new complete lines of the agent's stderr file since the last call, read with pread at
    an offset (the agent keeps appending; no thread). Bounded: at most `limit` bytes are read in
    all (the file keeps the rest, for the error sentence's tail), a line longer than OUTPUT_LIMIT
    is cut there, and one last line says when the limit was passed."""

    def __init__(self, fd: int, *, limit: int = STDERR_EVENTS_LIMIT):
        self.fd = fd
        self.limit = limit
        self.offset = 0
        self.partial = b""
        self.over = False

    def read(self, *, final: bool = False) -> list[str]:
        if self.over:
            return []
        data = os.pread(self.fd, max(0, self.limit - self.offset), self.offset)
        self.offset += len(data)
        *done, self.partial = (self.partial + data).split(b"\n")
        if len(self.partial) > OUTPUT_LIMIT:
            done.append(self.partial)
            self.partial = b""
        if final and self.partial:
            done.append(self.partial)
            self.partial = b""
        lines = [line.decode("utf-8", errors="replace") for line in done]
        if self.offset >= self.limit and os.fstat(self.fd).st_size > self.limit:
            self.over = True
            lines.append(f"[stderr past {self.limit} bytes is not in the transcript]")
        return lines


def _feed_stdin(proc: subprocess.Popen, data: bytes) -> None:
    """Write `data` to the agent's stdin and close it (in a thread: the agent may read it only
    while we read its stdout). An agent that exits without reading it all is its business."""
    assert proc.stdin is not None
    try:
        proc.stdin.write(data)
    except (BrokenPipeError, OSError):
        pass
    finally:
        try:
            proc.stdin.close()
        except OSError:
            pass


def run_agent(
    argv: list[str],
    *,
    cwd: str,
    env: dict[str, str],
    parser: StreamParser,
    timeout: float,
    stall_timeout: float | None,
    grace: float,
    on_start: Callable[[int], None],
    on_events: Callable[[list[Event]], StopAgent | None],
    on_tick: Callable[[], StopAgent | None],
    tick_seconds: float,
    on_idle: Callable[[], float | None] | None = None,
    stdin_data: bytes | None = None,
) -> ProcessResult:
    """Run one agent attempt. `stdin_data` (the prompt, when it is too long for an argument) is
    written to the agent's stdin, which is then closed; without it stdin is empty.

    `on_idle` is called when the agent has gone quiet; it may return the number of seconds after
    which it wants to be called again (events held back for a batch), or None."""
    stderr_file = tempfile.TemporaryFile()
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL if stdin_data is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            start_new_session=True,  # own session => own process group we can kill whole
        )
    except OSError as exc:
        stderr_file.close()
        if exc.errno == errno.E2BIG:
            # The same argv fails the same way on every retry.
            size = sum(len(os.fsencode(a)) + 1 for a in argv)
            raise ProviderError(f"could not start {argv[0]}: {exc.strerror} ({size} bytes of arguments)", permanent=True) from None
        raise StopAgent("failed", f"could not start {argv[0]}: {exc}") from None
    pgid = proc.pid  # start_new_session makes the child the leader of a new group
    on_start(pgid)
    if stdin_data is not None:
        threading.Thread(target=_feed_stdin, args=(proc, stdin_data), name=f"agent-stdin-{pgid}", daemon=True).start()
    assert proc.stdout is not None
    lines, reader = pump_lines(proc.stdout, name=f"agent-stdout-{pgid}")
    stderr = StderrLines(stderr_file.fileno()) if parser.capture_stderr else None

    def stderr_events(*, final: bool = False) -> list[Event]:
        if stderr is None:
            return []
        return [event for line in stderr.read(final=final) for event in parser.feed_stderr(line)]

    started = time.monotonic()
    last_output = started
    next_tick = started + tick_seconds
    stop: StopAgent | None = None
    eof = False
    idle_due: float | None = None  # when on_idle asked to be called again
    stderr_due = started + STDERR_POLL_SECONDS

    def idle() -> float | None:
        again = on_idle() if on_idle is not None else None
        return None if again is None else time.monotonic() + again

    try:
        while not eof:
            now = time.monotonic()
            if stderr is not None and now >= stderr_due:
                stderr_due = now + STDERR_POLL_SECONDS
                if events := stderr_events():
                    last_output = now  # a program that reports on stderr is not stalled
                    stop = on_events(events)
                    if stop is not None:
                        break
                    if on_idle is not None:
                        idle_due = idle()  # live clients see stderr lines like stdout's
            wait = max(0.0, min(next_tick, started + timeout) - now)
            if idle_due is not None:
                wait = max(0.0, min(wait, idle_due - now))
            try:
                raw = lines.get(timeout=min(wait, 0.25))
            except queue.Empty:
                raw = b""
                if idle_due is not None and time.monotonic() >= idle_due:
                    idle_due = idle()
            if raw is None:
                eof = True
            elif raw:
                last_output = time.monotonic()
                events = parser.feed(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
                if events:
                    stop = on_events(events)
                if stop is None and parser.fatal:
                    stop = StopAgent("failed", parser.fatal)
                if stop is not None:
                    break
                if on_idle is not None and lines.empty():
                    # The agent went quiet: hand what we have to live clients (now, or when the
                    # batch is due: a burst of lines still goes in a few batches).
                    idle_due = idle()
                continue
            now = time.monotonic()
            if now - started >= timeout:
                stop = StopAgent("timed_out", f"timed out after {timeout:g} s")
                break
            if stall_timeout and now - last_output >= stall_timeout:
                stop = StopAgent("stalled", f"stalled: no agent output for {stall_timeout:g} s")
                break
            if now >= next_tick:
                next_tick = now + tick_seconds
                stop = on_tick()
                if stop is not None:
                    break
    finally:
        if stop is not None:
            kill_group(pgid, grace)
        try:
            exit_code = proc.wait(timeout=grace + 10)
        except subprocess.TimeoutExpired:
            kill_group(pgid, 0)
            exit_code = proc.wait()
        # Children the agent left behind (background shells, servers) die with the stage.
        if group_alive(pgid):
            kill_group(pgid, min(grace, 1.0))
        reader.join(timeout=5)
        # Lines that arrived before the kill still belong to the transcript.
        tail: list[Event] = []
        while True:
            try:
                raw = lines.get_nowait()
            except queue.Empty:
                break
            if raw:
                tail.extend(parser.feed(raw.decode("utf-8", errors="replace").rstrip("\r\n")))
        tail.extend(stderr_events(final=True))
        if tail:
            on_events(tail)
        stderr_file.seek(0)
        stderr_tail = stderr_file.read()[-4000:].decode("utf-8", errors="replace")
        stderr_file.close()
    outcome = parser.finish(exit_code=exit_code, stderr_tail=stderr_tail, killed_reason=stop.reason if stop else "")
    return ProcessResult(outcome=outcome, exit_code=exit_code, stop=stop, pgid=pgid)
