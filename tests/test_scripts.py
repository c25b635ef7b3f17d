"""Every script under scripts/ still loads: they import magray's modules by name, and a
redesign that moves a module breaks a benchmark nobody runs until the day it is needed."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOAD_ALL = """
import runpy, sys
for path in sys.argv[1:]:
    runpy.run_path(path, run_name="loaded_by_test")  # its main() does not run
"""


def test_every_script_loads():
    scripts = sorted(str(p) for p in (ROOT / "scripts").glob("*.py"))
    assert len(scripts) > 10
    done = subprocess.run([sys.executable, "-c", LOAD_ALL, *scripts], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
