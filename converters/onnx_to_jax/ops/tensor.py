"""ONNX ops: tensor."""
