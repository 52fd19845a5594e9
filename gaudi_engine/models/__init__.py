"""Image–text models (open_clip-based AlignModel), the model registry and checkpoint I/O.
Import the submodules directly (`models.registry`, `models.align`, `models.checkpoint`); this
package stays import-light so `gaudi --help` does not load torch."""
