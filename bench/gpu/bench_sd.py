#!/usr/bin/env python3
"""Stable Diffusion throughput: plain diffusers vs swarmgen's worker, warm and cold.

    python3 bench/gpu/bench_sd.py --out DIR            # GPU: SD 1.5, 512x512, 25 steps, fp16
    python3 bench/gpu/bench_sd.py --out DIR --tiny     # CPU: tiny random pipeline, few steps

Needs torch, transformers and diffusers, and for the devnet path the swarmgen
binary (--swarmgen, default bin/swarmgen, built with Go if missing); no
network: the model is SD 1.5's architecture (configs in bench/gpu/sd15/) with
random weights, saved to a work directory and loaded from there like a real
checkpoint. Timings do not depend on the weights' values. Measured, in images/s:

  (a) plain     one in-process pipeline, images generated one after another
  (e) devnet    jobs through `swarmgen devnet` to one provider's warm worker
                (node WarmPool), submit -> all images in the bucket: n one-image
                jobs one after another, and one job of n replicas (sd_devnet.py)
  (b) warm      worker.py --serve driven over its stdin/stdout protocol, one task per request
  (c) cold      worker.py run once per task (process start + imports + load + inference)
  (d) batch     replicas of one prompt: one request with --batch task dirs vs one at a time

Writes DIR/bench_sd.json, DIR/bench_sd.md and DIR/devnet.log. A section that
would run past --budget-s is skipped and marked so.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import sd_devnet

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SD_DIR = os.path.join(REPO, "inference", "stablediffusion")
WORKER = os.path.join(SD_DIR, "worker.py")
sys.path.insert(0, SD_DIR)

PROMPT = "a watercolor painting of a lighthouse on a cliff at sunset"
# What jobs ask for; the devnet's SWARMGEN_MODEL_MAP points it at the built pipeline.
MODEL_ID = "swarmgen-bench/random-sd"
# StableDiffusionPipeline's and worker.py's default for non-turbo models; the
# template's default is 0 (sd-turbo), so devnet jobs set it.
GUIDANCE = 7.5


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build_sd15(out_dir, device, dtype):
    """SD 1.5 architecture with random weights, saved as a diffusers pipeline."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    import tiny_tokenizer

    cfg = lambda name: json.load(open(os.path.join(HERE, "sd15", name)))  # noqa: E731
    torch.manual_seed(0)
    tok = tiny_tokenizer.build_clip_tokenizer(os.path.join(out_dir + ".tok"))
    te_cfg = cfg("text_encoder_config.json")
    te_cfg.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    # Build directly on the target device: random init of 1B parameters on
    # the CPU would dominate the run.
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(cfg("unet_config.json"))
        vae = AutoencoderKL.from_config(cfg("vae_config.json"))
        text_encoder = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in te_cfg.items() if k not in ("architectures", "model_type")}))
    pipe = StableDiffusionPipeline(
        vae=vae.to(dtype),
        text_encoder=text_encoder.to(dtype),
        tokenizer=tok,
        unet=unet.to(dtype),
        scheduler=PNDMScheduler.from_config(cfg("scheduler_config.json")),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out_dir)
    n = sum(p.numel() for m in (unet, vae, text_encoder) for p in m.parameters())
    del pipe, unet, vae, text_encoder
    if device == "cuda":
        torch.cuda.empty_cache()
    return n


def sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Plain:
    """(a): one in-process pipeline. Measured twice, before and after the
    devnet path, so that drift (a loaded shared machine, GPU clocks) shows
    and the ratio compares like with like: (a) is both runs together."""

    def __init__(self, model_dir, device, dtype, steps, size):
        import torch
        from diffusers import StableDiffusionPipeline

        self.device, self.steps, self.size = device, steps, size
        t0 = time.perf_counter()
        self.pipe = StableDiffusionPipeline.from_pretrained(model_dir, dtype=dtype, local_files_only=True).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        sync()
        self.load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.one(0)  # warm-up: kernels, cuDNN autotuning, allocator
        sync()
        self.warmup_s = time.perf_counter() - t0
        self.runs = []

    def one(self, seed):
        import torch

        self.pipe(PROMPT, num_inference_steps=self.steps, width=self.size, height=self.size, generator=[torch.Generator("cpu").manual_seed(seed)])

    def measure(self, n):
        t0 = time.perf_counter()
        for i in range(n):
            self.one(1 + i)
        sync()
        self.runs.append({"images": n, "seconds": time.perf_counter() - t0})
        return self.result()

    def result(self):
        images = sum(r["images"] for r in self.runs)
        secs = sum(r["seconds"] for r in self.runs)
        return {
            "images": images,
            "seconds": secs,
            "images_per_s": images / secs,
            "runs_images_per_s": [r["images"] / r["seconds"] for r in self.runs],
            "load_s": self.load_s,
            "warmup_s": self.warmup_s,
        }

    def close(self):
        import torch

        del self.pipe
        if self.device == "cuda":
            torch.cuda.empty_cache()


class Worker:
    """worker.py --serve over pipes."""

    def __init__(self, python, env):
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([python, WORKER, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=sys.stderr, env=env)
        self.n = 0
        ev = self.event()
        if ev.get("event") != "ready":
            raise RuntimeError(f"worker: {ev}")
        self.start_s = time.perf_counter() - t0
        self.device, self.dtype = ev.get("device"), ev.get("dtype")

    def event(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited with {self.proc.wait()}")
        return json.loads(line)

    def run(self, dirs):
        self.n += 1
        rid = f"b{self.n}"
        self.proc.stdin.write((json.dumps({"id": rid, "task_dirs": dirs}) + "\n").encode())
        self.proc.stdin.flush()
        while True:
            ev = self.event()
            if ev.get("event") == "done" and ev.get("id") == rid:
                bad = [r for r in ev["results"] if not r["ok"]]
                if bad:
                    raise RuntimeError(f"worker task failed: {bad[0]['error']}")
                return ev
            if ev.get("event") == "error":
                raise RuntimeError(f"worker error: {ev}")

    def stats(self):
        self.proc.stdin.write(b'{"id":"s","op":"stats"}\n')
        self.proc.stdin.flush()
        while True:
            ev = self.event()
            if ev.get("event") == "stats":
                return ev

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


class Tasks:
    """Makes app-contract task directories."""

    def __init__(self, root, model, steps, size):
        self.root, self.model, self.steps, self.size, self.n = root, model, steps, size, 0

    def make(self, seed):
        self.n += 1
        d = os.path.join(self.root, f"task{self.n:04d}")
        os.makedirs(os.path.join(d, "output"))
        os.makedirs(os.path.join(d, "input"))
        app = {"prompt": PROMPT, "model": self.model, "steps": self.steps, "width": self.size, "height": self.size}
        with open(os.path.join(d, "params.json"), "w") as f:
            json.dump({"job": "bench", "task": f"t{self.n}", "index": 0, "count": 1, "attempt": 0, "seed": seed, "app": app}, f)
        return d


def max_pixel_diff(a_dir, b_dir):
    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(os.path.join(a_dir, "output", "image-0.png")).convert("RGB"), dtype=np.int16)
    b = np.asarray(Image.open(os.path.join(b_dir, "output", "image-0.png")).convert("RGB"), dtype=np.int16)
    return int(np.abs(a - b).max())


def bench_warm(w, tasks, n):
    t0 = time.perf_counter()
    first = w.run([tasks.make(0)])  # load + warm-up
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    infer = 0.0
    for i in range(n):
        ev = w.run([tasks.make(1 + i)])
        infer += ev["results"][0]["infer_s"]
    el = time.perf_counter() - t0
    return {
        "images": n,
        "seconds": el,
        "images_per_s": n / el,
        "worker_start_s": w.start_s,
        "first_task_s": first_s,
        "first_task_load_s": first["results"][0]["load_s"],
        "worker_infer_s_mean": infer / n,
        "loads": w.stats()["loads"],
    }


def bench_batch(w, tasks, batch):
    seeds = [1000 + i for i in range(batch)]
    singles = [tasks.make(s) for s in seeds]
    batched = [tasks.make(s) for s in seeds]
    t0 = time.perf_counter()
    for d in singles:
        w.run([d])
    single_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ev = w.run(batched)
    batch_s = time.perf_counter() - t0
    diffs = [max_pixel_diff(a, b) for a, b in zip(singles, batched)]
    return {
        "batch": batch,
        "one_at_a_time_s": single_s,
        "one_at_a_time_images_per_s": batch / single_s,
        "batched_s": batch_s,
        "batched_images_per_s": batch / batch_s,
        "speedup": single_s / batch_s,
        "batch_images_reported": ev["results"][0]["batch_images"],
        "max_pixel_diff_batched_vs_single": max(diffs),
    }


def bench_cold(python, env, tasks, n):
    runs = []
    for i in range(n):
        d = tasks.make(2000 + i)
        e = dict(env, SWARMGEN_TASK_DIR=d, SWARMGEN_PARAMS=os.path.join(d, "params.json"), SWARMGEN_OUTPUT=os.path.join(d, "output"), SWARMGEN_INPUT=os.path.join(d, "input"))
        t0 = time.perf_counter()
        r = subprocess.run([python, WORKER], cwd=d, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        el = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError(f"cold worker exit {r.returncode}: {r.stderr[-1500:]}")
        meta = json.load(open(os.path.join(d, "output", "metadata.json")))
        runs.append({"wall_s": el, "load_s": meta["timings"]["load_s"], "infer_s": meta["timings"]["infer_s"]})
    total = sum(r["wall_s"] for r in runs)
    return {"images": n, "seconds": total, "images_per_s": n / total, "runs": runs}


def ratios(res):
    """The ratios the goals name, with whether each goal is met."""

    def ips(*path):
        r = res
        for k in path:
            r = (r or {}).get(k)
        return r

    plain = ips("plain", "images_per_s")
    jobs, reps = ips("devnet", "jobs", "images_per_s"), ips("devnet", "replicas", "images_per_s")
    one, batched = ips("batch", "one_at_a_time_images_per_s"), ips("batch", "batched_images_per_s")

    def ratio(name, num, den, goal):
        v = num / den if num and den else None
        g = "–"
        if goal:
            g = f"≥ {goal}" + ("" if v is None else (": met" if v >= goal else ": not met"))
        return {"name": name, "value": v, "goal": g, "target": goal}

    return [
        ratio("network path: (e) one-image jobs / (a) plain loop", jobs, plain, 0.97),
        ratio("network path, batched: (e) job of replicas / (a) plain loop", reps, plain, None),
        ratio("batched replicas: (d) one batch / one at a time (warm worker)", batched, one, 1.3),
        ratio("batched replicas over the network: (e) job of replicas / one-image jobs", reps, jobs, 1.3),
    ]


def bench_devnet(args, env, work, model_dir, cuda, steps, size, n):
    """(e): the devnet path; see sd_devnet.py."""
    binary = sd_devnet.find_binary(args.swarmgen, REPO, log)
    denv = dict(
        env,
        SWARMGEN_PYTHON=args.python,
        SWARMGEN_SDWORKER=WORKER,
        SWARMGEN_MODEL_MAP=f"{MODEL_ID}={model_dir}",
    )
    return sd_devnet.bench_devnet(
        binary, args.devnet_nodes, denv, work, args.out, MODEL_ID, PROMPT, steps, size, GUIDANCE, n, args.batch, log, require_gpu=cuda
    )


def markdown(res):
    cfg = res["config"]
    lines = [
        f"Stable Diffusion bench — {cfg['model_kind']}, {cfg['size']}x{cfg['size']}, {cfg['steps']} steps, {cfg['dtype']} on {res['env']['device_name']}",
        "",
        f"`{res['command']}` · {res['date']} · torch {res['env']['torch']}, diffusers {res['env']['diffusers']}",
        "",
        "| mode | images | seconds | images/s | notes |",
        "| --- | ---: | ---: | ---: | --- |",
    ]

    def row(name, r, notes):
        if not r or "skipped" in r or "error" in r:
            lines.append(f"| {name} | – | – | – | {(r or {}).get('skipped') or (r or {}).get('error', 'not run')} |")
            return
        lines.append(f"| {name} | {r['images']} | {r['seconds']:.2f} | {r['images_per_s']:.3f} | {notes} |")

    a, b, c, d = (res.get(k) for k in ("plain", "warm", "cold", "batch"))
    ok = lambda r: r and "error" not in r and "skipped" not in r  # noqa: E731
    row(
        "(a) plain diffusers loop",
        a,
        ok(a) and f"load {a['load_s']:.1f}s, warm-up {a['warmup_s']:.1f}s (not counted); runs before/after the devnet: "
        + " / ".join(f"{x:.3f}" for x in a["runs_images_per_s"]),
    )
    e = res.get("devnet")
    if ok(e):
        nodes = f"{e['nodes']}-node devnet, 1 provider ({e['provider'][-6:]}, {e['jobs']['device'][0]})"
        row(
            f"(e) devnet: {e['jobs']['images']} one-image jobs, one after another",
            e["jobs"],
            f"{nodes}; submit → bucket; devnet start {e['start_s']:.1f}s + warm-up {e['warmup_s']:.1f}s (not counted)",
        )
        row(f"(e) devnet: one job of {e['replicas']['images']} replicas", e["replicas"], f"provider batches {e['replicas']['batch_images']}")
    else:
        row("(e) devnet", e, "")
    row(
        "(b) warm worker (stdin protocol)",
        b,
        ok(b) and f"worker start {b['worker_start_s']:.1f}s + first task {b['first_task_s']:.1f}s (not counted); loads={b['loads']}",
    )
    row("(c) cold worker per task", c, ok(c) and "process start + imports + load + inference, each task")
    if ok(d):
        lines.append(f"| (d) {d['batch']} replicas one at a time | {d['batch']} | {d['one_at_a_time_s']:.2f} | {d['one_at_a_time_images_per_s']:.3f} | warm worker |")
        lines.append(
            f"| (d) {d['batch']} replicas as one batch | {d['batch']} | {d['batched_s']:.2f} | {d['batched_images_per_s']:.3f} | x{d['speedup']:.2f}; max pixel diff vs single {d['max_pixel_diff_batched_vs_single']} |"
        )
    else:
        row("(d) batched replicas", d, "")
    lines.append("")
    lines.append("| ratio | value | goal |")
    lines.append("| --- | ---: | --- |")
    for r in res.get("ratios", []):
        lines.append(f"| {r['name']} | {'–' if r['value'] is None else format(r['value'], '.3f')} | {r['goal']} |")
    lines.append("")
    lines.append(f"total wall time {res['total_s']:.0f}s")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description="Stable Diffusion throughput bench")
    ap.add_argument("--out", required=True, help="directory for bench_sd.json and bench_sd.md")
    ap.add_argument("--tiny", action="store_true", help="tiny random pipeline on CPU (CI-sized)")
    ap.add_argument("--work", help="work directory for the model and task dirs (default: a temp dir)")
    ap.add_argument("--n", type=int, help="images per mode (a) and (b)")
    ap.add_argument("--cold", type=int, help="tasks for mode (c)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--size", type=int)
    ap.add_argument("--python", default=sys.executable, help="interpreter for worker.py (also the devnet's SWARMGEN_PYTHON)")
    ap.add_argument("--swarmgen", help="swarmgen binary for the devnet path (default bin/swarmgen; built with Go if missing)")
    ap.add_argument("--devnet-nodes", type=int, default=2, help="nodes in the devnet (>= 2; 0 skips the devnet path)")
    ap.add_argument("--budget-s", type=float, default=450.0, help="skip sections that would start after this")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()

    try:
        import diffusers
        import torch
    except ImportError as e:
        print(f"bench_sd: needs torch and diffusers ({e}); pip install the diffusers wheel first", file=sys.stderr)
        return 2
    cuda = torch.cuda.is_available() and not args.tiny
    device = "cuda" if cuda else "cpu"
    dtype = torch.float16 if cuda else torch.float32
    steps = args.steps or (25 if not args.tiny else 4)
    size = args.size or (512 if not args.tiny else 64)
    n = args.n or (6 if not args.tiny else 4)
    cold = args.cold if args.cold is not None else 2
    os.makedirs(args.out, exist_ok=True)
    work = args.work or tempfile.mkdtemp(prefix="swarmgen-bench-sd-")
    model_dir = os.path.join(work, "model")

    env = dict(os.environ, HF_HUB_OFFLINE="1", SWARMGEN_SD_LOG="WARNING", PYTHONUNBUFFERED="1")
    if args.tiny:
        env["SWARMGEN_SD_DEVICE"] = "cpu"
    res = {
        "command": "python3 bench/gpu/bench_sd.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "env": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "device_name": torch.cuda.get_device_name(0) if cuda else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)",
            "cuda": torch.version.cuda if cuda else None,
        },
        "config": {"model_kind": "tiny random SD" if args.tiny else "SD 1.5 architecture, random weights", "size": size, "steps": steps, "dtype": "fp16" if cuda else "fp32", "n": n, "cold": cold, "batch": args.batch},
    }

    def over_budget(name):
        el = time.perf_counter() - t_start
        if el > args.budget_s:
            log(f"skipping {name}: {el:.0f}s elapsed, budget {args.budget_s:.0f}s")
            res[name] = {"skipped": f"over time budget ({el:.0f}s > {args.budget_s:.0f}s)"}
            return True
        return False

    log(f"building model in {model_dir} on {device}")
    t0 = time.perf_counter()
    if args.tiny:
        import make_tiny_pipeline

        make_tiny_pipeline.make_tiny_pipeline(model_dir)
        res["config"]["parameters"] = None
    else:
        res["config"]["parameters"] = build_sd15(model_dir, device, dtype)
    res["build_s"] = time.perf_counter() - t0
    tasks = Tasks(os.path.join(work, "tasks"), model_dir, steps, size)

    def section(name, fn):
        if over_budget(name):
            return
        log(f"running {name}")
        try:
            res[name] = fn()
        except Exception as e:  # noqa: BLE001 - report and carry on with other sections
            log(f"{name} failed: {e}")
            res[name] = {"error": f"{type(e).__name__}: {e}"[:2000]}
        log(f"{name}: {json.dumps(res[name])[:300]}")

    plain = None

    def plain_first():
        nonlocal plain
        plain = Plain(model_dir, device, dtype, steps, size)
        return plain.measure(n)

    section("plain", plain_first)
    if args.devnet_nodes:
        section("devnet", lambda: bench_devnet(args, env, work, model_dir, cuda, steps, size, n))
    else:
        res["devnet"] = {"skipped": "--devnet-nodes 0"}
    if plain is not None:
        # The second plain run adds to (a); if it fails, (a) keeps the first.
        if args.devnet_nodes and time.perf_counter() - t_start <= args.budget_s:
            log("running plain again")
            try:
                res["plain"] = plain.measure(n)
            except Exception as e:  # noqa: BLE001
                log(f"plain again failed: {e}")
                res["plain"]["second_run_error"] = f"{type(e).__name__}: {e}"[:500]
        plain.close()
    w = None
    if not over_budget("warm"):
        try:
            w = Worker(args.python, env)
        except Exception as e:  # noqa: BLE001
            res["warm"] = {"error": f"worker start: {e}"}
    if w is not None:
        section("warm", lambda: bench_warm(w, tasks, n))
        section("batch", lambda: bench_batch(w, tasks, args.batch))
        w.close()
    section("cold", lambda: bench_cold(args.python, env, tasks, cold))
    res["total_s"] = time.perf_counter() - t_start
    res["ratios"] = ratios(res)

    with open(os.path.join(args.out, "bench_sd.json"), "w") as f:
        json.dump(res, f, indent=2)
    md = markdown(res)
    with open(os.path.join(args.out, "bench_sd.md"), "w") as f:
        f.write(md)
    print(md)
    return 0 if all("error" not in (res.get(k) or {}) for k in ("plain", "devnet", "warm", "cold", "batch")) else 1


if __name__ == "__main__":
    sys.exit(main())
