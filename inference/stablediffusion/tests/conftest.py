"""Shared fixtures: the tiny pipeline (built once per session) and task dirs."""

import json
import os
import subprocess
import sys

import pytest

SD_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if SD_DIR not in sys.path:
    sys.path.insert(0, SD_DIR)

WORKER = os.path.join(SD_DIR, "worker.py")


def worker_env(**extra):
    """Environment for worker subprocesses: offline, one thread (2 shared cores)."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", SWARMGEN_SD_LOG="WARNING", PYTHONUNBUFFERED="1")
    env.pop("SWARMGEN_SD_MODEL_ROOTS", None)
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    import make_tiny_pipeline

    out = tmp_path_factory.mktemp("tiny-sd")
    return make_tiny_pipeline.make_tiny_pipeline(str(out))


def make_task_dir(root, name, app, seed=7, **doc):
    """Creates an app-contract task directory and returns its path."""
    d = os.path.join(str(root), name)
    os.makedirs(os.path.join(d, "input"), exist_ok=True)
    os.makedirs(os.path.join(d, "output"), exist_ok=True)
    body = {"job": "job1", "task": name, "index": 0, "count": 1, "attempt": 0, "seed": seed, "app": app}
    body.update(doc)
    with open(os.path.join(d, "params.json"), "w", encoding="utf-8") as f:
        json.dump(body, f)
    return d


def run_worker(task_dir, *args, env=None, timeout=180):
    """Runs worker.py once under the app contract in task_dir."""
    e = worker_env()
    e.update(
        SWARMGEN_TASK_DIR=task_dir,
        SWARMGEN_PARAMS=os.path.join(task_dir, "params.json"),
        SWARMGEN_INPUT=os.path.join(task_dir, "input"),
        SWARMGEN_OUTPUT=os.path.join(task_dir, "output"),
    )
    if env:
        e.update(env)
    return subprocess.run([sys.executable, WORKER, *args], cwd=task_dir, env=e, capture_output=True, text=True, timeout=timeout)


def load_png(path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)
