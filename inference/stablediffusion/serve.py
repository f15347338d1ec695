"""Warm mode: one long-lived worker serving many tasks over stdin/stdout.

Protocol (one JSON object per line; stdout carries only protocol events, every
log line goes to stderr):

  → {"id": "r1", "task_dirs": ["/tasks/a", "/tasks/b"]}   run tasks (app contract dirs)
  → {"id": "s1", "op": "stats"}                           counters
  → {"id": "l1", "op": "load", "model": "org/name"}        load a pipeline ahead of tasks
  ← {"event": "ready", "pid", "device", "dtype"}          once, at start
  ← {"id", "event": "progress", "task_dir", "value"}      per denoising step, value in (0,1]
  ← {"id", "event": "done", "results": [{"task_dir", "ok", "error", "exit_code", "files",
      "load_s", "infer_s", "batch_images"}], "loads"}
  ← {"id", "event": "stats", "loads", "cached", "requests", "tasks", "images", ...}
  ← {"id", "event": "loaded", "model", "load_s", "cache_hit", "loads"}
  ← {"id"?, "event": "error", "error"}                    bad request; the worker keeps serving

Tasks of one request that share model, prompt, negative prompt, size, steps,
guidance, scheduler and LoRA run as one pipeline call (chunks of at most
--max-batch images) with one seeded generator per image. The worker exits 0 on
EOF of stdin.
"""

import json
import logging
import os
import sys
from collections import OrderedDict

import sdparams
import taskio
from sdengine import Engine

log = logging.getLogger("swarmgen.sd.serve")

MAX_LINE = 1 << 20
MAX_TASK_DIRS = 64
MAX_PATH = 4096


class Protocol:
    """Writes events to the protocol stream (the original stdout)."""

    def __init__(self, stream):
        self.stream = stream

    def emit(self, **ev):
        self.stream.write(json.dumps(ev, separators=(",", ":")) + "\n")
        self.stream.flush()


def _take_stdout():
    """Keeps the real stdout for protocol events and sends fd 1 to stderr, so that
    a stray print() in some library cannot corrupt the protocol."""
    proto_fd = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(proto_fd, "w", encoding="utf-8", buffering=1)


def read_line(stream):
    """Returns (line bytes, too_long). Overlong lines are drained to their newline."""
    line = stream.readline(MAX_LINE + 1)
    if len(line) <= MAX_LINE or line.endswith(b"\n"):
        return line, False
    while True:
        rest = stream.readline(MAX_LINE)
        if not rest or rest.endswith(b"\n"):
            return b"", True


class RequestError(ValueError):
    pass


def parse_request(line):
    """Decodes one request line; raises RequestError naming what is wrong."""
    try:
        req = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(f"request is not valid JSON: {e}") from e
    if not isinstance(req, dict):
        raise RequestError("request must be a JSON object")
    rid = req.get("id")
    if rid is not None and not isinstance(rid, (str, int)) or isinstance(rid, bool):
        raise RequestError("request.id must be a string or an integer")
    if isinstance(rid, str) and len(rid) > 256:
        raise RequestError("request.id is longer than 256 characters")
    op = req.get("op", "run")
    if op not in ("run", "stats", "load"):
        raise RequestError(f"request.op {op!r} unknown (want run, stats or load)")
    if op == "load":
        m = req.get("model")
        if not isinstance(m, str) or not m or len(m) > sdparams.MAX_MODEL_CHARS:
            raise RequestError("request.model must be a non-empty string")
    if op == "run":
        dirs = req.get("task_dirs")
        if not isinstance(dirs, list) or not dirs:
            raise RequestError("request.task_dirs must be a non-empty list")
        if len(dirs) > MAX_TASK_DIRS:
            raise RequestError(f"request.task_dirs has {len(dirs)} entries, limit {MAX_TASK_DIRS}")
        for i, d in enumerate(dirs):
            if not isinstance(d, str) or not d or len(d) > MAX_PATH or "\x00" in d:
                raise RequestError(f"request.task_dirs[{i}] must be a non-empty path string")
    return req


class Server:
    def __init__(self, engine, proto, max_batch=8):
        self.engine = engine
        self.proto = proto
        self.max_batch = max(1, max_batch)
        self.requests = 0
        self.tasks = 0

    def stats(self, rid):
        e = self.engine
        self.proto.emit(
            id=rid,
            event="stats",
            loads=e.loads,
            cached=e.cached_models(),
            requests=self.requests,
            tasks=self.tasks,
            images=e.images,
            device=str(e.device),
            dtype=e.dtype_name,
            pid=os.getpid(),
        )

    def load(self, rid, model):
        import worker

        try:
            model = sdparams.validate_model_ref(model)
            entry, hit = self.engine.get(model)
        except Exception as e:  # noqa: BLE001 - reported to the caller
            self.proto.emit(id=rid, event="error", error=worker.error_text(e), exit_code=worker.exit_code_for(e))
            return
        self.proto.emit(id=rid, event="loaded", model=model, load_s=round(0.0 if hit else entry.load_s, 4), cache_hit=hit, loads=self.engine.loads)

    def run(self, rid, dirs):
        self.requests += 1
        results = [None] * len(dirs)
        groups = OrderedDict()
        for i, d in enumerate(dirs):
            try:
                if not os.path.isdir(d):
                    raise sdparams.ParamError("task_dir", f"{d!r} is not a directory")
                p = sdparams.load_params_file(os.path.join(d, "params.json"))
            except sdparams.ParamError as e:
                results[i] = _fail(d, e)
                continue
            groups.setdefault(p.batch_key(), []).append((i, d, p))
        for members in groups.values():
            for chunk in _chunks(members, self.max_batch):
                self._run_group(rid, chunk, results)
        self.tasks += len(dirs)
        self.proto.emit(id=rid, event="done", results=results, loads=self.engine.loads)

    def _run_group(self, rid, chunk, results):
        import worker

        def on_step(f):
            for _, d, _ in chunk:
                self.proto.emit(id=rid, event="progress", task_dir=d, value=round(f, 4))

        try:
            outs = self.engine.generate([p for _, _, p in chunk], on_step)
        except Exception as e:  # noqa: BLE001 - reported per task
            log.warning("generation failed: %s", worker.error_text(e), exc_info=not isinstance(e, sdparams.ParamError))
            for i, d, _ in chunk:
                results[i] = _fail(d, e)
            return
        for (i, d, p), out in zip(chunk, outs):
            try:
                files = taskio.write_outputs(os.path.join(d, "output"), p, out, self.engine)
            except OSError as e:
                results[i] = _fail(d, e)
                continue
            results[i] = {
                "task_dir": d,
                "ok": True,
                "error": "",
                "exit_code": 0,
                "files": files,
                "load_s": round(out.load_s, 4),
                "infer_s": round(out.infer_s, 4),
                "batch_images": out.batch_images,
            }


def _chunks(members, max_images):
    chunk, n = [], 0
    for m in members:
        k = m[2].num_images
        if chunk and n + k > max_images:
            yield chunk
            chunk, n = [], 0
        chunk.append(m)
        n += k
    if chunk:
        yield chunk


def _fail(d, e):
    import worker

    return {"task_dir": d, "ok": False, "error": worker.error_text(e), "exit_code": worker.exit_code_for(e)}


def serve(args, stdin=None, proto_stream=None):
    """Runs the warm-mode loop until EOF on stdin; returns the exit code."""
    proto = Protocol(proto_stream or _take_stdout())
    stdin = stdin or sys.stdin.buffer
    try:
        engine = Engine(args.device, args.dtype, args.cache_size)
    except Exception as e:  # noqa: BLE001
        proto.emit(event="error", error=f"cannot start engine: {e}")
        return 1
    server = Server(engine, proto, int(os.environ.get("SWARMGEN_SD_MAX_BATCH", "8")))
    proto.emit(event="ready", pid=os.getpid(), device=str(engine.device), dtype=engine.dtype_name)
    log.info("serving on %s/%s", engine.device, engine.dtype_name)
    while True:
        line, too_long = read_line(stdin)
        if too_long:
            proto.emit(event="error", error=f"request line over {MAX_LINE} bytes")
            continue
        if not line:
            return 0
        if not line.strip():
            continue
        try:
            req = parse_request(line)
        except RequestError as e:
            proto.emit(event="error", error=str(e))
            continue
        rid = req.get("id")
        if req.get("op") == "stats":
            server.stats(rid)
        elif req.get("op") == "load":
            server.load(rid, req["model"])
        else:
            server.run(rid, req["task_dirs"])
