#!/usr/bin/env bash
# Writes README's table of refused inputs (section "Reliability") from the tests' own output:
# each case of tests/bad_inputs.rs prints its row (`ROW| class | input | test | status | line |`),
# and each case checks that README holds its row, so the table cannot drift from what a user
# sees. Run after adding or changing a case: scripts/reliability_table.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rows=$(mktemp)
# The cases fail their README check until the table is written: their rows are printed first.
cargo test --locked --test bad_inputs -- --nocapture --test-threads 2 2>/dev/null |
  sed -n 's/^ROW//p' | sort -t'|' -k4,4 >"$rows" || true
n=$(wc -l <"$rows")
python3 - "$rows" "$n" <<'PY'
import re, sys
rows = open(sys.argv[1]).read().splitlines()
n = sys.argv[2]
readme = open("README.md").read()
head = "| class | input | test (`tests/bad_inputs.rs`) | exit status | what the user sees (stderr; `TMP` = the temporary directory) |\n|---|---|---|---|---|\n"
start = readme.index("| class | input | test (`tests/bad_inputs.rs`)")
end = readme.index("\n\n", start)
readme = readme[:start] + head + "\n".join(rows) + readme[end:]
readme = re.sub(r"prints each row\): \d+ inputs", f"prints each row): {n} inputs", readme)
open("README.md", "w").write(readme)
print(f"README: {n} rows")
PY
