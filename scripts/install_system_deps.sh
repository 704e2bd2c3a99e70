#!/usr/bin/env bash
# System packages the test suite needs (Debian 12): the SLURM daemons, clients and munge for the real-SLURM
# launch tests (tests/launch), and shellcheck to lint the generated sbatch script. About 30 s, ~4 MB.
# Idempotent: skipped when everything is present. Runs as root (CI does; `sudo` it on a dev box).
set -euo pipefail
need=()
for cmd in slurmctld slurmd sbatch munged mungekey shellcheck; do command -v "$cmd" >/dev/null || need+=("$cmd"); done
[[ ${#need[@]} -eq 0 ]] && exit 0
echo "install_system_deps: missing ${need[*]}; installing slurmctld slurmd slurm-client munge shellcheck"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Not the slurm-wlm metapackage (43 packages): these are the 8 the tests use. Their postinst scripts do not
# start any daemon; the test fixture starts its own on loopback with a private config and key.
apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge shellcheck >/dev/null
