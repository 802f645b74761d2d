__version__ = "0.1.0"

# The user's names, imported on first use (PEP 562): `import classifier_training` and the torch-free
# predictor never import torch; `train` and `ImageClassifier` import it when they are asked for.
_LAZY = {"train": ("classifier_training.training", "train"),
         "OnnxClassifier": ("classifier_training.predict", "OnnxClassifier"),
         "ImageClassifier": ("classifier_training.model", "ImageClassifier"),
         "evaluate_model": ("classifier_training.evaluate", "evaluate_model")}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY: raise AttributeError(f"module 'classifier_training' has no attribute {name!r}")
    import importlib
    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # once resolved, a plain attribute
    return value


def __dir__() -> list[str]: return sorted(set(globals()) | set(_LAZY))
