"""Inference: the §III model run forward, sigmoid and the §IV-C decoder, behind interchangeable routes (eager,
BN-folded, traced, compiled, int8, ONNX Runtime), and `predict` for users' photographs at the training geometry."""
