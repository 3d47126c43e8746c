"""culturealign: how well does a language model answer like people from a given country, and how does that
depend on the way it is asked? Implements Bravansky, Trhlik & Barez, "Rethinking AI Cultural Alignment".

Python API (imported on first use, so `import culturealign` stays light):
`evaluate(*overrides, track=False)`, `evaluate_async(...)`, `load_sweep(parent_run=None, ...)`; see
`culturealign.api`."""

__version__ = "0.1.0"
__all__ = ["Evaluation", "evaluate", "evaluate_async", "load_sweep"]


def __getattr__(name: str):
    if name in __all__:
        from culturealign import api

        return getattr(api, name)
    raise AttributeError(f"module 'culturealign' has no attribute {name!r}")
