"""Cells of a grid shared between processes: claims, failure records, and the state of a cell.

Sharing: before running a cell a process takes its claim, `<out>/.claims/<run_id>.claim`, an
exclusive `flock` on a file that names the host and pid. The kernel drops the lock when the process
dies (even by SIGKILL), so a stale claim from a dead process is simply taken over; two `rbols matrix`
processes on one folder (or N local workers) never run one cell at once. Over a network file system
this needs working `flock` (NFSv4 and Lustre have it; check yours).

Failures: a cell that raises is recorded in `<out>/.failed/<run_id>.json` (error, traceback, host).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from robustbench_ols import store
from robustbench_ols.common.errors import DataError
from robustbench_ols.spec import EvalSpec, RunSpec
from robustbench_ols.store import evals as evals_store


class Claim:
    """An exclusive, process-lifetime claim on one cell: flock on `<out>/.claims/<run_id>.claim`."""

    def __init__(self, out: Path, run_id: str):
        self.path = Path(out) / ".claims" / f"{run_id}.claim"
        self.fd = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:  # the holder before us may have released (unlinked) it while we waited: retry
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode())
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # before unlocking: a waiter then sees a new inode
            os.close(self.fd)
            self.fd = None

    def holder(self) -> dict | None:
        """Who holds it now (host, pid), or None when nobody does."""
        if not self.path.exists():
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    return json.loads(Path(self.path).read_text() or "{}")
                except (OSError, ValueError):
                    return {}
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None  # a file from a dead process: free
        finally:
            os.close(fd)


def failure_path(out: Path, run_id: str) -> Path:
    return out / ".failed" / f"{run_id}.json"


def cell_state(out: Path, spec: RunSpec, ev: EvalSpec) -> str:
    """done | needs-eval | unreadable (DONE, but metrics.json cannot be read: `rbols repair`) | failed | running |
    partial | todo."""
    d = out / spec.run_id
    if (d / "DONE").exists():
        try:
            own = store.read_metrics(d).get("eval_id")
        except DataError:
            return "unreadable"
        return "done" if own == ev.eval_id or evals_store.eval_record_path(d, ev.eval_id).exists() else "needs-eval"
    if failure_path(out, spec.run_id).exists():
        return "failed"
    if Claim(out, spec.run_id).holder() is not None:
        return "running"
    if (d / "checkpoint.pt").exists() or (d / "metrics.json").exists():
        return "partial"
    return "todo"


def record_failure(out: Path, spec: RunSpec, error: BaseException | str, tb: str = "") -> None:
    path = failure_path(out, spec.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    store.write_json(path, {"run_id": spec.run_id, "spec": spec.to_dict(), "error": str(error),
                      "type": type(error).__name__ if not isinstance(error, str) else "error", "traceback": tb,
                      "host": socket.gethostname(), "pid": os.getpid(), "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
