#!/usr/bin/env bash
# musdb imports fail without the ffmpeg binary (even for WAV datasets): install it when missing.
set -euo pipefail
if command -v ffmpeg >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "ffmpeg not found: installing it with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq ffmpeg >/dev/null
    exit 0
fi
echo "error: the ffmpeg binary is required (musdb and MP4/M4A reading use it) and is not on PATH." >&2
echo "Install it with your package manager, e.g. 'sudo apt-get install ffmpeg' or 'brew install ffmpeg'," >&2
echo "then run the command again." >&2
exit 1
