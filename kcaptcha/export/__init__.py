"""Export: the saved-model folder and its metadata, ONNX (float32 and int8), TensorFlow Serving SavedModel and TFLite."""
