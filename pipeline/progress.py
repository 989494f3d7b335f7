"""Live progress of a running datatrove run, drawn by the driver from the files tasks write.

Tasks write `progress/NNNNN.json` (pipeline.steps.Progress) and `completions/NNNNN` (datatrove). A watcher thread reads
them: a rich progress bar on a terminal, a plain line every `interval` seconds otherwise (CI logs). Works for every
executor whose tasks share the filesystem with the driver.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time


def snapshot(logging_dir: str) -> tuple[int, int, int]:
    """(completed tasks, documents seen, characters seen) so far."""
    done_dir, prog_dir = os.path.join(logging_dir, "completions"), os.path.join(logging_dir, "progress")
    done = len(os.listdir(done_dir)) if os.path.isdir(done_dir) else 0
    docs = chars = 0
    for name in os.listdir(prog_dir) if os.path.isdir(prog_dir) else []:
        try:
            with open(os.path.join(prog_dir, name)) as f:
                state = json.load(f)
        except (OSError, ValueError):
            continue  # being replaced right now
        docs, chars = docs + state["docs"], chars + state["chars"]
    return done, docs, chars


class Watcher:
    """Context manager showing the progress of one run while it executes."""

    def __init__(self, name: str, logging_dir: str, tasks: int, interval: float = 10.0):
        self.name, self.logging_dir, self.tasks, self.interval = name, logging_dir, tasks, interval
        self._stop = threading.Event()
        self.tty = sys.stdout.isatty()

    def _line(self, start: float) -> str:
        done, docs, chars = snapshot(self.logging_dir)
        rate = chars / max(time.monotonic() - start, 1e-6) / 1e6
        return f"{self.name}: {done}/{self.tasks} tasks, {docs:,} docs, {rate:.2f} M chars/s"

    def _loop(self) -> None:
        start = time.monotonic()
        if self.tty:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), transient=True) as bar:
                task = bar.add_task(self.name, total=self.tasks)
                while not self._stop.wait(0.5):
                    bar.update(task, completed=snapshot(self.logging_dir)[0], description=self._line(start))
        else:
            while not self._stop.wait(self.interval):
                print(self._line(start), flush=True)

    def __enter__(self) -> Watcher:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        # Ctrl-C must reach the main thread, not this one (it inherits the blocked mask): see pipeline/executors.py
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self._thread.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
