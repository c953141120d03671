"""Which packages load which: an account's status (businesses.status) is the businesses package's, and fraud calls it,
not the other way round (a confirmed alert's block goes through it; a reactivation is handed fraud's assessment)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _loaded_after(*modules: str) -> set[str]:
    script = "import importlib, sys\n"
    script += "".join(f"importlib.import_module({m!r})\n" for m in modules)
    script += "print('\\n'.join(m for m in sys.modules if m.startswith('marketplace.')))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False, env=env, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_businesses_services_load_without_fraud():
    loaded = _loaded_after("marketplace.businesses.status", "marketplace.businesses.services")
    assert not {m for m in loaded if m.startswith("marketplace.fraud")}


def test_fraud_and_businesses_load_in_either_order():
    assert "marketplace.businesses.status" in _loaded_after("marketplace.fraud.services")
    assert "marketplace.fraud.services" in _loaded_after("marketplace.businesses.status", "marketplace.fraud.services")
