"""OpenCV for the runtime, imported once with a message that says where it comes from when it is missing: lbedge
does not depend on an OpenCV wheel (see :func:`lbedge.deps.require_opencv`)."""

from __future__ import annotations

from .deps import require_opencv

cv2 = require_opencv()
