#!/usr/bin/env python3
"""swarmgen Stable Diffusion app: text-to-image with Hugging Face diffusers.

One-shot (the app contract):
    worker.py [--device auto|cpu|cuda|mps] [--dtype auto|fp32|fp16|bf16]
reads $SWARMGEN_PARAMS (default ./params.json), writes image-<n>.png and
metadata.json into $SWARMGEN_OUTPUT (default ./output), prints
"::progress <fraction>" per denoising step. Exit codes: 0 done, 2 bad
parameters (nothing written), 3 model unavailable, 1 anything else.

Warm mode:
    worker.py --serve [--cache-size N]
serves many tasks from one process over line-delimited JSON on stdin/stdout
(see docs/stable-diffusion.md and serve.py); logs go to stderr.
"""

import argparse
import logging
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import sdparams  # noqa: E402
from resolve_model import UNAVAILABLE_PREFIX, ModelUnavailable, resolve  # noqa: E402

EXIT_OK, EXIT_ERROR, EXIT_PARAMS, EXIT_UNAVAILABLE = 0, 1, 2, 3


def exit_code_for(exc):
    if isinstance(exc, sdparams.ParamError):
        return EXIT_PARAMS
    if isinstance(exc, ModelUnavailable):
        return EXIT_UNAVAILABLE
    return EXIT_ERROR


def error_text(exc):
    if isinstance(exc, ModelUnavailable):
        return f"{UNAVAILABLE_PREFIX} {exc}"
    if isinstance(exc, sdparams.ParamError):
        return f"bad parameters: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _quiet_libraries():
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import warnings

    warnings.filterwarnings("ignore", message=".*torchvision.*")


def parse_args(argv):
    ap = argparse.ArgumentParser(description="swarmgen Stable Diffusion worker")
    ap.add_argument("--serve", action="store_true", help="warm mode: serve tasks over stdin/stdout")
    ap.add_argument("--device", default=os.environ.get("SWARMGEN_SD_DEVICE", "auto"))
    ap.add_argument("--dtype", default=os.environ.get("SWARMGEN_SD_DTYPE", "auto"), choices=["auto", "fp32", "fp16", "bf16"])
    ap.add_argument("--cache-size", type=int, default=int(os.environ.get("SWARMGEN_SD_CACHE_SIZE", "1")), help="pipelines kept loaded in warm mode (1-4)")
    return ap.parse_args(argv)


def run_once(args):
    """Runs the task of the current directory under the app contract."""
    import taskio

    task_dir = os.environ.get("SWARMGEN_TASK_DIR") or os.getcwd()
    params_path = os.environ.get("SWARMGEN_PARAMS") or os.path.join(task_dir, "params.json")
    out_dir = os.environ.get("SWARMGEN_OUTPUT") or os.path.join(task_dir, "output")
    try:
        p = sdparams.load_params_file(params_path)
    except sdparams.ParamError as e:
        print(error_text(e), file=sys.stderr)
        return EXIT_PARAMS
    try:
        # Fail fast (before importing torch) when the model cannot be had.
        resolve(p.model)
        if p.lora:
            resolve(p.lora)
        from sdengine import Engine

        engine = Engine(args.device, args.dtype, 1)

        def on_step(f):
            print(f"::progress {f:.4f}", flush=True)

        out = engine.generate([p], on_step)[0]
        files = taskio.write_outputs(out_dir, p, out, engine)
    except Exception as e:  # noqa: BLE001 - reported with a category exit code
        logging.getLogger("swarmgen.sd").debug("task failed", exc_info=True)
        print(error_text(e), file=sys.stderr)
        return exit_code_for(e)
    print(f"wrote {', '.join(files)} (load {out.load_s:.2f}s, infer {out.infer_s:.2f}s)", file=sys.stderr)
    return EXIT_OK


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=os.environ.get("SWARMGEN_SD_LOG", "INFO").upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _quiet_libraries()
    if args.serve:
        import serve

        code = serve.serve(args)
        # Skip interpreter teardown (torch's can take seconds): every output
        # file is closed and the protocol stream flushed by now.
        sys.stderr.flush()
        os._exit(code)
    return run_once(args)


if __name__ == "__main__":
    sys.exit(main())
