"""Parameter validation: every rule names the parameter it rejects."""

import json
import os
import random

import pytest

import sdparams
from conftest import make_task_dir, run_worker

BAD_APPS = [
    ({}, "app.prompt", "required"),
    ({"prompt": ""}, "app.prompt", "empty"),
    ({"prompt": 5}, "app.prompt", "string"),
    ({"prompt": "x" * (sdparams.MAX_PROMPT_CHARS + 1)}, "app.prompt", "too long"),
    ({"prompt": "a", "negative_prompt": ["x"]}, "app.negative_prompt", "string"),
    ({"prompt": "a", "step": 4}, "app.step", "unknown parameter"),
    ({"prompt": "a", "steps": 0}, "app.steps", "out of range"),
    ({"prompt": "a", "steps": 10_000}, "app.steps", "out of range"),
    ({"prompt": "a", "steps": "4"}, "app.steps", "integer"),
    ({"prompt": "a", "steps": True}, "app.steps", "integer"),
    ({"prompt": "a", "steps": 2.5}, "app.steps", "integer"),
    ({"prompt": "a", "guidance_scale": -1}, "app.guidance_scale", "out of range"),
    ({"prompt": "a", "guidance_scale": float("nan")}, "app.guidance_scale", "out of range"),
    ({"prompt": "a", "width": 65}, "app.width", "out of range" if 65 < sdparams.MIN_SIDE else "multiple of 8"),
    ({"prompt": "a", "width": 100}, "app.width", "multiple of 8"),
    ({"prompt": "a", "height": 32}, "app.height", "out of range"),
    ({"prompt": "a", "height": 4096}, "app.height", "out of range"),
    ({"prompt": "a", "scheduler": "warp"}, "app.scheduler", "unknown scheduler"),
    ({"prompt": "a", "seed": -1}, "app.seed", "out of range"),
    ({"prompt": "a", "seed": 1 << 64}, "app.seed", "out of range"),
    ({"prompt": "a", "num_images": 0}, "app.num_images", "out of range"),
    ({"prompt": "a", "num_images": 99}, "app.num_images", "out of range"),
    ({"prompt": "a", "model": "not a model id!"}, "app.model", "neither"),
    ({"prompt": "a", "model": "/no/such/dir"}, "app.model", "does not exist"),
    ({"prompt": "a", "model": "../../no-such-model-dir"}, "app.model", "does not exist"),
    ({"prompt": "a", "lora": "/no/such/lora.safetensors"}, "app.lora", "does not exist"),
    ({"prompt": "a", "lora_scale": 9}, "app.lora_scale", "out of range"),
    ("a cat", "app", "JSON object"),
]


@pytest.mark.parametrize("app,param,words", BAD_APPS)
def test_bad_app_params(app, param, words):
    with pytest.raises(sdparams.ParamError) as ei:
        sdparams.parse_app(app)
    assert ei.value.param == param
    assert words in str(ei.value)
    assert str(ei.value).startswith(f"param {param}:")


def test_defaults_and_task_seed():
    p = sdparams.parse_params_doc({"seed": -5, "job": "j", "app": {"prompt": "a cat"}})
    assert p.model == sdparams.DEFAULT_MODEL
    assert p.seed == (-5) % (1 << 64)
    assert p.seeds() == [p.seed]
    assert p.extra == {"job": "j"}
    p = sdparams.parse_app({"prompt": "a", "seed": 9, "num_images": 3, "width": 512.0, "scheduler": "euler_a"}, task_seed=1)
    assert (p.seed, p.seeds(), p.width, p.scheduler) == (9, [9, 10, 11], 512, "euler_a")


def test_model_roots(tmp_path, monkeypatch):
    inside = tmp_path / "models" / "m"
    inside.mkdir(parents=True)
    outside = tmp_path / "other"
    outside.mkdir()
    monkeypatch.setenv("SWARMGEN_SD_MODEL_ROOTS", str(tmp_path / "models"))
    assert sdparams.parse_app({"prompt": "a", "model": str(inside)}).model == str(inside)
    with pytest.raises(sdparams.ParamError, match="outside the allowed model roots"):
        sdparams.parse_app({"prompt": "a", "model": str(outside)})


@pytest.mark.parametrize(
    "raw,words",
    [(b"{not json", "not valid JSON"), (b"\xff\xfe", "not valid JSON"), (b"[]", "JSON object"), (b'{"seed": "x", "app": {"prompt": "a"}}', "64-bit")],
)
def test_bad_params_file(tmp_path, raw, words):
    f = tmp_path / "params.json"
    f.write_bytes(raw)
    with pytest.raises(sdparams.ParamError, match=words):
        sdparams.load_params_file(str(f))


def test_params_file_size_limit(tmp_path):
    f = tmp_path / "params.json"
    f.write_bytes(b'{"app": {"prompt": "' + b"a" * sdparams.MAX_PARAMS_BYTES + b'"}}')
    with pytest.raises(sdparams.ParamError, match="over"):
        sdparams.load_params_file(str(f))


def _mutate(rng, v, depth=0):
    choices = [None, True, -1, 0, 1 << 70, 3.5, float("inf"), "", "x" * rng.randint(0, 3000), [], {}, "../..", "\x00"]
    if depth < 2 and rng.random() < 0.3:
        return {rng.choice(sdparams.KNOWN_APP_PARAMS + ("zz",)): _mutate(rng, None, depth + 1)}
    return rng.choice(choices)


def test_fuzz_validator_only_raises_param_error():
    """Seeded random documents: the validator accepts or raises ParamError, nothing else."""
    rng = random.Random(1)
    for _ in range(3000):
        app = {"prompt": "cat"}
        for _ in range(rng.randint(0, 4)):
            app[rng.choice(sdparams.KNOWN_APP_PARAMS + ("bogus",))] = _mutate(rng, None)
        doc = {"seed": rng.choice([0, -1, 1 << 63, "s", None]), "app": rng.choice([app, app, None, [], "x"])}
        try:
            sdparams.parse_params_doc(json.loads(json.dumps(doc)) if rng.random() < 0.5 else doc)
        except sdparams.ParamError:
            pass


def test_worker_bad_params_exit_2_nothing_written(tmp_path):
    d = make_task_dir(tmp_path, "bad", {"prompt": "a cat", "width": 100})
    r = run_worker(d, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "param app.width" in r.stderr and "multiple of 8" in r.stderr
    assert os.listdir(os.path.join(d, "output")) == []
