"""Progress on long commands (issue 15): a tqdm bar per phase on a terminal (checked under a real pty), one line
per finished phase when stderr is a pipe or a log, nothing with --quiet, and stdout clean in every case."""

from __future__ import annotations

import fcntl
import io
import os
import struct
import subprocess
import sys
import termios
import threading

import pytest

from harness.progress import EpochPhases, IterationPhases, create_progress

CMD = [sys.executable, "-m", "harness", "evaluate", "--dataset", "digits", "--ipc", "2", "--epochs", "15",
       "--runs", "2", "--protocol", "vico-dc"]


def test_lines_display_one_line_per_finished_phase_and_resume_note():
    buf = io.StringIO()
    p = create_progress("lines", stream=buf)
    with EpochPhases(p, "train", runs=2) as cb:
        for run in range(2):
            for e in range(1, 4):
                cb(run, e, 3)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("train (run 1/2): done, 3/3 epoch")
    assert lines[1].startswith("train (run 2/2): done, 3/3 epoch")
    buf = io.StringIO()
    with EpochPhases(create_progress("lines", stream=buf), "dynamics") as cb:
        for e in range(5, 8):  # a run that restarted from its epoch-4 checkpoint
            cb.epochs(e, 10)
    out = buf.getvalue().splitlines()
    assert out[0] == "dynamics: resumed after epoch 4 of 10 (checkpoint)"
    assert out[1].startswith("dynamics: done, 7/10 epoch")  # cut short: closed when the block ends
    buf = io.StringIO()
    with EpochPhases(create_progress("quiet", stream=buf), "train") as cb:
        cb(0, 1, 1)
    assert buf.getvalue() == ""


def test_auto_mode_is_lines_off_a_terminal():
    assert create_progress("auto", stream=io.StringIO()).mode == "lines"


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120"}


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pty")
def test_bar_on_a_terminal_and_clean_stdout():
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a 120-column terminal
    chunks: list[bytes] = []

    def drain() -> None:  # read while the command runs: a full pty buffer would block it
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # the pty's other end is closed: everything was read
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.run(CMD, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, env=_env(),
                              timeout=240, check=False)
    finally:
        os.close(slave)
    reader.join(timeout=10)
    os.close(master)
    tty = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, tty
    assert "train (run 1/2)" in tty and "train (run 2/2)" in tty
    assert "16/16" in tty and ("epoch/s" in tty or "s/epoch" in tty)  # tqdm's bar: counts and a rate
    assert "\r" in tty  # the bar redraws in place
    out = proc.stdout.decode()
    assert "mean" in out and "\r" not in out and "epoch/s" not in out  # the results, nothing of the bar


def test_piped_stderr_gets_lines_and_quiet_gets_nothing():
    proc = subprocess.run(CMD, capture_output=True, env=_env(), timeout=240, check=True)
    err = proc.stderr.decode()
    assert "train (run 1/2): done, 16/16 epoch" in err and "train (run 2/2): done, 16/16 epoch" in err
    assert "\r" not in err
    quiet = subprocess.run([*CMD, "--quiet"], capture_output=True, env=_env(), timeout=240, check=True)
    assert quiet.stderr.decode() == "" and quiet.stdout.decode() == proc.stdout.decode()


def test_iteration_phases_one_line_with_loss_and_resume_note():
    buf = io.StringIO()
    with IterationPhases(create_progress("lines", stream=buf), "condense dm") as cb:
        for done in range(1, 4):
            cb(done, 3, {"loss": 0.5 / done, "iteration": done})
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("condense dm: done, 3/3 iteration in ")
    assert lines[0].endswith("(loss=0.1667)")
    buf = io.StringIO()
    with IterationPhases(create_progress("lines", stream=buf), "condense dc") as cb:
        cb(5, 8, {"loss": 1.0, "val_acc": 0.25})  # restarted from its iteration-4 checkpoint, then killed
    out = buf.getvalue().splitlines()
    assert out[0] == "condense dc: resumed after iteration 4 of 8 (checkpoint)"
    assert out[1].startswith("condense dc: done, 5/8 iteration") and out[1].endswith("(loss=1, val_acc=0.25)")


def test_condense_progress_on_stderr_and_quiet(tmp_path):
    cmd = [sys.executable, "-m", "harness", "condense", "--method", "dm", "--dataset", "digits", "--ipc", "1",
           "--iterations", "3", "--param", 'model_kwargs={"width": 8}', "--param", "batch_real=16"]
    proc = subprocess.run([*cmd, "--out", str(tmp_path / "a")], capture_output=True, env=_env(), timeout=240,
                          check=True)
    assert "condense dm: done, 3/3 iteration" in proc.stderr.decode()
    assert proc.stdout.decode().startswith("wrote ") and "[dm]" not in proc.stdout.decode()
    quiet = subprocess.run([*cmd, "--out", str(tmp_path / "b"), "--quiet"], capture_output=True, env=_env(),
                           timeout=240, check=True)
    assert quiet.stderr.decode() == "" and quiet.stdout.decode().startswith("wrote ")
