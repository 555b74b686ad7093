"""lbedge.train: bind a modality to the frozen language tower by contrastive LoRA (``bind``), fold LoRA
into plain weights (``merge``), and distil big towers into edge-sized students (``distill``).

Needs ``lbedge[train]`` (torch, peft). The outputs are official-layout checkpoints that
``lbedge.from_pretrained`` and the deploy path (``lbedge build``) take as they are.
"""
