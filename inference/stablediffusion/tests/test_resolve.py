"""Model resolution: local dirs load offline; an unreachable model says so recognizably."""

import json
import os
import subprocess
import sys

from conftest import SD_DIR, make_task_dir, run_worker, worker_env

RESOLVE = os.path.join(SD_DIR, "resolve_model.py")


def test_local_dir_resolves(tiny_model):
    r = subprocess.run([sys.executable, RESOLVE, tiny_model], capture_output=True, text=True, env=worker_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"model": tiny_model, "source": "local", "local_files_only": True}


def test_uncached_model_offline_is_unavailable(tmp_path):
    env = worker_env(HF_HOME=str(tmp_path / "hf"))
    r = subprocess.run([sys.executable, RESOLVE, "stabilityai/sd-turbo"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 3
    assert r.stderr.startswith("MODEL_UNAVAILABLE:") and "HF_HUB_OFFLINE" in r.stderr


def test_worker_exits_3_when_model_unavailable(tmp_path):
    d = make_task_dir(tmp_path, "t", {"prompt": "a cat", "model": "stabilityai/sd-turbo"})
    r = run_worker(d, env={"HF_HOME": str(tmp_path / "hf")})
    assert r.returncode == 3, r.stderr
    assert "MODEL_UNAVAILABLE:" in r.stderr
    assert os.listdir(os.path.join(d, "output")) == []
