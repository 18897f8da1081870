"""ONNX ops: rnn."""
