"""How the analysis benchmarks read with a model folder: float32 ONNX, or Keras where it has no export."""

import os


def float32_reader(model: str):
    """`kcaptcha.load_model(model)` reading in float32: its ONNX export if it has one (a shipped or exported
    model), Keras otherwise (a training run's saved model with --noexport)."""
    import kcaptcha
    from kcaptcha.export import saving

    has_onnx = os.path.exists(os.path.join(saving.resolve_model_dir(model), "model.onnx"))
    return kcaptcha.load_model(model, backend="float" if has_onnx else "keras")
