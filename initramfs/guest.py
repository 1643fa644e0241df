"""Runs inside the guest, after init chroots into the host's root: reads the
command (argv, cwd, environment) from a JSON file and runs it without any
shell, returning its exit status (128+N for signal N, as a shell would)."""

import json
import os
import subprocess
import sys

with open(sys.argv[1]) as f:
    cmd = json.load(f)
env = dict(cmd["env"])
env.setdefault("HOME", "/tmp")
try:
    rc = subprocess.call(cmd["argv"], cwd=cmd["cwd"], env=env)
except OSError as e:
    print(f"quark-guest: cannot run {cmd['argv'][0]}: {e}", flush=True)
    rc = 127
sys.stdout.flush()
os._exit(rc if rc >= 0 else 128 - rc)
