#!/bin/sh
# The science job that runs inside the VM: counts the primes in each "LO HI" range of INPUT
# (trial division in awk: real CPU work) and writes "LO HI COUNT" per range, then "total N", to
# OUTPUT.
#
# It reports to the wrapper on stdout, one line per finished range:
#     progress <fraction done 0..1> <CPU seconds this run has used>
# and keeps the same fraction in ./fraction_done (for a human with a shell in the VM).
#
# Restartable, like any BOINC app: finished ranges are appended to OUTPUT.partial, and a new run
# continues after the last complete line. After a snapshot restore the guest's disk and memory are
# those of the checkpoint, so the partial file and the ranges done agree; a run started then first
# ends the restored copy of the previous run (its pid is in ./job.pid, its command line names this
# script), so one run writes at a time.
set -eu
input=$1
output=$2
partial=$output.partial

# alive PID: true while PID runs (a zombie waiting for its parent has finished).
alive() {
  awk '{ sub(/^.*\) /, ""); exit ($1 == "Z" ? 1 : 0) }' "/proc/$1/stat" 2>/dev/null
}
if [ -f job.pid ]; then
  old=$(cat job.pid)
  if [ "$old" != "$$" ] && alive "$old" && tr '\0' ' ' < "/proc/$old/cmdline" | grep -qF -- "$(basename "$0")"; then
    kill "$old" 2>/dev/null || true
    while alive "$old"; do sleep 0.1; done
  fi
fi
echo $$ > job.pid

total=$(grep -c . "$input")
[ "$total" -gt 0 ] || { echo "primes.sh: $input has no ranges" >&2; exit 2; }
touch "$partial"
# A line cut short by a kill has no newline yet: keep complete lines only.
awk 'NF == 3' "$partial" > "$partial.tmp" && mv "$partial.tmp" "$partial"
done_count=$(grep -c . "$partial" || true)

cpu_seconds() {
  # utime + stime of this shell and of its waited-for children (awk), in clock ticks (USER_HZ = 100).
  awk '{ sub(/^.*\) /, ""); print ($12 + $13 + $14 + $15) / 100 }' "/proc/$$/stat"
}

report() {
  fraction=$(awk -v d="$1" -v t="$total" 'BEGIN { printf "%.4f", d / t }')
  echo "$fraction" > fraction_done.tmp && mv fraction_done.tmp fraction_done
  echo "progress $fraction $(cpu_seconds)"
}

report "$done_count"
n=0
while read -r lo hi; do
  [ -n "$lo" ] || continue
  n=$((n + 1))
  [ "$n" -gt "$done_count" ] || continue
  count=$(awk -v lo="$lo" -v hi="$hi" 'BEGIN {
    c = 0
    for (k = (lo < 2 ? 2 : lo); k <= hi; k++) {
      p = 1
      for (d = 2; d * d <= k; d++) if (k % d == 0) { p = 0; break }
      c += p
    }
    print c
  }')
  echo "$lo $hi $count" >> "$partial"
  report "$n"
done < "$input"

awk '{ print; sum += $3 } END { print "total " sum }' "$partial" > "$output.tmp"
mv "$output.tmp" "$output"
rm -f "$partial" job.pid
