"""One-shot worker and warm mode, end to end with the tiny random pipeline on CPU."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import WORKER, load_png, make_task_dir, run_worker, worker_env

APP = {"prompt": "a red fox in the snow", "steps": 2, "width": 64, "height": 96}


class Server:
    """A worker.py --serve subprocess and a blocking request helper."""

    def __init__(self, env=None):
        self.proc = subprocess.Popen(
            [sys.executable, WORKER, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=worker_env(**(env or {})),
        )
        self.n = 0
        ev = self.next_event()
        assert ev["event"] == "ready", ev

    def next_event(self):
        line = self.proc.stdout.readline()
        assert line, "worker exited: " + self.proc.stderr.read().decode(errors="replace")[-2000:]
        return json.loads(line)

    def send_raw(self, raw):
        self.proc.stdin.write(raw)
        self.proc.stdin.flush()

    def request(self, **req):
        """Sends req; returns (final event, progress events)."""
        self.n += 1
        req.setdefault("id", f"r{self.n}")
        self.send_raw(json.dumps(req).encode() + b"\n")
        progress = []
        while True:
            ev = self.next_event()
            if ev.get("event") == "progress":
                assert ev["id"] == req["id"]
                progress.append(ev)
                continue
            assert ev.get("id") == req["id"], ev
            return ev, progress

    def close(self):
        self.proc.stdin.close()
        rc = self.proc.wait(timeout=30)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return rc


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    assert s.close() == 0


def test_one_shot_writes_pngs_and_metadata(tmp_path, tiny_model):
    d = make_task_dir(tmp_path, "t0", dict(APP, model=tiny_model, num_images=2), seed=11)
    r = run_worker(d)
    assert r.returncode == 0, r.stderr
    progress = [float(l.split()[1]) for l in r.stdout.splitlines() if l.startswith("::progress ")]
    assert progress == [0.5, 1.0]
    out = os.path.join(d, "output")
    assert sorted(os.listdir(out)) == ["image-0.png", "image-1.png", "metadata.json"]
    a, b = load_png(os.path.join(out, "image-0.png")), load_png(os.path.join(out, "image-1.png"))
    assert a.shape == (96, 64, 3)
    assert a.std() > 1, "image is flat"
    assert np.abs(a - b).mean() > 1, "two images with different seeds are equal"
    meta = json.load(open(os.path.join(out, "metadata.json")))
    assert meta["seeds"] == [11, 12] and meta["steps"] == 2 and (meta["width"], meta["height"]) == (64, 96)
    assert meta["device"] == "cpu" and meta["dtype"] == "fp32" and meta["model"] == tiny_model
    assert meta["timings"]["load_s"] > 0 and meta["timings"]["infer_s"] > 0
    assert meta["task"] == "t0" and meta["job"] == "job1"


def test_same_seed_same_image_across_processes(tmp_path, tiny_model, server):
    # The one-shot run and the warm server are different processes.
    d1 = make_task_dir(tmp_path, "once", dict(APP, model=tiny_model), seed=5)
    d2 = make_task_dir(tmp_path, "warm", dict(APP, model=tiny_model), seed=5)
    d3 = make_task_dir(tmp_path, "other", dict(APP, model=tiny_model), seed=6)
    assert run_worker(d1).returncode == 0
    ev, _ = server.request(task_dirs=[d2])
    assert ev["results"][0]["ok"], ev
    ev, _ = server.request(task_dirs=[d3])
    img = lambda d: load_png(os.path.join(d, "output", "image-0.png"))  # noqa: E731
    assert np.array_equal(img(d1), img(d2))
    assert not np.array_equal(img(d1), img(d3))


def test_warm_mode_loads_once_for_many_tasks(tmp_path, tiny_model, server):
    before, _ = server.request(op="stats")
    dirs = [make_task_dir(tmp_path, f"w{i}", dict(APP, model=tiny_model, prompt=f"prompt {i}"), seed=i) for i in range(3)]
    for d in dirs:
        ev, progress = server.request(task_dirs=[d])
        assert ev["event"] == "done" and ev["results"][0]["ok"], ev
        assert [p["value"] for p in progress] == [0.5, 1.0]
        assert os.path.exists(os.path.join(d, "output", "image-0.png"))
    after, _ = server.request(op="stats")
    assert after["loads"] == max(before["loads"], 1)
    assert after["tasks"] - before["tasks"] == 3
    assert after["cached"] == [tiny_model]


def test_batched_replicas_match_unbatched(tmp_path, tiny_model, server):
    app = dict(APP, model=tiny_model, scheduler="euler_a")  # euler_a also draws noise per step
    batch = [make_task_dir(tmp_path, f"b{i}", app, seed=100 + i) for i in range(3)]
    single = [make_task_dir(tmp_path, f"s{i}", app, seed=100 + i) for i in range(3)]
    ev, progress = server.request(task_dirs=batch)
    assert all(r["ok"] and r["batch_images"] == 3 for r in ev["results"]), ev
    assert len(progress) == 3 * 2
    for d in single:
        ev, _ = server.request(task_dirs=[d])
        assert ev["results"][0]["batch_images"] == 1
    for b, s in zip(batch, single):
        diff = np.abs(load_png(os.path.join(b, "output", "image-0.png")) - load_png(os.path.join(s, "output", "image-0.png")))
        assert diff.max() <= 3, f"batched image differs by up to {diff.max()}"
    a, b = (load_png(os.path.join(d, "output", "image-0.png")) for d in batch[:2])
    assert np.abs(a - b).mean() > 1


def test_serve_survives_bad_requests(tmp_path, tiny_model, server):
    for raw, words in [
        (b"this is not json\n", "not valid JSON"),
        (b"[1,2]\n", "JSON object"),
        (b'{"id": "x", "task_dirs": []}\n', "non-empty list"),
        (b'{"id": "x", "op": "explode"}\n', "unknown"),
        (b'{"task_dirs": ["' + b"a" * (1 << 20) + b'"]}\n', "over"),
    ]:
        server.send_raw(raw)
        ev = server.next_event()
        assert ev["event"] == "error" and words in ev["error"], (raw[:40], ev)
    good = make_task_dir(tmp_path, "good", dict(APP, model=tiny_model))
    bad = make_task_dir(tmp_path, "bad", dict(APP, model=tiny_model, steps=0))
    ev, _ = server.request(task_dirs=[good, bad, str(tmp_path / "missing")])
    ok, badr, missing = ev["results"]
    assert ok["ok"] and not badr["ok"] and not missing["ok"]
    assert badr["exit_code"] == 2 and "app.steps" in badr["error"]
    assert "not a directory" in missing["error"]
    assert os.listdir(os.path.join(bad, "output")) == []


def test_load_op_preloads(tiny_model, server):
    ev, _ = server.request(op="load", model=tiny_model)
    assert ev["event"] == "loaded" and ev["model"] == tiny_model and ev["loads"] >= 1, ev
    again, _ = server.request(op="load", model=tiny_model)
    assert again["cache_hit"] and again["loads"] == ev["loads"] and again["load_s"] == 0
    bad, _ = server.request(op="load", model="/no/such/model")
    assert bad["event"] == "error" and bad["exit_code"] == 2 and "app.model" in bad["error"]


def test_lora_applies_and_errors_are_clear(tmp_path, tiny_model, server):
    import make_tiny_pipeline

    lora_dir = make_tiny_pipeline.make_tiny_lora(tiny_model, str(tmp_path / "lora"))
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    base = make_task_dir(tmp_path, "base", dict(APP, model=tiny_model), seed=3)
    with_lora = make_task_dir(tmp_path, "lora", dict(APP, model=tiny_model, lora=lora_dir), seed=3)
    bad = make_task_dir(tmp_path, "badlora", dict(APP, model=tiny_model, lora=str(broken)), seed=3)
    after = make_task_dir(tmp_path, "after", dict(APP, model=tiny_model), seed=3)
    results = []
    for d in (base, with_lora, bad, after):
        ev, _ = server.request(task_dirs=[d])
        results.append(ev["results"][0])
    assert results[0]["ok"] and results[1]["ok"] and results[3]["ok"], results
    assert not results[2]["ok"] and results[2]["exit_code"] == 2
    assert "param app.lora: cannot load LoRA" in results[2]["error"] and "broken.safetensors" in results[2]["error"]
    img = lambda d: load_png(os.path.join(d, "output", "image-0.png"))  # noqa: E731
    assert np.abs(img(base) - img(with_lora)).mean() > 1, "LoRA did not change the image"
    assert np.array_equal(img(base), img(after)), "LoRA was not unloaded"
