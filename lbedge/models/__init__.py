"""The LanguageBind towers in PyTorch (needs ``lbedge[torch]``): importing this package imports torch."""
