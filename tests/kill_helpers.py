"""Run a training call in a child process and SIGKILL it after a given step, as a crash would."""

import os
import signal
import subprocess
import sys
import textwrap


def run_until_killed(imports: str, call: str, step: int, timeout: int = 600) -> None:
    """`call` gets `kill` as its on_step callback; asserts the child died of SIGKILL."""
    script = "\n".join([f"import os, signal, sys\nsys.path.insert(0, {os.getcwd()!r})", imports, textwrap.dedent(f"""
        def kill(step, metrics):
            if step == {step}:
                os.kill(os.getpid(), signal.SIGKILL)
        """), call])
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
