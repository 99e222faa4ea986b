#!/usr/bin/env bash
# Rebuilds BENCHMARKS.md from the per-benchmark result files each bench run writes.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# BENCHMARKS"
  echo
  echo "Latest measured numbers. Each benchmark compares zt against a baseline measured in the"
  echo "same run and prints the ratio; run them with \`npm run bench:<name>\`. Each section names"
  echo "the machine and date it was measured on (the machines differ: compare ratios, not"
  echo "absolute figures, across sections). Assembled $(date -u +%Y-%m-%d) from"
  echo "\`bench/*.results.md\` on $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs),"
  echo "$(free -g | awk '/Mem:/ {print $2}') GiB, Node $(node --version)."
  echo
  echo "**Read the caveats.** The runs to quote are the ones each section marks as taken on a"
  echo "quiet machine (nothing but the benchmark running). Older rows were taken while the"
  echo "2-CPU machine was shared with the team's test suites (load average up to 22) and are kept"
  echo "for the history of each change: there, only the ratios against same-run baselines mean"
  echo "much. Targets a section marks as not met are open work, listed in the issue notes."
  echo
  for f in policy pep revoke audit pki seg scale identity; do
    if [ -f "bench/$f.results.md" ]; then
      echo
      sed -e 's/^# /## /' -e 's/^## \(.*\)/### \1/;t' "bench/$f.results.md" | sed '1s/^### /## /'
    fi
  done
} > BENCHMARKS.md
