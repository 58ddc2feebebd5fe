"""A trained pain model in use: the detector checkpoint (:mod:`.detector`), ONNX and TorchScript
exports (:mod:`.export`), frame-by-frame detection on a recording (:mod:`.streaming`), replay of a
recording through it (:mod:`.replay`) and explanations of its decisions (:mod:`.explain`)."""
