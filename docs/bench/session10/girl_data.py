"""SynthBooru with 1girl on every picture and only the character tags kept (the background untagged,
as on ccp-dev and most Danbooru posts)."""
import csv, sys
from pathlib import Path
from gaudi_engine import synth
KEEP = {"1girl", "long_hair", "dress", "hat"}
out, n, split = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
synth.generate(out, n, seed=0, size=(96, 144), split=split, girl_p=1.0)
rows = list(csv.DictReader(open(out / "manifest.csv", encoding="utf-8")))
for r in rows:
    tags = [t for t in r["tags"].split() if t in KEEP]
    r["tags"] = " ".join(tags)
    (out / r["image_path"]).with_suffix(".txt").write_text(", ".join(tags) + "\n")
rows = [r for r in rows if r["tags"]]
with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
    w = csv.DictWriter(fh, fieldnames=list(rows[0])); w.writeheader(); w.writerows(rows)
from collections import Counter
print(len(rows), Counter(t for r in rows for t in r["tags"].split()))
