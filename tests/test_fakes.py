"""The fakes of jobrl_async/testing/ themselves: scripted faults find their target, and the fake
vLLM serves from the command line as the README says."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from jobrl_async.testing.server import Fault, Faults


def fault(kind: str, times: int = 1, target: str | None = None) -> Fault:
    return Fault(kind, times, target, retry_after_ms=50, hang_s=1.0)


def test_a_fault_meets_only_the_requests_it_is_aimed_at_in_order() -> None:
    faults = Faults()
    faults.add(fault("500", target="load"))
    faults.add(fault("429", times=2, target="completions"))
    faults.add(fault("hang"))  # any request
    assert [faults.take("completions").kind for _ in range(3)] == ["429", "429", "hang"]
    assert faults.take("load").kind == "500"  # queued first, still there: another target passed it by
    assert faults.take("load") is None and faults.take("completions") is None


def test_python_m_fake_vllm_serves_until_interrupted(tiny_model_dir: Path) -> None:
    command = [sys.executable, "-m", "jobrl_async.testing.fake_vllm", "--port", "0",
               "--model", str(tiny_model_dir), "--served-model-name", "tiny"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as server:
        try:
            line = server.stdout.readline()  # "fake vLLM serving 'tiny' at http://127.0.0.1:PORT"
            assert line.startswith("fake vLLM serving 'tiny' at http://127.0.0.1:"), server.stderr.read()
            with urllib.request.urlopen(line.split()[-1] + "/v1/models", timeout=10) as reply:
                models = json.load(reply)
            assert [m["id"] for m in models["data"]] == ["tiny"]
            server.send_signal(signal.SIGINT)
            assert server.wait(timeout=30) == 0
        finally:
            if server.poll() is None:
                server.kill()
