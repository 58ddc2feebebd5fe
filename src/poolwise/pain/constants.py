"""Constants of the pain side that more than one module (and the CLI) needs, importable
without torch."""

# EmoPain's motion capture and sEMG are synchronised at 60 frames per second; the authors'
# windows are 3 s (180 frames) with a hop of 0.75 s (45 frames).
FRAME_RATE = 60.0
WINDOW = 180
STEP = 45

# Largest |z-score| (after a detector's normalisation) a window may hold and be scored.
# Training windows are z-scored, so a value 100 standard deviations from the training mean is
# far outside anything the model saw (wrong units, a sensor fault, a saturated value): such
# windows are flagged, not scored. Held-out subjects of the synthetic cohort reach |z| of 8-20
# (heavy-tailed joint energies), small training folds up to about 60.
MAX_ABS_Z = 100.0
