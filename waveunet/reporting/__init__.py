"""Reporting: every table, number format, bound marking and figure the project writes.

The evaluation command and the experiments (``waveunet compare``, ``waveunet saturation``)
measure and hand plain results to these renderers, which write every report file and figure;
nothing else draws. (Log and status lines of other modules format their own numbers.)

* :mod:`.format` -- the one number formatter and the one markdown table writer.
* :mod:`.figures` -- the one figure writer (``save_figure``) and every figure: SDR box plot,
  waveform passages with samples at the bounds marked, training curves, SDR by mode,
  saturation panels.
* :mod:`.evaluation` -- an evaluation's ``summary.json``, ``report.md`` and figures.
* :mod:`.comparison` -- the output-mode comparison's ``results.md``.
* :mod:`.saturation` -- the saturation experiment's ``saturation.md``.

This package imports nothing from the commands and experiments that call it.
"""
