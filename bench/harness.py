"""What the benchmarks (:mod:`bench.latency`, :mod:`bench.flood`) share around their measurements.

* :class:`Child`: one subprocess of a run, its output in a log file, stopped with SIGTERM, then SIGKILL;
  :func:`start_child_with_clock` starts one that reports ready with a stamp of :mod:`bench.clock`;
* :func:`run_while_alive`: a run's work, cancelled as soon as one of its children exits;
* :func:`run_benchmark`: the entry point's work directory, SIGTERM and Ctrl-C handling, printing (a table or
  one JSON object) and exit status (0 ok, 1 something lost or cut short, 2 setup failed, 130/143 stopped);
* :func:`setup_logging`, and the report's figures of the machine (:func:`round_ms`, :func:`machine_json`,
  :func:`machine_text`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

from bench.clock import check_shared, now_ns

log = logging.getLogger("bench.harness")

REPO_ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0

_PR_SET_PDEATHSIG = 1


# ------------------------------------------------------------------------------------------ processes


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM if this process dies, even by SIGKILL, so nothing is left running."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """A subprocess of the benchmark with its output in a log file; :meth:`stop` is SIGTERM, then SIGKILL."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    async def start(self, argv: Sequence[str], env: dict[str, str], *, stdout_pipe: bool = False) -> None:
        self._log = self.log_path.open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.PIPE,  # closed by stop(): the relay takes end of file as "stop"
            stdout=subprocess.PIPE if stdout_pipe else self._log,
            stderr=self._log,
            env=env,
            cwd=REPO_ROOT,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us; we stop the children in order
            preexec_fn=_die_with_parent,  # prctl only: no locks taken between fork and exec
        )
        log.debug("%s started (pid %d): %s", self.name, self.proc.pid, " ".join(argv))

    async def read_line(self, timeout_s: float) -> str:
        """The next line of the child's stdout (started with ``stdout_pipe``); RuntimeError if it exits first."""
        assert self.proc is not None
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout_s):
                line = await self.proc.stdout.readline()
        except TimeoutError:
            raise RuntimeError(f"{self.name} did not get ready within {timeout_s:.0f} s\n{self.tail()}") from None
        if not line:
            await self.proc.wait()
            raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}\n{self.tail()}")
        return line.decode().strip()

    async def read_json(self, timeout_s: float) -> dict[str, Any]:
        """The next stdout line, as JSON; RuntimeError if the child exits first or says something else."""
        line = await self.read_line(timeout_s)
        try:
            obj = json.loads(line)
        except ValueError:
            raise RuntimeError(f"{self.name} said {line!r} instead of a JSON line\n{self.tail()}") from None
        if not isinstance(obj, dict):
            raise RuntimeError(f"{self.name} said {line!r} instead of a JSON object\n{self.tail()}")
        return obj

    async def pump(self, take: Callable[[str], None]) -> None:
        """Hand every further stdout line to ``take`` until the child closes its stdout."""
        assert self.proc is not None
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            take(line.decode())

    async def wait_for(self, ready: asyncio.Event, timeout_s: float) -> None:
        """Wait for ``ready``; RuntimeError if the child exits first or the time is up."""
        assert self.proc is not None
        exited = asyncio.ensure_future(self.proc.wait())
        became_ready = asyncio.ensure_future(ready.wait())
        try:
            done, _ = await asyncio.wait({exited, became_ready}, timeout=timeout_s, return_when="FIRST_COMPLETED")
        finally:
            exited.cancel()
            became_ready.cancel()
        if became_ready in done:
            return
        if exited in done:
            raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}\n{self.tail()}")
        raise RuntimeError(f"{self.name} did not get ready within {timeout_s:.0f} s\n{self.tail()}")

    async def wait(self) -> int:
        assert self.proc is not None
        return await self.proc.wait()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def stop(self) -> None:
        sig = signal.SIGTERM
        proc = self.proc
        try:
            if proc is not None and proc.returncode is None:
                if proc.stdin is not None:
                    proc.stdin.close()
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
                try:
                    async with asyncio.timeout(STOP_TIMEOUT_S):
                        await proc.wait()
                except TimeoutError:
                    log.warning("%s (pid %d) ignored %s: killing it", self.name, proc.pid, sig.name)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return f"--- {self.name}: no output"
        return f"--- {self.name} ({self.log_path}), last lines:\n" + "\n".join(text.splitlines()[-lines:])


async def start_child_with_clock(child: Child, argv: Sequence[str], env: dict[str, str]) -> dict[str, Any]:
    """Start a child that says ``{"ready": true, "t": <now_ns>}`` first; check that its clock is ours."""
    before = now_ns()
    await child.start(argv, env, stdout_pipe=True)
    ready = await child.read_json(STARTUP_TIMEOUT_S)
    if ready.get("ready") is not True or not isinstance(ready.get("t"), int):
        raise RuntimeError(f"{child.name} said {ready!r} instead of ready\n{child.tail()}")
    check_shared(ready["t"], before, now_ns(), child.name)
    return ready


class ChildExitedError(Exception):
    def __init__(self, child: Child) -> None:
        super().__init__(f"{child.name} exited")
        self.child = child


async def run_while_alive(work: Coroutine[Any, Any, None], children: Sequence[Child]) -> None:
    """Run ``work``; cancel it and raise ChildExitedError as soon as one of ``children`` exits."""
    task = asyncio.ensure_future(work)
    watchers = {asyncio.ensure_future(child.wait()): child for child in children}
    try:
        done, _ = await asyncio.wait({task, *watchers}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ChildExitedError(watchers[next(w for w in watchers if w in done)])
    finally:
        for watcher in watchers:
            watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# ------------------------------------------------------------------------------------------ entry point


class Outcome(Protocol):
    @property
    def ok(self) -> bool: ...


class BenchOptions(Protocol):
    @property
    def json(self) -> bool: ...

    @property
    def keep_dir(self) -> bool: ...


R = TypeVar("R", bound=Outcome)
OptionsT = TypeVar("OptionsT", bound=BenchOptions)


def setup_logging(verbose: bool, *, quiet: Sequence[str] = ()) -> None:
    """Log on stderr, debug with ``verbose``; the ``quiet`` loggers only warnings and worse unless ``verbose``."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    if not verbose:
        for name in quiet:
            logging.getLogger(name).setLevel(logging.WARNING)


async def _run_until_terminated(
    run: Callable[[OptionsT, Path], Coroutine[Any, Any, R]], options: OptionsT, workdir: Path
) -> R:
    """``run(options, workdir)``, cancelled by SIGTERM as it is by Ctrl-C: the children and the broker are stopped."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await run(options, workdir)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def run_benchmark(
    run: Callable[[OptionsT, Path], Coroutine[Any, Any, R]],
    options: OptionsT,
    to_json: Callable[[R], dict[str, Any]],
    to_table: Callable[[R], str],
    *,
    logger: logging.Logger,
    workdir_prefix: str,
    not_ok: str,
) -> int:
    """``run(options, workdir)`` in a fresh work directory; print its results and return the exit status.

    The work directory is removed afterwards unless ``options.keep_dir``. Stdout gets one JSON object
    (``options.json``) or the table, nothing else; ``logger`` (the benchmark's) says on stderr what went wrong,
    and ``not_ok`` when the results are not :attr:`Outcome.ok`.
    """
    workdir = Path(tempfile.mkdtemp(prefix=workdir_prefix))
    try:
        results = asyncio.run(_run_until_terminated(run, options, workdir))
    except (RuntimeError, OSError) as exc:
        logger.error("benchmark setup failed: %s", exc)
        return 2
    except KeyboardInterrupt:
        logger.error("interrupted: everything stopped")
        return 130
    except asyncio.CancelledError:
        logger.error("terminated: everything stopped")
        return 143
    finally:
        if options.keep_dir:
            logger.info("work directory kept: %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(to_json(results)) if options.json else to_table(results), flush=True)
    if not results.ok:
        logger.error("%s: exit status 1", not_ok)
        return 1
    return 0


# ------------------------------------------------------------------------------------------ output


def round_ms(value: float | None) -> float | None:
    """A figure for the JSON report: rounded to the microsecond, None for none or NaN."""
    return None if value is None or math.isnan(value) else round(value, 3)


def machine_json(load_before: float, load_after: float) -> dict[str, Any]:
    """The last keys of a JSON report: the load average (1 min) before and after the run, and the CPUs."""
    return {
        "loadavg_1m_before": round(load_before, 2),
        "loadavg_1m_after": round(load_after, 2),
        "cpus": os.cpu_count(),
    }


def machine_text(load_before: float, load_after: float) -> str:
    """The end of a table's last line: the load average (1 min) before and after the run, and the CPUs."""
    return f"load average (1 min) {load_before:.2f} before, {load_after:.2f} after, {os.cpu_count()} CPUs"
