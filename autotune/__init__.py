"""autotune: find the fastest accurate way to deploy an ONNX model with TensorRT or ONNX Runtime."""
