"""The tracking API served by a child process, so logging overlaps training.

The training process sends plain data through a pipe and never imports MLflow; the child
(`_serve`) owns the `Tracker` and applies the calls in order. It forwards calls and knows
nothing of what they mean: figures arrive as PNG bytes like any artifact.

How runs end: `end` per variant; `end_all` marks every run of this process (Ctrl-C,
SIGTERM); if the training process dies, the child sees the pipe close and marks the runs
still open KILLED. The child ignores SIGINT and SIGTERM: a Ctrl-C reaches the whole
process group, and the child must outlive the parent's clean-up to record it.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig

from losslab.core.errors import LosslabError
from losslab.tracking.uri import check_reachable, compare_url, redact, resolve_uri, ui_command

if TYPE_CHECKING:
    from losslab.tracking.store import RunGroup, Tracker


class _Writer:
    """Child-process side: Tracker calls addressed by variant key instead of run id.

    The trainer never waits for a run id (creating runs would otherwise stall it behind
    the previous variant's logging); `close` returns the keys' RunGroups at the end.
    """

    def __init__(self) -> None:
        self.tracker: Tracker | None = None
        self.groups: dict[str, RunGroup] = {}
        self.open: set[str] = set()

    def open_store(self, uri: str, ui_url: str, root: Path) -> None:
        # Imported here, in the child only: the training process never pays MLflow's ~1.6 s.
        from losslab.tracking.store import Tracker

        self.tracker = Tracker(uri, ui_url, root)
        self.tracker.reap()  # runs of losslab processes on this host that died (SIGKILL)

    def experiment(self, name: str) -> str:
        assert self.tracker is not None
        return self.tracker.experiment(name)

    def start(self, key: str, experiment_id: str, run_name: str, tags: dict, seeds: list[int]) -> None:
        assert self.tracker is not None
        self.groups[key] = self.tracker.start(experiment_id, run_name, tags, seeds)
        self.open.add(key)

    def _run(self, key: str, seed: int | None) -> str:
        group = self.groups[key]
        return group.parent if seed is None else group.seeds[seed]

    def log(self, key: str, seed: int | None, params: Any, tags: Any, summary: Any, curves: Any) -> None:
        assert self.tracker is not None
        self.tracker.log(self._run(key, seed), params, tags, summary, curves)

    def artifact_text(self, key: str, text: str, path: str) -> None:
        assert self.tracker is not None
        self.tracker.artifact_text(self.groups[key].parent, text, path)

    def artifact_bytes(self, key: str, data: bytes, path: str) -> None:
        assert self.tracker is not None
        self.tracker.artifact_bytes(self.groups[key].parent, data, path)

    def end(self, key: str, status: str) -> None:
        assert self.tracker is not None
        if key in self.groups:
            self.tracker.end(self.groups[key], status)
        self.open.discard(key)

    def end_all(self, status: str) -> None:
        """Every run this process created, finished or not (an interrupted scenario)."""
        for key in self.groups:
            self.end(key, status)

    def kill_open(self) -> None:
        for key in list(self.open):
            with contextlib.suppress(Exception):
                self.end(key, "KILLED")


def _serve(conn: Any) -> None:
    """Child process: apply calls from the pipe in order; on EOF mark open runs KILLED."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; EOF tells us it died
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    writer = _Writer()
    deferred: str | None = None  # first error of a call nobody waited for
    while True:
        try:
            name, args, reply = conn.recv()
        except (EOFError, OSError):  # the training process died or gave up
            writer.kill_open()
            return
        try:
            if name == "close":
                if deferred:
                    raise RuntimeError(deferred)
                value = writer.groups
            elif deferred and name not in ("end", "end_all"):
                value = None  # the store already failed: skip the rest, keep ends
            else:
                value = getattr(writer, name)(*args)
            answer = ("ok", value)
        except Exception as e:
            text = str(getattr(e, "message", "") or e).strip().splitlines()
            err = f"{type(e).__name__}: {text[0] if text else ''}" if name != "close" else str(e)
            answer = ("error", err)
            deferred = deferred or (None if reply else err)
        if reply:
            try:
                conn.send(answer)
            except OSError:  # the training process gave up before reading it (BrokenPipe)
                writer.kill_open()
                return
        if name == "close":
            writer.kill_open()
            conn.close()
            return


class TrackerProcess:
    """The tracking API, served by a child process so logging overlaps training.

    Only `experiment` and `close` wait for an answer; everything else is queued. Figures
    are rendered there too: matplotlib never loads in the training process.
    """

    def __init__(self, uri: str, ui_url: str, root: Path) -> None:
        self.uri, self.ui_url = uri, ui_url
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child,), daemon=True, name="losslab-tracking")
        self._proc.start()
        child.close()
        self._pending: list[str] = []
        # A pipe blocks once ~64 KB are unread; a thread feeds it from an unbounded queue
        # so training never waits for the store. The pipe stays: its EOF tells the writer
        # that this process died.
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._send_error: BaseException | None = None
        self._sender = threading.Thread(target=self._pump, daemon=True, name="losslab-tracking-send")
        self._sender.start()
        # Connecting (importing MLflow, migrating a new store) overlaps the caller's own
        # start-up; its result is collected by the next call that waits for a reply.
        self._send("open_store", uri, ui_url, root, reply=True)

    @classmethod
    def open(cls, cfg: DictConfig) -> TrackerProcess:
        uri = resolve_uri(cfg)
        check_reachable(uri)
        return cls(uri, cfg.tracking.ui_url, Path(cfg.paths.root))

    def _pump(self) -> None:
        while (msg := self._outbox.get()) is not None:
            try:
                self._conn.send(msg)
            except BaseException as e:  # writer gone: report on the next waiting call
                self._send_error = e
                return

    def _send(self, name: str, *args: Any, reply: bool) -> None:
        if self._send_error is not None:
            raise LosslabError(f"tracking writer for {redact(self.uri)} died") from None
        self._outbox.put((name, args, reply))
        if reply:
            self._pending.append(name)

    def _call(self, name: str, *args: Any, reply: bool = True) -> Any:
        """Send a call; with reply=True wait for it (and any earlier unanswered call)."""
        self._send(name, *args, reply=reply)
        value = None
        while reply and self._pending:
            self._pending.pop(0)
            try:
                status, value = self._conn.recv()
            except (EOFError, OSError):
                raise LosslabError(f"tracking writer for {redact(self.uri)} died") from None
            if status == "error":
                raise LosslabError(f"tracking store {redact(self.uri)}: {value}")
        return value

    def experiment(self, name: str) -> str:
        return self._call("experiment", name)

    def start(self, key: str, experiment_id: str, run_name: str, tags: dict, seeds: Sequence[int]) -> None:
        self._call("start", key, experiment_id, run_name, tags, list(seeds), reply=False)

    def log(
        self,
        key: str,
        seed: int | None = None,
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
        summary: dict[str, float | None] | None = None,
        curves: dict[str, Any] | None = None,
    ) -> None:
        arrays = {k: np.asarray(v, dtype=np.float64) for k, v in (curves or {}).items()}
        self._call("log", key, seed, params, tags, summary, arrays, reply=False)

    def artifact_text(self, key: str, text: str, path: str) -> None:
        self._call("artifact_text", key, text, path, reply=False)

    def artifact_bytes(self, key: str, data: bytes, path: str) -> None:
        self._call("artifact_bytes", key, data, path, reply=False)

    def end(self, key: str, status: str = "FINISHED") -> None:
        self._call("end", key, status, reply=False)

    def end_all(self, status: str = "KILLED") -> None:
        self._call("end_all", status, reply=False)

    def _stop_sender(self) -> None:
        self._outbox.put(None)
        self._sender.join(timeout=60)

    def close(self) -> dict[str, RunGroup]:
        """Wait for every queued write; return the runs by key; raise if a write failed."""
        try:
            return self._call("close")
        finally:
            self._stop_sender()
            self._proc.join(timeout=60)

    def abort(self) -> None:
        """Stop the writer after a failure: queued calls (FAILED ends among them) are still
        applied, then it sees EOF and marks any run still open KILLED."""
        try:
            self._stop_sender()
            self._conn.close()
        finally:
            self._proc.join(timeout=60)

    def compare_url(self, experiment_id: str, run_ids: Sequence[str]) -> str:
        return compare_url(self.uri, self.ui_url, experiment_id, run_ids)

    def ui_command(self) -> str:
        return ui_command(self.uri, self.ui_url)
