#!/usr/bin/env bash
# Installs every Debian (bookworm) package gst-moshi needs to build, test and
# run its demo pipelines (chromium: the web page test of moshi-server).
# Safe to run again; needs root (or sudo).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
PKGS=(
  build-essential meson ninja-build pkg-config clang-format
  clang libclang-rt-14-dev
  libglib2.0-dev libjson-glib-dev libopenblas-dev libopus-dev libsoup-3.0-dev
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad bc valgrind
  chromium
  # x264enc: H.264 for HLS in pipelines/bilingual-commentary.sh
  gstreamer1.0-plugins-ugly
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
