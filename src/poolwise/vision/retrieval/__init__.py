"""Image retrieval: metrics (:mod:`.metrics`, :mod:`.revisited`), metric-learning losses
(:mod:`.losses`), whitening (:mod:`.whitening`), retrieval runs (:mod:`.run`) and the revisited
landmark benchmarks (:mod:`.landmarks`)."""
