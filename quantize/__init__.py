"""lbedge.quantize: ONNX export, FP16/INT8 quantization and TensorRT engines (the deploy issue).

The package is installed from the ``quantize/`` folder; its modules land with the deploy issue.
"""
