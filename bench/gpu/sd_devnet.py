"""The devnet path of bench_sd.py: Stable Diffusion jobs through `swarmgen devnet`.

A devnet of N nodes runs in one `swarmgen devnet` process on loopback. Node 0
serves the HTTP API and gateway and submits; every job carries
constraints.peers = [node 1], so exactly one provider runs the tasks, over a
real libp2p stream, on its node's WarmPool: one `worker.py --serve` per
(model, GPU), so one warm pipeline on the machine's GPU, and replicas of one
job that queue together on that provider run as one batch (node/provider.go,
maxBatch 4). Node 0 fetches the results (verified blocks) and assembles the
job's bucket; a job is timed from POST /v1/jobs to the terminal `job` event
on GET /v1/jobs/{id}/events, i.e. until every image is in the bucket.

Measured (images/s), after an untimed warm-up (pipeline load, then a batch):
  jobs      n one-image jobs, each submitted when the previous one completed
  replicas  one job of n replicas (what the network does with num_replicas)
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

# Bounds on what this client reads from the node (it is our own node, but a
# broken one must give a clear error, not a hang or a huge allocation).
MAX_BODY = 8 << 20
MAX_LINE = 1 << 20

# The node is on loopback: never send its requests through an HTTP proxy
# named in the environment.
_open = urllib.request.build_opener(urllib.request.ProxyHandler({})).open


class DevnetError(RuntimeError):
    """The devnet or a job through it did not behave as the bench needs."""


def free_port():
    """A loopback TCP port free at the time of asking."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_binary(path, repo, log):
    """The swarmgen binary: path if given, else repo/bin/swarmgen, built with Go if absent."""
    if path:
        if not os.access(path, os.X_OK):
            raise DevnetError(f"--swarmgen {path}: not an executable file")
        return os.path.abspath(path)
    default = os.path.join(repo, "bin", "swarmgen")
    if os.access(default, os.X_OK):
        return default
    go = shutil.which("go")
    if not go:
        raise DevnetError(f"no swarmgen binary at {default} and no Go toolchain to build one; pass --swarmgen PATH")
    log(f"building {default}")
    env = dict(os.environ, GOFLAGS="-mod=mod")
    r = subprocess.run([go, "build", "-o", default, "./cmd/swarmgen"], cwd=repo, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise DevnetError(f"go build ./cmd/swarmgen: exit {r.returncode}: {r.stderr[-1500:]}")
    return default


def http_json(method, url, body=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with _open(req, timeout=timeout) as resp:
            raw = resp.read(MAX_BODY + 1)
    except urllib.error.HTTPError as e:
        detail = e.read(4096).decode(errors="replace")
        raise DevnetError(f"{method} {url}: HTTP {e.code}: {detail}") from e
    if len(raw) > MAX_BODY:
        raise DevnetError(f"{method} {url}: response over {MAX_BODY} bytes")
    try:
        return json.loads(raw)
    except ValueError as e:
        raise DevnetError(f"{method} {url}: response is not JSON: {raw[:200]!r}") from e


class Devnet:
    """One `swarmgen devnet` process; close() stops it with SIGINT (SIGKILL after a timeout)."""

    def __init__(self, binary, nodes, env, data_dir, log_path, start_timeout=180.0):
        if nodes < 2:
            raise DevnetError(f"devnet needs >= 2 nodes (a submitter and a provider), got {nodes}")
        self.api = f"127.0.0.1:{free_port()}"
        self.gateway = f"127.0.0.1:{free_port()}"
        self.nodes = nodes
        self.log_path = log_path
        self.out_path = log_path + ".stdout"
        t0 = time.perf_counter()
        self._out = open(self.out_path, "wb")
        self._err = open(log_path, "wb")
        cmd = [binary, "devnet", "--nodes", str(nodes), "--api", self.api, "--gateway", self.gateway, "--data-dir", data_dir]
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        try:
            self.node_ids = self._wait_ids(t0 + start_timeout)
            self.provider = self.node_ids[1]
            self.provider_ad = self._wait_sd(self.provider, t0 + start_timeout)
        except BaseException:
            self.close()
            raise
        self.start_s = time.perf_counter() - t0

    def url(self, path):
        return f"http://{self.api}{path}"

    def _check_alive(self, what):
        if self.proc.poll() is not None:
            raise DevnetError(f"devnet exited ({self.proc.returncode}) while {what}: {self.log_tail()}")

    def log_tail(self, n=1500):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log_path) - n))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _wait_ids(self, deadline):
        """Node IDs in order, from the `  node i  <peer id>` lines devnet prints once started."""
        pat = re.compile(r"^\s*node (\d+)\s+(\S+)\s*$")
        while time.perf_counter() < deadline:
            self._check_alive("starting")
            with open(self.out_path, "r", errors="replace") as f:
                text = f.read(1 << 20)
            if "\napi:" in text:
                ids = {int(m.group(1)): m.group(2) for m in map(pat.match, text.splitlines()) if m}
                if sorted(ids) != list(range(self.nodes)):
                    raise DevnetError(f"devnet printed nodes {sorted(ids)}, want 0..{self.nodes - 1}: {text[:500]!r}")
                return [ids[i] for i in range(self.nodes)]
            time.sleep(0.2)
        raise DevnetError(f"devnet did not start in time: {self.log_tail()}")

    def _wait_sd(self, peer, deadline):
        """Waits until node 0's table holds peer offering stable-diffusion; returns its ad row."""
        last = None
        while time.perf_counter() < deadline:
            self._check_alive("waiting for the provider")
            try:
                rows = http_json("GET", self.url("/v1/peers"), timeout=5)
            except (DevnetError, OSError) as e:
                last = e
                time.sleep(0.3)
                continue
            for r in rows:
                # "templates" absent = every built-in; until the node's Python
                # check passes it lists only the others.
                if r.get("peerId") == peer and ("templates" not in r or "stable-diffusion" in r["templates"]):
                    return r
            last = rows
            time.sleep(0.3)
        raise DevnetError(f"provider {peer} did not offer stable-diffusion in time (last /v1/peers: {str(last)[:800]}); log: {self.log_tail()}")

    def run_job(self, body, timeout):
        """Submits body, follows its events to the end; returns (job JSON, seconds submit → terminal)."""
        t0 = time.perf_counter()
        created = http_json("POST", self.url("/v1/jobs"), body)
        jid = created["id"]
        status = self._follow(jid, t0 + timeout)
        el = time.perf_counter() - t0
        job = http_json("GET", self.url(f"/v1/jobs/{jid}"))
        if status != "completed" or job.get("status") != "completed":
            errs = sorted({t.get("error", "") for t in job.get("tasks", []) if t.get("error")})
            raise DevnetError(f"job {jid} ended {status}: {job.get('error', '')} {errs[:3]} {job.get('reasons', [])}")
        return job, el

    def _follow(self, jid, deadline):
        """Reads the job's SSE stream until a `job` event with a terminal status."""
        req = urllib.request.Request(self.url(f"/v1/jobs/{jid}/events"), headers={"Accept": "text/event-stream"})
        # The node sends a keepalive comment every 15 s, so a read timeout
        # above that means the stream is stuck.
        with _open(req, timeout=45) as resp:
            data = []
            while True:
                if time.perf_counter() > deadline:
                    raise DevnetError(f"job {jid}: not finished before the bench's timeout")
                raw = resp.readline(MAX_LINE + 1)
                if not raw:
                    # Stream ended without a terminal event we saw (e.g. we fell
                    # behind): the job's own status has the last word.
                    return http_json("GET", self.url(f"/v1/jobs/{jid}")).get("status")
                if len(raw) > MAX_LINE:
                    raise DevnetError(f"job {jid}: event line over {MAX_LINE} bytes")
                line = raw.decode(errors="replace").rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and data:
                    ev = json.loads("\n".join(data))
                    data = []
                    if ev.get("type") == "job" and ev.get("status") in ("completed", "failed", "cancelled"):
                        return ev["status"]

    def bucket_images(self, job, per_task):
        """Checks the bucket holds per_task images for every task; returns each task's metadata.json."""
        base = (job.get("bucket") or {}).get("url")
        if not base:
            raise DevnetError(f"job {job['id']}: completed without a bucket URL")
        listing = http_json("GET", base + "?format=json")
        names = {e["path"] for e in listing.get("entries", []) if e.get("type") == "file"}
        metas = []
        for t in job["tasks"]:
            i = t["index"]
            want = {f"task-{i}/image-{k}.png" for k in range(per_task)}
            if not want <= names:
                raise DevnetError(f"job {job['id']}: bucket lacks {sorted(want - names)}")
            metas.append(http_json("GET", base + f"task-{i}/metadata.json"))
        return metas

    def close(self, timeout=90.0):
        """SIGINT (what Ctrl-C sends), then SIGKILL of the group if it does not exit in time."""
        rc = self.proc.poll()
        if rc is None:
            try:
                self.proc.send_signal(signal.SIGINT)
                rc = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                rc = self.proc.wait()
        for f in (self._out, self._err):
            f.close()
        return rc


def job_body(model_id, prompt, steps, size, guidance, replicas, seed, provider, timeout_s):
    return {
        "templateID": "stable-diffusion",
        "params": {
            "partitioner": {"num_replicas": replicas},
            "app": {"prompt": prompt, "model": model_id, "steps": steps, "width": size, "height": size, "guidance_scale": guidance},
        },
        "seed": seed,
        "constraints": {"peers": [provider]},
        "maxAttempts": 1,  # a retry would hide a failure inside the timing
        "timeout": f"{int(timeout_s)}s",
    }


def summarize(jobs_and_metas, provider, seconds, images):
    """images/s plus what the provider reported: device, batch sizes, inference time.

    not_infer_s is the wall time not spent in the provider's pipeline calls
    (submit, bid, assignment, worker protocol, PNG encoding, result fetch,
    bucket assembly, events); per job it is the network path's overhead when
    jobs run one after another.
    """
    devices, batches, infer, providers = set(), [], 0.0, set()
    for job, metas in jobs_and_metas:
        providers |= {t.get("provider") for t in job["tasks"]}
        for m in metas:
            devices.add(f"{m.get('device')}/{m.get('dtype')}")
            batches.append(m.get("batch_images"))
            # A batch's tasks each report the whole pipeline call: count a share.
            infer += ((m.get("timings") or {}).get("infer_s") or 0.0) / max(1, m.get("batch_images") or 1)
    if providers != {provider}:
        raise DevnetError(f"tasks ran on {sorted(p or '?' for p in providers)}, want only {provider}")
    return {
        "images": images,
        "seconds": seconds,
        "images_per_s": images / seconds,
        "device": sorted(devices),
        "batch_images": batches,
        "provider_infer_s_sum": infer,
        "not_infer_s_per_job": (seconds - infer) / len(jobs_and_metas),
    }


def bench_devnet(binary, nodes, env, work, out_dir, model_id, prompt, steps, size, guidance, n, batch, log, require_gpu=False, timeout_s=1800.0):
    """Runs the devnet path; returns the result dict. The devnet is always stopped.

    require_gpu: fail unless the provider advertises a GPU (the node's
    WarmPool pins workers to the GPUs its probe found, NVML or nvidia-smi,
    and runs them on the CPU when it found none).
    """
    data_dir = os.path.join(work, "devnet")
    os.makedirs(data_dir, exist_ok=True)
    d = Devnet(binary, nodes, env, data_dir, os.path.join(out_dir, "devnet.log"))
    res = {"nodes": nodes, "provider": d.provider, "provider_gpus": d.provider_ad.get("gpus"), "start_s": d.start_s, "log": d.log_path}
    try:
        log(f"devnet up in {d.start_s:.1f}s; provider {d.provider} gpus={d.provider_ad.get('gpus')}")
        if require_gpu and not d.provider_ad.get("gpus"):
            raise DevnetError(f"provider {d.provider} found no GPU (NVML / nvidia-smi): its warm worker would run on the CPU")
        body = lambda reps, seed: job_body(model_id, prompt, steps, size, guidance, reps, seed, d.provider, timeout_s)  # noqa: E731

        # Warm-up, not timed: the first job starts the provider's worker and
        # loads the pipeline; the second runs a batch once.
        t0 = time.perf_counter()
        job, el = d.run_job(body(1, 0), timeout_s)
        res["warmup_load_job_s"] = el
        job, el = d.run_job(body(min(batch, n), 100), timeout_s)
        res["warmup_batch_job_s"] = el
        res["warmup_batch_images"] = [m.get("batch_images") for m in d.bucket_images(job, 1)]
        res["warmup_s"] = time.perf_counter() - t0
        log(f"devnet warm-up {res['warmup_s']:.1f}s")

        # Checking a bucket happens between jobs, outside the timing.
        done, times = [], []
        for i in range(n):
            job, el = d.run_job(body(1, 1 + i), timeout_s)
            times.append(el)
            done.append((job, d.bucket_images(job, 1)))
        res["jobs"] = summarize(done, d.provider, sum(times), n)
        res["jobs"]["per_job_s"] = [round(x, 4) for x in times]
        log(f"devnet jobs: {json.dumps(res['jobs'])[:300]}")

        job, el = d.run_job(body(n, 1000), timeout_s)
        res["replicas"] = summarize([(job, d.bucket_images(job, 1))], d.provider, el, n)
        log(f"devnet replicas: {json.dumps(res['replicas'])[:300]}")
    finally:
        t0 = time.perf_counter()
        res["exit_code"] = d.close()
        res["stop_s"] = time.perf_counter() - t0
    return res
