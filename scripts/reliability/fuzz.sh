#!/usr/bin/env bash
# Fuzzes the places where outside bytes enter the pipeline, on stable
# Rust, for SECONDS (default 600) each: the pipeline YAML loader (every
# shipped pipeline as corpus), the Delphes ROOT reader (the bundled files,
# plus the ZSTD/LZ4/LZMA copies under $DQM_SHARED/delphes/compression when
# present) and the DQM histogram reader (`dqm_root`; the uproot-written
# files of data/dqm/reader: every class, every compression). Findings (crash, hang, allocation beyond the bound) land in
# OUT/<target>/findings/*.json; `dqm-fuzz <target> --replay FILE` reruns one.
# Not part of CI (it runs for minutes); the harness is src/bin/fuzz/.
#
#   scripts/reliability/fuzz.sh [SECONDS] [SEED] [OUT]
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh
seconds="${1:-600}"
seed="${2:-1}"
out="${3:-fuzz-out/$(date -u +%Y%m%dT%H%M%SZ)}"
cargo build --locked --features fuzz --bin dqm-fuzz
fuzz="$CARGO_TARGET_DIR/debug/dqm-fuzz"
shared="${DQM_SHARED:-../shared}"
root_corpus=(data/delphes/*_tiny.root)   # the `_small` files are the same format, 4x larger
if compgen -G "$shared/delphes/compression/*.root" > /dev/null; then
  root_corpus+=("$shared"/delphes/compression/*.root)
fi
mkdir -p "$out"
"$fuzz" yaml --corpus pipelines/*.yaml --seconds "$seconds" --seed "$seed" --out "$out/yaml"
"$fuzz" root --corpus "${root_corpus[@]}" --seconds "$seconds" --seed "$seed" --out "$out/root"
"$fuzz" dqm --corpus data/dqm/reader/*.root --seconds "$seconds" --seed "$seed" --out "$out/dqm"
python3 - "$out" <<'PY'
import json, sys, pathlib
rows = []
for target in ("yaml", "root", "dqm"):
    s = json.loads((pathlib.Path(sys.argv[1]) / target / "summary.json").read_text())
    rows.append(s)
cols = ["target", "seconds", "inputs", "ok", "clean_errors", "errors_not_naming_the_file",
        "reader_panics_caught", "crashes", "hangs", "allocations_beyond_bound"]
print("| " + " | ".join(cols) + " |")
print("|" + "---|" * len(cols))
for s in rows:
    print("| " + " | ".join(f"{s[c]:.0f}" if isinstance(s[c], float) else str(s[c]) for c in cols) + " |")
PY
