"""launch.py refuses to serve beyond loopback without credentials, in one line."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, gaudi_env


def launch(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "launch.py"), *args], capture_output=True,
                          text=True, timeout=60, env=gaudi_env(env), cwd=REPO_ROOT)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::"])
def test_non_loopback_host_without_auth_is_refused(tmp_path, host):
    p = launch("--workspace", str(tmp_path / "ws"), "--host", host, "--port", "1")
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to serve on" in lines[0] and "--auth" in lines[0]
    assert not (tmp_path / "ws").exists()  # refused before touching anything


def test_bad_auth_value_is_one_line(tmp_path):
    p = launch("--workspace", str(tmp_path / "ws"), "--host", "0.0.0.0", "--auth", "nopassword")
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        "launch.py: error: --auth / GAUDI_AUTH must be USER:PASS"]


def test_loopback_rules():
    sys.path.insert(0, str(REPO_ROOT))
    from launch import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert is_loopback("127.3.4.5")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1") and not is_loopback("example.com")


@pytest.mark.parametrize("value", ["lots", "0"])
def test_bad_upload_limit_is_one_line(tmp_path, value):
    p = launch("--workspace", str(tmp_path / "ws"), "--max-upload-mb", value, "--port", "1")
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "upload limit" in lines[0], p.stderr
    assert not (tmp_path / "ws").exists()  # refused before touching anything
