"""A process a test starts and may kill: the server and the agents share how they end."""

from __future__ import annotations

import signal
import subprocess


class ChildProcess:
    process: subprocess.Popen[bytes] | None = None
    stop_timeout = 10.0

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM and a graceful shutdown; SIGKILL if it does not come in time."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.kill()
