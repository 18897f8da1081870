"""ONNX ops: control."""
