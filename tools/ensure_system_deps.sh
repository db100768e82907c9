#!/bin/sh
# System libraries the Python wheels need but do not ship (Debian/Ubuntu names).
#  - libusb-1.0-0: open3d imports it (`libusb-1.0.so.0: cannot open shared object file` without it).
set -e
missing=""
for pkg in libusb-1.0-0; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
echo "installing system packages:$missing"
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
$SUDO apt-get install -y --no-install-recommends $missing || {
  $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends $missing; }
