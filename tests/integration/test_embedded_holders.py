"""The embedded PostgreSQL after a holder is killed with SIGKILL: the next start adopts the running server,
and its clean stop stops it (pgserver alone would keep the dead holder on its list and orphan the server)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from app.db.embedded import HOLDERS_FILE
from tests.support.polling import eventually

# A process that holds the embedded server for ``data_dir``, prints the postmaster's pid, and then either
# waits to be killed ("hold") or stops cleanly ("stop").
HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from app.db.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres(Path(sys.argv[1]))
    embedded.start()
    print(embedded._server.get_pid(), flush=True)
    if sys.argv[2] == "hold":
        time.sleep(600)
    embedded.stop()
    """
)


def holder(data_dir: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data_dir), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    info = tmp_path / "pgdata" / "postmaster.pid"
    if info.exists():  # whatever the test's outcome, no server is left behind
        pid = int(info.read_text().split()[0])
        if psutil.pid_exists(pid):
            os.kill(pid, signal.SIGQUIT)
            psutil.Process(pid).wait(30)


def test_a_clean_stop_after_a_killed_holder_stops_the_server(data_dir: Path) -> None:
    first = holder(data_dir, "hold")
    assert first.stdout is not None
    postmaster = int(first.stdout.readline())
    first.kill()  # SIGKILL: it never lets go
    first.wait(30)
    assert psutil.pid_exists(postmaster)
    assert first.pid in json.loads((data_dir / "pgdata" / HOLDERS_FILE).read_text())

    second = holder(data_dir, "stop")
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err

    assert int(out) == postmaster  # adopted, not started anew
    # `pg_ctl -w stop` returned before the holder exited: the postmaster is gone (or a zombie of its parent).
    eventually(lambda: not _running(postmaster), timeout=10)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
