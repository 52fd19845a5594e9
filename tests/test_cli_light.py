"""The CLI stays light: `gaudi --help` and catalogue-only commands never import torch."""
import subprocess
import sys

import pytest

PROBE = """
import sys
from gaudi_engine.cli import main
try:
    rc = main({argv!r})
except SystemExit as exc:
    rc = exc.code
heavy = sorted(m for m in ("torch", "open_clip", "timm", "gradio") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""


@pytest.mark.parametrize("argv", [
    ["--help"],
    ["sync", "--help"],
    ["init-db"],
    ["stats"],
    ["export-manifest", "--out", "m.csv"],
    ["descriptions", "export", "--out", "d.json"],
])
def test_catalogue_commands_do_not_import_torch(tmp_path, argv):
    argv = ["--workspace", str(tmp_path), *argv] if argv[0] != "--help" else argv
    if argv[-1] != "--help" and argv[2] != "init-db":
        subprocess.run([sys.executable, "-m", "gaudi_engine", "--workspace", str(tmp_path), "init-db"],
                       check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True,
                         text=True, cwd=tmp_path, timeout=60)
    assert "HEAVY=" in out.stdout, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY=", f"{argv} imported {out.stdout}"
