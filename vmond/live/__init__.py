"""Live pictures from the cameras' RTSP streams: snapshots, live view, and the picture taken when an alarm is raised
(see :mod:`vmond.live.hub`)."""
