#!/usr/bin/env python
"""How much separating in bf16 / fp16 changes the stems and the SDR, against fp32.

For every track of a MUSDB18-HQ-layout test folder (``<track>/mixture.wav`` and its stems,
as ``waveunet synth`` writes), separates the mixture with ``Separator.separate`` in fp32 and
in each reduced precision, and prints per precision:

* the SNR of each reduced-precision stem against the fp32 stem (issue 12's bound: 45 dB);
* SDR, median over frames then median over tracks, and its change from fp32 (bound 0.05 dB).

    python scripts/precision_quality.py runs/demo-tanh_difference/<stamp>/best.pt \\
        ~/.cache/waveunet/synthetic-8+2x12s-seed0/test
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("test_folder", type=Path)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", nargs="+", default=["bf16", "fp16"])
    parser.add_argument("--json", type=Path, default=None,
                        help="also write the figures here (per precision: the stems' SNR range "
                        "against fp32, the SDR and its change per source)")
    args = parser.parse_args(argv)

    from waveunet.audio import read_audio
    from waveunet.metrics import framewise_sdr
    from waveunet.separation.inference import Separator

    tracks = sorted(p.parent for p in args.test_folder.glob("*/mixture.wav"))
    if not tracks:
        raise SystemExit(f"no <track>/mixture.wav under {args.test_folder}")
    results: dict[str, list] = {}
    for precision in ["fp32", *args.precision]:
        separator = Separator.from_checkpoint(args.checkpoint, device=args.device,
                                              precision=precision)
        results[precision] = []
        for track in tracks:
            mixture, rate = read_audio(track / "mixture.wav")
            references = []
            for source in separator.sources:
                if (track / f"{source}.wav").is_file():
                    references.append(read_audio(track / f"{source}.wav")[0])
                else:  # accompaniment: the sum of every stem but vocals
                    others = [p for p in track.glob("*.wav")
                              if p.stem not in ("mixture", "vocals")]
                    references.append(sum(read_audio(p)[0] for p in others))
            stems = separator.separate(mixture, rate).stems.numpy()
            sdr = framewise_sdr(np.stack(references), stems).numpy()
            results[precision].append((stems, np.nanmedian(sdr, axis=1)))
    sources = separator.sources
    fp32_sdr = np.median([t[1] for t in results["fp32"]], axis=0)
    print(f"{len(tracks)} track(s), {args.checkpoint}, on {args.device}")
    print("fp32 SDR (median of track medians): "
          + ", ".join(f"{s} {v:.3f} dB" for s, v in zip(sources, fp32_sdr, strict=True)))
    figures: dict = {"tracks": len(tracks), "device": args.device,
                     "fp32_sdr_db": dict(zip(sources, fp32_sdr.tolist(), strict=True))}
    for precision in args.precision:
        snrs = [10 * np.log10(np.sum(a[i] ** 2) / np.sum((a[i] - b[i]) ** 2))
                for (a, _), (b, _) in zip(results["fp32"], results[precision], strict=True)
                for i in range(len(sources))]
        sdr = np.median([t[1] for t in results[precision]], axis=0)
        print(f"{precision}: stems {min(snrs):.1f} to {max(snrs):.1f} dB SNR against fp32; SDR "
              + ", ".join(f"{s} {v:.3f} dB ({v - f:+.3f})"
                          for s, v, f in zip(sources, sdr, fp32_sdr, strict=True)))
        figures[precision] = {
            "snr_db_min": float(min(snrs)), "snr_db_max": float(max(snrs)),
            "sdr_change_db": {s: float(v - f) for s, v, f in zip(sources, sdr, fp32_sdr,
                                                                  strict=True)}}
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
