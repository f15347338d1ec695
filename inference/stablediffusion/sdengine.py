"""Pipeline loading, caching and (batched) text-to-image generation.

An Engine owns the loaded pipelines of one worker process: an LRU of at most
`cache_size` pipelines keyed by model, each remembering which LoRA it has
loaded. It is not thread-safe; the worker drives it from one thread.

Reproducibility rule: every image gets its own CPU torch.Generator seeded with
its own seed, and the pipeline is always called with one prompt per image. So an
image generated in a batch of N equals the same image generated alone, up to
floating-point differences of batched kernels.
"""

import gc
import inspect
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import sdparams
from resolve_model import ModelUnavailable, resolve

log = logging.getLogger("swarmgen.sd")

DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 7.5
# Distilled few-step models (sd-turbo, sdxl-turbo) run in 1 step without CFG.
FAST_MODEL_HINTS = ("turbo",)


class LoraError(sdparams.ParamError):
    """The LoRA named by app.lora could not be loaded."""

    def __init__(self, msg):
        super().__init__("app.lora", msg)


def pick_device(device="auto", dtype="auto"):
    """Returns (torch.device, torch.dtype, dtype name): CUDA fp16, MPS fp16, CPU fp32 by default."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    dev = torch.device(device)
    if dtype == "auto":
        dtype = "fp32" if dev.type == "cpu" else "fp16"
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype not in dtypes:
        raise ValueError(f"dtype {dtype!r}: want auto, fp32, fp16 or bf16")
    return dev, dtypes[dtype], dtype


def _quiet_progress_bars():
    """Loading bars would fill every task log; the worker logs one line instead."""
    try:
        import diffusers.utils.logging as dlog

        dlog.disable_progress_bar()
        import transformers.utils.logging as tlog

        tlog.disable_progress_bar()
    except (ImportError, AttributeError):
        pass


@dataclass
class Entry:
    pipe: object
    model: str
    source: str
    load_s: float
    base_scheduler: object  # the scheduler the model shipped with
    scheduler_name: str = "default"
    lora: str = ""
    lora_scale: float = 1.0
    supports_step_callback: bool = False


@dataclass
class TaskOutput:
    """Images of one task plus what its metadata.json records."""

    images: list
    load_s: float
    infer_s: float
    batch_images: int
    steps: int
    guidance_scale: float
    pipeline: str
    cache_hit: bool
    extra: dict = field(default_factory=dict)


class Engine:
    """Loads pipelines (LRU of cache_size) and runs generations. Not thread-safe."""

    def __init__(self, device="auto", dtype="auto", cache_size=1):
        import torch

        self.torch = torch
        self.device, self.dtype, self.dtype_name = pick_device(device, dtype)
        self.cache_size = max(1, min(int(cache_size), 4))
        self.cache = OrderedDict()
        self.loads = 0  # pipelines loaded since start (warm-mode tests assert on it)
        self.images = 0

    # --- loading ---------------------------------------------------------

    def _load(self, model):
        import diffusers

        r = resolve(model)
        _quiet_progress_bars()
        auto = diffusers.AutoPipelineForText2Image  # lazy import, outside the timed load
        t0 = time.perf_counter()
        kw = dict(dtype=self.dtype, local_files_only=r.local_files_only)
        try:
            pipe = auto.from_pretrained(r.model, **kw)
        except ValueError as e:
            # AutoPipeline only knows the text-to-image families it maps;
            # anything else diffusers can load still gets a chance.
            log.info("AutoPipelineForText2Image refused %s (%s); trying DiffusionPipeline", model, e)
            pipe = diffusers.DiffusionPipeline.from_pretrained(r.model, **kw)
        except OSError as e:
            raise ModelUnavailable(f"cannot load {model!r}: {e}") from e
        pipe = pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        load_s = time.perf_counter() - t0
        self.loads += 1
        params = inspect.signature(pipe.__call__).parameters
        log.info("loaded pipeline %s (%s) from %s in %.2fs on %s/%s", type(pipe).__name__, model, r.source, load_s, self.device, self.dtype_name)
        return Entry(
            pipe=pipe,
            model=model,
            source=r.source,
            load_s=load_s,
            base_scheduler=pipe.scheduler,
            supports_step_callback="callback_on_step_end" in params,
        )

    def get(self, model):
        """Returns (Entry, cache_hit), loading and evicting as needed."""
        if model in self.cache:
            self.cache.move_to_end(model)
            return self.cache[model], True
        while len(self.cache) >= self.cache_size:
            old, _ = self.cache.popitem(last=False)
            log.info("evicting pipeline %s", old)
            gc.collect()
            if self.device.type == "cuda":
                self.torch.cuda.empty_cache()
        entry = self._load(model)
        self.cache[model] = entry
        return entry, False

    def cached_models(self):
        return list(self.cache.keys())

    # --- per-request configuration --------------------------------------

    def _set_scheduler(self, e, name):
        if name == e.scheduler_name:
            return
        if name == "default":
            e.pipe.scheduler = e.base_scheduler
        else:
            import diffusers

            cls_name, extra = sdparams.SCHEDULERS[name]
            cls = getattr(diffusers, cls_name)
            e.pipe.scheduler = cls.from_config(e.base_scheduler.config, **extra)
        e.scheduler_name = name

    def _set_lora(self, e, lora, scale):
        if lora == e.lora and scale == e.lora_scale:
            return
        pipe = e.pipe
        if e.lora:
            pipe.unload_lora_weights()
            e.lora = ""
        if not lora:
            e.lora_scale = 1.0
            return
        if not hasattr(pipe, "load_lora_weights"):
            raise LoraError(f"pipeline {type(pipe).__name__} does not support LoRA")
        try:
            r = resolve(lora)
            kw = {"local_files_only": r.local_files_only}
            if os.path.isfile(r.model):
                pipe.load_lora_weights(os.path.dirname(r.model) or ".", weight_name=os.path.basename(r.model), adapter_name="job", **kw)
            else:
                pipe.load_lora_weights(r.model, adapter_name="job", **kw)
            pipe.set_adapters(["job"], adapter_weights=[scale])
        except Exception as ex:  # noqa: BLE001 - any loader failure is the LoRA's fault here
            try:
                pipe.unload_lora_weights()
            except Exception:  # noqa: BLE001
                pass
            raise LoraError(f"cannot load LoRA {lora!r}: {type(ex).__name__}: {ex}") from ex
        e.lora, e.lora_scale = lora, scale

    @staticmethod
    def defaults_for(model, p):
        """Fills steps/guidance left at 0/-1 from the model's family."""
        fast = any(h in model.lower() for h in FAST_MODEL_HINTS)
        steps = p.steps or (1 if fast else DEFAULT_STEPS)
        guidance = p.guidance_scale if p.guidance_scale >= 0 else (0.0 if fast else DEFAULT_GUIDANCE)
        return steps, guidance

    # --- generation --------------------------------------------------------

    def generate(self, group, on_step=None):
        """Runs one pipeline call for tasks that share batch_key().

        group: list of GenParams with equal batch_key(). on_step(fraction) is
        called after each denoising step. Returns a list of TaskOutput, one per
        task, in order."""
        torch = self.torch
        first = group[0]
        if any(p.batch_key() != first.batch_key() for p in group):
            raise ValueError("generate: tasks in a group must share batch_key()")
        entry, hit = self.get(first.model)
        self._set_scheduler(entry, first.scheduler)
        self._set_lora(entry, first.lora, first.lora_scale)
        steps, guidance = self.defaults_for(first.model, first)
        seeds = [s for p in group for s in p.seeds()]
        n = len(seeds)
        gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        kw = dict(
            prompt=[first.prompt] * n,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=gens,
            output_type="pil",
        )
        if first.negative_prompt:
            kw["negative_prompt"] = [first.negative_prompt] * n
        if first.width:
            kw["width"] = first.width
        if first.height:
            kw["height"] = first.height
        if on_step is not None and entry.supports_step_callback:
            def cb(pipe, i, t, cb_kwargs):
                on_step(min(1.0, (i + 1) / steps))
                return cb_kwargs

            kw["callback_on_step_end"] = cb
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = entry.pipe(**kw)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        infer_s = time.perf_counter() - t0
        images = list(out.images)
        if len(images) != n:
            raise RuntimeError(f"pipeline returned {len(images)} images for {n} prompts")
        self.images += n
        res, k = [], 0
        for p in group:
            res.append(
                TaskOutput(
                    images=images[k : k + p.num_images],
                    load_s=0.0 if hit else entry.load_s,
                    infer_s=infer_s,
                    batch_images=n,
                    steps=steps,
                    guidance_scale=guidance,
                    pipeline=type(entry.pipe).__name__,
                    cache_hit=hit,
                )
            )
            k += p.num_images
        return res
