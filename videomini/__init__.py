"""videomini: long-video understanding with LLaVA-Mini (one vision token per frame)."""

__version__ = "0.1.0"

__all__ = ["__version__", "load_model", "VideoMini", "Library"]


def __getattr__(name: str):
    # Lazy: `import videomini` must stay cheap (the CLI's --help should not import torch).
    if name == "load_model":
        from videomini.loading import load_model

        return load_model
    if name == "VideoMini":
        from videomini.ask import VideoMini

        return VideoMini
    if name == "Library":
        from videomini.library import Library

        return Library
    raise AttributeError(f"module 'videomini' has no attribute {name!r}")
