"""lbedge.sensors: live sources (RGB, RealSense depth, thermal, microphone) and their replay twins.

The sources land with the sensors issue; this package exists so the import path is reserved
and installed from the ``sensors/`` folder.
"""
