"""Which holders of the embedded PostgreSQL count as alive when their pids are checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from app.db import embedded


def test_a_process_we_may_not_inspect_is_alive_and_a_gone_one_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    others = 424242
    real = psutil.Process

    def process(pid: int) -> psutil.Process:
        if pid == others:  # another user's process: psutil may not read its status
            raise psutil.AccessDenied(pid)
        return real(pid)

    monkeypatch.setattr(embedded.psutil, "Process", process)
    holders = tmp_path / "holders.json"
    holders.write_text(json.dumps([os.getpid(), gone.pid, others]))
    embedded._forget_dead_holders(holders)
    assert json.loads(holders.read_text()) == [os.getpid(), others]
