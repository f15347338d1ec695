"""Writing a task's results: output/image-<n>.png and output/metadata.json."""

import json
import os


def write_outputs(out_dir, p, out, engine):
    """Writes images and metadata for one task; returns the file names written.

    p is the task's GenParams, out its sdengine.TaskOutput."""
    import diffusers
    import torch

    os.makedirs(out_dir, exist_ok=True)
    names = []
    size = None
    for i, img in enumerate(out.images):
        name = f"image-{i}.png"
        img.save(os.path.join(out_dir, name), format="PNG")
        names.append(name)
        size = img.size
    meta = {
        "prompt": p.prompt,
        "negative_prompt": p.negative_prompt,
        "seed": p.seed,
        "seeds": p.seeds(),
        "model": p.model,
        "lora": p.lora or None,
        "lora_scale": p.lora_scale if p.lora else None,
        "steps": out.steps,
        "guidance_scale": out.guidance_scale,
        "width": size[0] if size else p.width,
        "height": size[1] if size else p.height,
        "scheduler": p.scheduler,
        "pipeline": out.pipeline,
        "device": str(engine.device),
        "dtype": engine.dtype_name,
        "images": names,
        "batch_images": out.batch_images,
        "timings": {"load_s": round(out.load_s, 4), "infer_s": round(out.infer_s, 4), "cache_hit": out.cache_hit},
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
    }
    meta.update({k: v for k, v in p.extra.items()})
    tmp = os.path.join(out_dir, ".metadata.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, os.path.join(out_dir, "metadata.json"))
    names.append("metadata.json")
    return names
