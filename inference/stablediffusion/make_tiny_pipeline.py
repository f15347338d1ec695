#!/usr/bin/env python3
"""Builds a tiny random-weight Stable Diffusion pipeline without any download.

    python make_tiny_pipeline.py OUT_DIR [--seed N]

The result is a normal diffusers StableDiffusionPipeline directory (UNet, VAE,
CLIP text encoder, CLIP tokenizer from a locally generated vocabulary, DDIM
scheduler) that `DiffusionPipeline.from_pretrained(OUT_DIR)` loads. Weights come
from a fixed torch seed, so two builds with the same seed are identical. It keeps
the real architecture's shape rules (VAE scale factor 8, 4 latent channels, a
cross-attention UNet) at a size that runs a 64x64 image in well under a second on
one CPU core. Used by the tests, the CPU bench (`bench/gpu/bench_sd.py --tiny`)
and the offline demo fallback.
"""

import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import tiny_tokenizer  # noqa: E402

DEFAULT_SEED = 1234


def build_tiny_pipeline(seed=DEFAULT_SEED):
    """Returns an in-memory tiny StableDiffusionPipeline (fp32, CPU)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        # Four blocks give the real SD VAE scale factor of 8.
        block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
    )
    with tempfile.TemporaryDirectory() as tok_dir:
        tokenizer = tiny_tokenizer.build_clip_tokenizer(tok_dir)
        # Read everything into memory before the directory goes away.
        tokenizer_state = tokenizer
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=tiny_tokenizer.vocab_size(),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer_state.bos_token_id,
            eos_token_id=tokenizer_state.eos_token_id,
            pad_token_id=tokenizer_state.pad_token_id,
            projection_dim=32,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer_state,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def make_tiny_pipeline(out_dir, seed=DEFAULT_SEED):
    """Builds the tiny pipeline and saves it to out_dir; returns out_dir."""
    pipe = build_tiny_pipeline(seed)
    pipe.save_pretrained(out_dir)
    return out_dir


def make_tiny_lora(pipeline_dir, out_dir, seed=DEFAULT_SEED, rank=4):
    """Writes a random LoRA for the tiny pipeline's UNet attention layers
    (pytorch_lora_weights.safetensors in out_dir, loadable with
    load_lora_weights); returns out_dir. Its B matrices are random, not zero,
    so loading it visibly changes the images."""
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = StableDiffusionPipeline.from_pretrained(pipeline_dir, local_files_only=True)
    pipe.unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in pipe.unet.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.5)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    StableDiffusionPipeline.save_lora_weights(save_directory=out_dir, unet_lora_layers=layers, safe_serialization=True)
    return out_dir


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--lora", metavar="DIR", help="also write a random LoRA for it into DIR")
    args = ap.parse_args(argv)
    make_tiny_pipeline(args.out_dir, args.seed)
    if args.lora:
        make_tiny_lora(args.out_dir, args.lora, args.seed)
    print(os.path.abspath(args.out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
