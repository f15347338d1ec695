"""Validation of a task's params.json for the Stable Diffusion worker.

Everything here is pure Python (no torch import) so that bad input is rejected
fast and the rules can be tested without a model. The input is untrusted: it
comes from a job submitter through the network. Every rule names the parameter
it rejects; unknown parameters are errors, not silently ignored, so a typo like
"step" does not run a job with defaults.
"""

import json
import os
import re
from dataclasses import asdict, dataclass, field

DEFAULT_MODEL = "stabilityai/sd-turbo"

MAX_PARAMS_BYTES = 1 << 20
MAX_PROMPT_CHARS = 2000
MIN_SIDE, MAX_SIDE = 64, 2048
MAX_PIXELS = 2048 * 2048
MAX_STEPS = 200
MAX_GUIDANCE = 50.0
MAX_IMAGES = 8
MAX_MODEL_CHARS = 512
SEED_MOD = 1 << 64

# Scheduler names a job may ask for → (diffusers class name, extra from_config kwargs).
SCHEDULERS = {
    "ddim": ("DDIMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm++_2m": ("DPMSolverMultistepScheduler", {}),
    "dpm++_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "dpm++_sde": ("DPMSolverSinglestepScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "lcm": ("LCMScheduler", {}),
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")

KNOWN_APP_PARAMS = (
    "prompt",
    "negative_prompt",
    "model",
    "steps",
    "guidance_scale",
    "width",
    "height",
    "scheduler",
    "seed",
    "lora",
    "lora_scale",
    "num_images",
)


class ParamError(ValueError):
    """A parameter is missing, unknown, of the wrong type or out of range.

    ``param`` names it (dotted path within params.json)."""

    def __init__(self, param, msg):
        super().__init__(f"param {param}: {msg}")
        self.param = param


@dataclass
class GenParams:
    """A validated request for one task."""

    prompt: str
    negative_prompt: str = ""
    model: str = DEFAULT_MODEL
    steps: int = 0  # 0: chosen from the model (see default_steps)
    guidance_scale: float = -1.0  # <0: chosen from the model
    width: int = 0  # 0: the model's default size
    height: int = 0
    scheduler: str = "default"
    seed: int = 0
    lora: str = ""
    lora_scale: float = 1.0
    num_images: int = 1
    task_seed: int = 0
    extra: dict = field(default_factory=dict)  # job/task ids for metadata

    def batch_key(self):
        """Tasks with equal keys can run as one pipeline call."""
        return (
            self.model,
            self.lora,
            self.lora_scale,
            self.prompt,
            self.negative_prompt,
            self.steps,
            self.guidance_scale,
            self.width,
            self.height,
            self.scheduler,
        )

    def seeds(self):
        """One seed per image: image j of a task uses seed+j (mod 2^64)."""
        return [(self.seed + j) % SEED_MOD for j in range(self.num_images)]

    def to_dict(self):
        return asdict(self)


def _int(app, name, lo, hi):
    v = app[name]
    if isinstance(v, bool) or not isinstance(v, int):
        # Accept integral floats (JSON writers often emit 512.0).
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        else:
            raise ParamError(f"app.{name}", f"must be an integer, got {type(v).__name__}")
    if v < lo or v > hi:
        raise ParamError(f"app.{name}", f"{v} out of range [{lo}, {hi}]")
    return v


def _float(app, name, lo, hi):
    v = app[name]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ParamError(f"app.{name}", f"must be a number, got {type(v).__name__}")
    v = float(v)
    if not (lo <= v <= hi):  # also rejects NaN
        raise ParamError(f"app.{name}", f"{v} out of range [{lo}, {hi}]")
    return v


def _str(app, name, max_chars):
    v = app[name]
    if not isinstance(v, str):
        raise ParamError(f"app.{name}", f"must be a string, got {type(v).__name__}")
    if len(v) > max_chars:
        raise ParamError(f"app.{name}", f"too long: {len(v)} characters, limit {max_chars}")
    if "\x00" in v:
        raise ParamError(f"app.{name}", "contains a NUL character")
    return v


def _model_roots():
    roots = os.environ.get("SWARMGEN_SD_MODEL_ROOTS", "")
    return [os.path.realpath(r) for r in roots.split(os.pathsep) if r]


def validate_model_ref(ref, param="app.model"):
    """A model or LoRA reference: an existing local path or a Hub id.

    When SWARMGEN_SD_MODEL_ROOTS (os.pathsep-separated) is set, a local path
    must lie under one of those roots: a provider decides which of its files a
    job may load."""
    path = os.path.expanduser(ref)
    if os.path.exists(path):
        roots = _model_roots()
        if roots:
            real = os.path.realpath(path)
            if not any(real == r or real.startswith(r + os.sep) for r in roots):
                raise ParamError(param, f"local path {ref!r} is outside the allowed model roots")
        return path
    if ref.startswith(("/", ".", "~")):
        raise ParamError(param, f"local path {ref!r} does not exist")
    if not _HUB_ID.match(ref) or ".." in ref:
        raise ParamError(param, f"{ref!r} is neither an existing local path nor a Hub id like 'org/name'")
    return ref


def parse_app(app, task_seed=0):
    """Validates the "app" object of params.json; returns GenParams or raises ParamError."""
    if not isinstance(app, dict):
        raise ParamError("app", f"must be a JSON object, got {type(app).__name__}")
    unknown = sorted(k for k in app if k not in KNOWN_APP_PARAMS)
    if unknown:
        raise ParamError(f"app.{unknown[0]}", f"unknown parameter (known: {', '.join(KNOWN_APP_PARAMS)})")
    if "prompt" not in app:
        raise ParamError("app.prompt", "required")
    p = GenParams(prompt=_str(app, "prompt", MAX_PROMPT_CHARS))
    if not p.prompt.strip():
        raise ParamError("app.prompt", "must not be empty")
    if "negative_prompt" in app:
        p.negative_prompt = _str(app, "negative_prompt", MAX_PROMPT_CHARS)
    if "model" in app:
        m = _str(app, "model", MAX_MODEL_CHARS)
        if not m:
            raise ParamError("app.model", "must not be empty")
        p.model = validate_model_ref(m)
    if "steps" in app:
        p.steps = _int(app, "steps", 1, MAX_STEPS)
    if "guidance_scale" in app:
        p.guidance_scale = _float(app, "guidance_scale", 0.0, MAX_GUIDANCE)
    for side in ("width", "height"):
        if side in app:
            v = _int(app, side, MIN_SIDE, MAX_SIDE)
            if v % 8:
                raise ParamError(f"app.{side}", f"{v} is not a multiple of 8")
            setattr(p, side, v)
    if p.width and p.height and p.width * p.height > MAX_PIXELS:
        raise ParamError("app.width", f"{p.width}x{p.height} is over {MAX_PIXELS} pixels")
    if "scheduler" in app:
        s = _str(app, "scheduler", 64)
        if s != "default" and s not in SCHEDULERS:
            raise ParamError("app.scheduler", f"unknown scheduler {s!r} (known: default, {', '.join(sorted(SCHEDULERS))})")
        p.scheduler = s
    p.task_seed = task_seed
    if "seed" in app:
        p.seed = _int(app, "seed", 0, SEED_MOD - 1)
    else:
        p.seed = task_seed % SEED_MOD
    if "lora" in app:
        lora = _str(app, "lora", MAX_MODEL_CHARS)
        if lora:
            p.lora = validate_model_ref(lora, "app.lora")
    if "lora_scale" in app:
        p.lora_scale = _float(app, "lora_scale", 0.0, 4.0)
    if "num_images" in app:
        p.num_images = _int(app, "num_images", 1, MAX_IMAGES)
    return p


def parse_params_doc(doc):
    """Validates a decoded params.json document (the app contract)."""
    if not isinstance(doc, dict):
        raise ParamError("params", f"must be a JSON object, got {type(doc).__name__}")
    seed = doc.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not (-(1 << 63) <= seed < (1 << 64)):
        raise ParamError("seed", "must be a 64-bit integer")
    app = doc.get("app", {})
    if app is None:
        app = {}
    p = parse_app(app, task_seed=seed)
    p.extra = {k: doc[k] for k in ("job", "task", "index", "count", "attempt") if k in doc}
    return p


def load_params_file(path):
    """Reads and validates params.json at path (size-limited)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_PARAMS_BYTES + 1)
    except OSError as e:
        raise ParamError("params", f"cannot read {path}: {e.strerror}") from e
    if len(raw) > MAX_PARAMS_BYTES:
        raise ParamError("params", f"{path} is over {MAX_PARAMS_BYTES} bytes")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ParamError("params", f"{path} is not valid JSON: {e}") from e
    return parse_params_doc(doc)
