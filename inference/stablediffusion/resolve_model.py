#!/usr/bin/env python3
"""Decides where a model comes from: a local directory, the local Hub cache, or the Hub.

    python resolve_model.py MODEL

prints one JSON line {"model", "source", "local_files_only"} and exits 0, or
prints a line starting with "MODEL_UNAVAILABLE:" to stderr and exits 3 when the
model is neither local nor cached and the Hub cannot be reached (or
HF_HUB_OFFLINE is set). `make demo` uses that to say "Hub unreachable, using
tiny local pipeline".
"""

import json
import os
import sys
from dataclasses import dataclass

EXIT_MODEL_UNAVAILABLE = 3
UNAVAILABLE_PREFIX = "MODEL_UNAVAILABLE:"


class ModelUnavailable(RuntimeError):
    """The model cannot be loaded here: not local, not cached, Hub not reachable."""


@dataclass
class Resolved:
    model: str  # what to pass to from_pretrained
    source: str  # "local", "cache" or "hub"
    local_files_only: bool


def _offline():
    v = os.environ.get("HF_HUB_OFFLINE", "")
    return v.strip().upper() in ("1", "ON", "YES", "TRUE")


def resolve(ref, timeout=5.0):
    """Returns a Resolved for ref, or raises ModelUnavailable."""
    path = os.path.expanduser(ref)
    if os.path.exists(path):
        return Resolved(path, "local", True)
    try:
        from huggingface_hub import snapshot_download

        # Succeeds (without network) when a snapshot of ref is in the cache.
        snapshot_download(ref, local_files_only=True)
        return Resolved(ref, "cache", True)
    except Exception:  # noqa: BLE001 - any failure means "not cached"
        pass
    if _offline():
        raise ModelUnavailable(f"{ref!r} is not cached and HF_HUB_OFFLINE is set")
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

        HfApi().model_info(ref, timeout=timeout)
    except (RepositoryNotFoundError, GatedRepoError) as e:
        raise ModelUnavailable(f"{ref!r} is not on the Hub or not accessible: {type(e).__name__}") from e
    except Exception as e:  # noqa: BLE001 - connection errors of any HTTP stack
        raise ModelUnavailable(f"Hub unreachable for {ref!r} and it is not cached: {type(e).__name__}: {e}") from e
    return Resolved(ref, "hub", False)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: resolve_model.py MODEL", file=sys.stderr)
        return 2
    try:
        r = resolve(argv[0])
    except ModelUnavailable as e:
        print(f"{UNAVAILABLE_PREFIX} {e}", file=sys.stderr)
        return EXIT_MODEL_UNAVAILABLE
    print(json.dumps({"model": r.model, "source": r.source, "local_files_only": r.local_files_only}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
