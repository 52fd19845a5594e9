"""Pseudo-masks from image-level tags: text-CAM (`cam`), affinity refinement (`affinity`),
superpixel regions (`regions`), validators (`validators`); the knobs (`config.PseudoConfig`), the
per-image labeller (`labeler.PseudoLabeler`), the run-level measurements (`calibration`) and the
structure they make (`structure`: `structure.json`), the run's files (`output`), the run driver
(`run.run_pseudolabels`), and the Parquet index browser (`index.PseudoMaskIndex`)."""
