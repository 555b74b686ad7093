"""lbedge.quantize: ONNX export (``export``), FP16 (``fp16``) and calibrated INT8 (``int8``) graphs,
bundles (``bundle_build``), TensorRT engines (``tensorrt_build``) and the TensorRT op-set check
(``trt_ops``). Needs ``lbedge[quantize]``; the bundles it writes load without torch.
"""
