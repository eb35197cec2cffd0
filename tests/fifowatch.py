"""FIFOs as hostile input, without the risk of hanging the suite.

A FIFO given as a file blocks whoever opens it for reading until a writer appears. ``FifoWatch`` supplies that
writer in a thread, which also notes that the open happened; ``release()`` then tells a test whether the code
under test opened the FIFO (it must not) and unblocks the thread either way.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


class FifoWatch:
    """A FIFO with a writer thread blocked in open() until someone opens the FIFO for reading.

    ``release()`` says whether that happened (the command read from it) and unblocks the writer either way,
    so a regression shows up as a failed assertion, never as a hang."""

    def __init__(self, path: Path, content: bytes = b"", *, as_output: bool = False) -> None:
        os.mkfifo(path)
        self.path, self.content, self.as_output = path, content, as_output
        self.opened = threading.Event()
        self.thread = threading.Thread(target=self._drain if as_output else self._feed, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        """For a FIFO given as an *output*: a reader that waits for the command to open it for writing."""
        fd = os.open(self.path, os.O_RDONLY)
        self.opened.set()
        try:
            while os.read(fd, 65536):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)

    def _feed(self) -> None:
        fd = os.open(self.path, os.O_WRONLY)
        self.opened.set()
        try:
            os.write(fd, self.content)
        except OSError:
            pass
        finally:
            os.close(fd)

    def release(self) -> bool:
        was_opened = self.opened.is_set()
        if not was_opened:
            # an output watch's thread is (or will be) a reader blocked in open(): a blocking writer meets it
            flags = os.O_WRONLY if self.as_output else os.O_RDONLY | os.O_NONBLOCK
            fd = os.open(self.path, flags)
            if self.as_output:
                os.close(fd)  # the reader thread sees the end of the stream
                self.thread.join()
            else:
                self.thread.join()
                os.close(fd)
        self.thread.join()
        return was_opened


WATCHES: list[FifoWatch] = []
