"""harness.engine.host_memory: CPU runs keep freed memory (glibc), so large tensors stop page-faulting per step.

The setting is process-wide, so what it does is checked in fresh Python processes: a 64 MiB tensor made and
freed 20 times costs about 16,000 minor page faults each time under glibc's defaults (served by mmap) and none
once freed memory is kept.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest
import torch

from adapters.condense.base import resolve_engine
from harness.engine import host_memory
from harness.engine.options import EngineOptions, engine_notes, resolve_precision
from harness.engine.protocol import create_protocol
from harness.errors import ConfigError

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

PROBE = """
import json, resource, sys, torch
from harness.engine.host_memory import keep_freed_memory
record = keep_freed_memory(sys.argv[1])
faults = []
for _ in range(20):
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(16 << 20, dtype=torch.float32)  # 64 MiB
    t.fill_(1.0)
    del t
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
print(json.dumps({"record": record, "faults": faults}))
"""


def _probe(device: str, malloc: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != host_memory.ENV}
    if malloc is not None:
        env[host_memory.ENV] = malloc
    out = subprocess.run([sys.executable, "-c", PROBE, device], capture_output=True, text=True, env=env, timeout=120,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="the setting applies to glibc only")
def test_kept_memory_stops_page_faults_and_is_recorded():
    kept = _probe("cpu", None)
    assert kept["record"] == {"host_malloc": host_memory.KEPT}
    assert max(kept["faults"][2:]) < 100, kept["faults"]  # reused from the heap: no fresh pages
    system = _probe("cpu", "system")
    assert system["record"] == {"host_malloc": "system defaults (DDBENCH_MALLOC=system)"}
    assert min(system["faults"][2:]) > 10_000, system["faults"]  # mmap per tensor: 16,384 pages of 4 KiB


def test_other_devices_are_left_alone():
    assert host_memory.keep_freed_memory(torch.device("meta")) == {}
    if GLIBC:
        meta = _probe("meta", None)
        assert meta["record"] == {} and min(meta["faults"][2:]) > 10_000


def test_bad_setting_is_refused_with_the_variable_named(monkeypatch):
    monkeypatch.setenv(host_memory.ENV, "jemalloc")
    with pytest.raises(ConfigError, match=r"DDBENCH_MALLOC='jemalloc': expected one of \['keep', 'system'\]"):
        host_memory.requested()
    monkeypatch.setenv(host_memory.ENV, "System")
    assert host_memory.requested() == "system"


def test_cpu_runs_record_the_allocator():
    proto = create_protocol("vico-dc", dataset="mnist")
    for options in (EngineOptions(), EngineOptions.exact()):  # numbers are unchanged, so --exact keeps it too
        _, notes = resolve_precision(proto, options, "cpu")
        assert notes["host_malloc"] == host_memory.keep_freed_memory("cpu")["host_malloc"]
        assert engine_notes(notes)["host_malloc"] == notes["host_malloc"]
        assert "host_malloc" not in resolve_precision(proto, options, "meta")[1]
    for supported in (True, False):
        engine = resolve_engine(EngineOptions(), "cpu", supported=supported)
        assert engine.as_dict()["host_malloc"] == notes["host_malloc"]
        assert "host_malloc" not in engine.key()  # not part of what decides the numbers (checkpoint keys)
