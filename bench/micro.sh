#!/usr/bin/env bash
# Rampart micro-benchmarks in one sitting: every crate's criterion bench and the side-by-side
# harnesses (each prints its own table against its anchor), optionally against an earlier
# commit, interleaved bench by bench so that both see the same machine.
#
# usage: bench/micro.sh [--out DIR] [--before REV] [--only "pkg:bench ..."] [--quick] [--summary-only]
#
#   --out DIR      where the raw outputs go (default: a new temporary directory, printed)
#   --before REV   also build REV in a temporary worktree (its own target directory) and run
#                  each bench that exists there right before the current one; the summary
#                  puts criterion's middle estimates side by side with their ratio
#   --only LIST    the benches to run, as pkg:bench (default: all of them, below)
#   --quick        shorter criterion measurements (1 s warm-up, 2 s measurement; default 1 and 3)
#   --summary-only write DIR/summary.md again from the outputs already in --out DIR
#
# Criterion benches take `--warm-up-time`/`--measurement-time`; the harness benches
# (p2c_harness, hedge, hedge_p99, vs_channel) ignore them and run their own rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

OUT=""
BEFORE=""
WARM=1
MEASURE=3
SUMMARY_ONLY=0
ONLY="rampart-breaker:overhead rampart-limit:overhead rampart-balance:pick rampart-balance:p2c_harness
rampart-balance:hedge rampart-balance:hedge_p99 rampart-gslb:select rampart-fallback:apology
rampart-fallback:overhead rampart-health:outlier storefront:page_layers grpc-example:vs_channel"

while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift ;;
    --before) BEFORE=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --quick) MEASURE=2 ;;
    --summary-only) SUMMARY_ONLY=1 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

[ -n "$OUT" ] || OUT=$(mktemp -d /tmp/rampart-micro.XXXXXX)
mkdir -p "$OUT"
log() { printf '[micro %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# The directory of package $2 in the workspace at $1, or nothing.
pkg_dir() {
  (cd "$1" && cargo metadata --no-deps --format-version 1 2>/dev/null) |
    grep -o "\"manifest_path\":\"[^\"]*/Cargo.toml\"" | sed 's/.*:"//; s/Cargo.toml"//' |
    while read -r dir; do
      if grep -q "^name = \"$2\"" "$dir/Cargo.toml"; then echo "$dir"; break; fi
    done
}

has_bench() {
  local dir
  dir=$(pkg_dir "$1" "$2")
  [ -n "$dir" ] && { [ -f "$dir/benches/$3.rs" ] || [ -f "$dir/benches/$3/main.rs" ]; }
}

# Runs bench $3 of package $2 in the workspace at $1 into file $4.
run_bench() {
  local tree=$1 pkg=$2 bench=$3 file=$4
  log "$pkg --bench $bench ($(basename "$file" .txt))"
  (cd "$tree" && timeout 1200 cargo bench --locked -p "$pkg" --bench "$bench" -- \
    --warm-up-time "$WARM" --measurement-time "$MEASURE" >"$file" 2>&1) ||
    log "$pkg --bench $bench failed: see $file"
}

if [ "$SUMMARY_ONLY" = 0 ]; then
BEFORE_TREE=""
cleanup() {
  if [ -n "$BEFORE_TREE" ]; then git -C "$ROOT" worktree remove --force "$BEFORE_TREE" || true; fi
}
trap cleanup EXIT
if [ -n "$BEFORE" ]; then
  BEFORE_TREE=$(mktemp -d /tmp/rampart-before.XXXXXX)
  rmdir "$BEFORE_TREE"
  git -C "$ROOT" worktree add --detach "$BEFORE_TREE" "$BEFORE" >/dev/null
  log "before: $(git -C "$BEFORE_TREE" log --oneline -1)"
fi
log "after:  $(git -C "$ROOT" log --oneline -1)$(git -C "$ROOT" diff --quiet || echo ' (with uncommitted changes)')"
uptime | sed 's/^/load at start: /' >"$OUT/machine.txt"

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
for spec in $ONLY; do
  pkg=${spec%%:*}; bench=${spec##*:}
  if [ -n "$BEFORE_TREE" ] && has_bench "$BEFORE_TREE" "$pkg" "$bench"; then
    CARGO_TARGET_DIR="$TARGET/before" run_bench "$BEFORE_TREE" "$pkg" "$bench" "$OUT/$pkg.$bench.before.txt"
  fi
  if has_bench "$ROOT" "$pkg" "$bench"; then
    CARGO_TARGET_DIR="$TARGET" run_bench "$ROOT" "$pkg" "$bench" "$OUT/$pkg.$bench.txt"
  else
    log "no $pkg --bench $bench here"
  fi
done
uptime | sed 's/^/load at end: /' >>"$OUT/machine.txt"
fi

# Criterion's middle estimates, per benchmark id, before and after.
estimates() {
  awk '{ line = $0; sub(/[ \t]+$/, "", line) }
       index(line, "time:") { id = substr(line, 1, index(line, "time:") - 1); sub(/[ \t]+$/, "", id)
                              if (id == "") id = prev
                              rest = substr(line, index(line, "time:") + 5); gsub(/[\[\]]/, "", rest)
                              split(rest, f, " "); gsub(/ /, "_", id); print id, f[3], f[4]; next }
       line !~ /^[ \t]/ && line != "" { prev = line }' "$1"
}
# A criterion figure ($1 in unit $2) in ns.
to_ns() {
  awk -v v="$1" -v u="$2" 'BEGIN { m = 1; if (u == "ps") m = 0.001; else if (u == "µs" || u == "us") m = 1e3;
    else if (u == "ms") m = 1e6; else if (u == "s") m = 1e9; printf "%.6f", v * m }'
}

{
  echo "# Micro-benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  cat "$OUT/machine.txt"
  echo
  for spec in $ONLY; do
    pkg=${spec%%:*}; bench=${spec##*:}
    after="$OUT/$pkg.$bench.txt"
    [ -f "$after" ] || continue
    echo "## $pkg --bench $bench"
    echo
    if grep -q "time:" "$after"; then
      before="$OUT/$pkg.$bench.before.txt"
      if [ -f "$before" ]; then
        echo "| benchmark | before | after | after ÷ before |"
        echo "|---|---:|---:|---:|"
        estimates "$after" | while read -r id v u; do
          b=$(estimates "$before" | awk -v id="$id" '$1 == id { print $2, $3; exit }')
          if [ -n "$b" ]; then
            # shellcheck disable=SC2086 # value and unit
            bn=$(to_ns $b); an=$(to_ns "$v" "$u")
            printf '| `%s` | %s | %s %s | %s× |\n' "$id" "$b" "$v" "$u" "$(awk -v a="$an" -v b="$bn" 'BEGIN { printf "%.2f", a / b }')"
          else
            printf '| `%s` | – | %s %s | – |\n' "$id" "$v" "$u"
          fi
        done
      else
        echo "| benchmark | time |"
        echo "|---|---:|"
        estimates "$after" | while read -r id v u; do printf '| `%s` | %s %s |\n' "$id" "$v" "$u"; done
      fi
    fi
    # What the bench printed itself (its side-by-side table), without criterion's own lines.
    own=$(grep -v -E '^(Benchmarking|Found|Gnuplot|WARNING|Warning)|^ *(Compiling|Finished|Running|Downloaded|Downloading|Locking|Updating)|time: |change: |thrpt: |^ +[0-9]+ \(|mild|severe|Performance has|No change|Change within|^[^ ]+ *$' "$after" | sed '/^\s*$/d' | tail -n 80 || true)
    if [ -n "$own" ]; then
      echo '```text'
      echo "$own"
      echo '```'
    fi
    echo
  done
} >"$OUT/summary.md"
log "summary: $OUT/summary.md"
cat "$OUT/summary.md"
