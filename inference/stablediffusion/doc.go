// Package stablediffusion runs the Python diffusers worker (worker.py in this
// directory) for swarmgen's Stable Diffusion app.
//
// One-shot runs go through the ordinary process or docker executor with
// worker.py as the app. WarmPool keeps long-lived `worker.py --serve`
// processes, one per (model, GPU), so a model loads once per node instead of
// once per task, and runs replicas of one prompt as one batched pipeline call.
// The wire protocol between WarmPool and worker.py is line-delimited JSON on
// the worker's stdin/stdout (see serve.py and docs/stable-diffusion.md).
package stablediffusion
