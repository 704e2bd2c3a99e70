#!/usr/bin/env bash
# System packages the test suite needs (Debian): the SLURM daemons and munge for the launch tests.
# Idempotent; skipped when everything is present.
set -euo pipefail
need=()
for cmd in slurmctld slurmd sbatch munged; do command -v "$cmd" >/dev/null || need+=("$cmd"); done
[[ ${#need[@]} -eq 0 ]] && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq slurm-wlm munge >/dev/null
