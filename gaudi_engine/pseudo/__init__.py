"""Pseudo-masks from image-level tags: text-CAM (`cam`), affinity refinement (`affinity`),
superpixel regions (`regions`), validators (`validators`), the per-post pipeline and its output
layout (`pipeline.run_pseudolabels`), and the Parquet index browser (`index.PseudoMaskIndex`)."""
