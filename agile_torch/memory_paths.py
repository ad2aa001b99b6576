"""Where the worker lives: the same rule as agile-worker's --runtime-dir default."""
import os


def default_runtime_dir() -> str:
    if os.environ.get("AGILE_RUNTIME_DIR"):
        return os.environ["AGILE_RUNTIME_DIR"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "agile")
    return f"/tmp/agile-{os.getuid()}"
